"""``POST /rpc``: a read-only Ethereum JSON-RPC endpoint onto the platform's chain.

The embedded chain has no node of its own, so a browser that verifies an entry reads it here. Only reads
are answered (chain id, block number, blocks, code, calls, logs, receipts); anything that sends, signs or
changes state is refused with JSON-RPC error -32601. Honest about trust: this endpoint is served by the
aggregator, so a check through it trusts the aggregator's chain node (not its database). Where the chain is
a node of its own (anvil, a JSON-RPC URL), the portal points browsers at that node instead
(``V2G_PUBLIC_RPC_URL``), and anyone can point the check at a node they run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from eth_typing import ChecksumAddress
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from hexbytes import HexBytes
from starlette.concurrency import run_in_threadpool
from web3 import Web3

from backend.api.deps import AppState

router = APIRouter(tags=["portal"], include_in_schema=False)

MAX_BATCH = 20
MAX_LOG_BLOCKS = 5_000
HEX = re.compile(r"^0x[0-9a-fA-F]*$")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
TAGS = {"latest", "earliest", "safe", "finalized"}


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray | HexBytes):
        return "0x" + bytes(value).hex()
    if isinstance(value, int):
        return hex(value)
    return str(value)


def _block(tag: Any, w3: Web3) -> Any:
    if tag is None or tag == "pending":
        return "latest"
    if isinstance(tag, str) and tag in TAGS:
        return tag
    if isinstance(tag, str) and HEX.match(tag) and len(tag) > 2:
        return int(tag, 16)
    raise RpcError(-32602, f"invalid block tag {tag!r}")


def _number(tag: Any, w3: Web3) -> int:
    if isinstance(tag, int):
        return tag
    return 0 if tag == "earliest" else int(w3.eth.block_number)


def _address(value: Any) -> ChecksumAddress:
    if not isinstance(value, str) or not ADDRESS.match(value):
        raise RpcError(-32602, f"invalid address {value!r}")
    return Web3.to_checksum_address(value)


def _data(value: Any) -> str:
    if value is None:
        return "0x"
    if not isinstance(value, str) or not HEX.match(value) or len(value) % 2:
        raise RpcError(-32602, "invalid data")
    return value


def _log(log: Any) -> dict[str, Any]:
    return {
        "address": log["address"],
        "topics": [_hex(t) for t in log["topics"]],
        "data": _hex(log["data"]),
        "blockNumber": _hex(log["blockNumber"]),
        "blockHash": _hex(log["blockHash"]),
        "transactionHash": _hex(log["transactionHash"]),
        "transactionIndex": _hex(log["transactionIndex"]),
        "logIndex": _hex(log["logIndex"]),
        "removed": False,
    }


def _block_json(block: Any) -> dict[str, Any]:
    return {
        "number": _hex(block["number"]),
        "hash": _hex(block["hash"]),
        "parentHash": _hex(block["parentHash"]),
        "timestamp": _hex(block["timestamp"]),
        "transactions": [_hex(t) for t in block["transactions"]],
    }


def _chain_id(w3: Web3, params: list[Any]) -> Any:
    return _hex(w3.eth.chain_id)


def _net_version(w3: Web3, params: list[Any]) -> Any:
    return str(w3.eth.chain_id)


def _block_number(w3: Web3, params: list[Any]) -> Any:
    return _hex(w3.eth.block_number)


def _get_block(w3: Web3, params: list[Any]) -> Any:
    if not params:
        raise RpcError(-32602, "block tag expected")
    if params[1:2] == [True]:
        raise RpcError(-32602, "full transactions are not served: ask with false")
    block = w3.eth.get_block(_block(params[0], w3))
    return _block_json(block)


def _get_code(w3: Web3, params: list[Any]) -> Any:
    if not params:
        raise RpcError(-32602, "address expected")
    return _hex(w3.eth.get_code(_address(params[0]), _block(params[1] if len(params) > 1 else None, w3)))


def _call(w3: Web3, params: list[Any]) -> Any:
    if not params or not isinstance(params[0], dict):
        raise RpcError(-32602, "call object expected")
    tx = params[0]
    call: dict[str, Any] = {"to": _address(tx.get("to")), "data": _data(tx.get("data") or tx.get("input"))}
    if tx.get("from") is not None:
        call["from"] = _address(tx["from"])
    return _hex(w3.eth.call(call, _block(params[1] if len(params) > 1 else None, w3)))  # type: ignore[arg-type]


def _get_logs(w3: Web3, params: list[Any]) -> Any:
    if not params or not isinstance(params[0], dict):
        raise RpcError(-32602, "filter object expected")
    f = params[0]
    if "blockHash" in f:
        raise RpcError(-32602, "filter by block range, not blockHash")
    start = _number(_block(f.get("fromBlock", "latest"), w3), w3)
    end = _number(_block(f.get("toBlock", "latest"), w3), w3)
    if end < start:
        return []
    if end - start + 1 > MAX_LOG_BLOCKS:
        raise RpcError(-32005, f"at most {MAX_LOG_BLOCKS} blocks per eth_getLogs")
    query: dict[str, Any] = {"fromBlock": start, "toBlock": end}
    if f.get("address") is not None:
        addresses = f["address"] if isinstance(f["address"], list) else [f["address"]]
        query["address"] = [_address(a) for a in addresses]
    if f.get("topics") is not None:
        topics = f["topics"]
        if not isinstance(topics, list) or len(topics) > 4:
            raise RpcError(-32602, "invalid topics")
        for t in topics:
            for one in t if isinstance(t, list) else [t]:
                if one is not None and (not isinstance(one, str) or not HEX.match(one) or len(one) != 66):
                    raise RpcError(-32602, "invalid topic")
        query["topics"] = topics
    return [_log(log) for log in w3.eth.get_logs(query)]  # type: ignore[arg-type]


def _receipt(w3: Web3, params: list[Any]) -> Any:
    if not params or not isinstance(params[0], str) or not HEX.match(params[0]) or len(params[0]) != 66:
        raise RpcError(-32602, "transaction hash expected")
    try:
        r = w3.eth.get_transaction_receipt(params[0])  # type: ignore[arg-type]
    except Exception:  # unknown transaction
        return None
    return {
        "transactionHash": _hex(r["transactionHash"]),
        "blockNumber": _hex(r["blockNumber"]),
        "blockHash": _hex(r["blockHash"]),
        "status": _hex(r["status"]),
        "from": r["from"],
        "to": r["to"],
        "gasUsed": _hex(r["gasUsed"]),
        "logs": [_log(log) for log in r["logs"]],
    }


READS: dict[str, Callable[[Web3, list[Any]], Any]] = {
    "eth_chainId": _chain_id,
    "net_version": _net_version,
    "eth_blockNumber": _block_number,
    "eth_getBlockByNumber": _get_block,
    "eth_getCode": _get_code,
    "eth_call": _call,
    "eth_getLogs": _get_logs,
    "eth_getTransactionReceipt": _receipt,
}


#: The error of a read the chain could not serve in time (a settlement holds it).
CHAIN_BUSY = "ChainBusy: a settlement holds the chain; retry in a minute"
#: How long a read waits for the chain while another thread holds it (a day's settlement) (s).
RPC_WAIT_S = 5.0


def answer(state: AppState, request: Any, wait_s: float | None = None) -> dict[str, Any]:
    """One JSON-RPC request object → its response object (waiting at most ``wait_s``, default
    :data:`RPC_WAIT_S`, for a chain another thread holds)."""
    if (
        not isinstance(request, dict)
        or request.get("jsonrpc") != "2.0"
        or not isinstance(request.get("method"), str)
    ):
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
    rid = request.get("id")
    if rid is not None and not isinstance(rid, int | str):
        rid = None
    method = request["method"]
    params = request.get("params", [])
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
    handler = READS.get(method)
    if handler is None:
        reply["error"] = {
            "code": -32601,
            "message": f"{method} is not served: this endpoint is read-only ({', '.join(sorted(READS))})",
        }
        return reply
    if not isinstance(params, list):
        reply["error"] = {"code": -32602, "message": "params must be an array"}
        return reply
    if not state.chain_lock.acquire(timeout=RPC_WAIT_S if wait_s is None else wait_s):
        reply["error"] = {
            "code": -32000,
            "message": CHAIN_BUSY,
        }
        return reply
    try:
        reply["result"] = handler(state.chain.w3, params)
    except RpcError as exc:
        reply["error"] = {"code": exc.code, "message": exc.message}
    except Exception as exc:  # a revert in eth_call, a block the chain lacks: the node's own answer
        reply["error"] = {"code": -32000, "message": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        state.chain_lock.release()
    return reply


def answer_batch(state: AppState, requests: list[Any]) -> list[dict[str, Any]]:
    """A batch's answers in order; once the chain is found busy the rest do not wait again (a batch
    waits :data:`RPC_WAIT_S` at most, not that for each of its requests)."""
    answers: list[dict[str, Any]] = []
    busy = False
    for request in requests:
        reply = answer(state, request, 0.0 if busy else None)
        busy = busy or reply.get("error", {}).get("message") == CHAIN_BUSY
        answers.append(reply)
    return answers


def failure(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


#: Anyone may read the chain through this endpoint from any page (an owner's own verifier, another
#: aggregator's audit): it answers reads only and carries no credential, so cross-origin reads are allowed.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
}


@router.options("/rpc")
async def rpc_preflight() -> Response:
    return Response(status_code=204, headers=CORS)


@router.post("/rpc")
async def rpc(request: Request) -> JSONResponse:
    """Read-only JSON-RPC onto the platform's chain (single requests or batches of at most 20)."""
    response = await _rpc(request)
    response.headers.update(CORS)
    return response


async def _rpc(request: Request) -> JSONResponse:
    state: AppState = request.app.state.v2g
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        )
    if isinstance(body, list):
        if not body or len(body) > MAX_BATCH:
            return JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": f"1 to {MAX_BATCH} requests"},
                }
            )
        return JSONResponse(await run_in_threadpool(answer_batch, state, body))
    return JSONResponse(await run_in_threadpool(answer, state, body))
