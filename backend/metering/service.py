"""The metering service: its own process, its own key; it signs a period's metered root (EIP-712, the
contract's ``PeriodRoot``) only when the root, the totals and the entry count it is asked to sign are the
ones it computes itself from the meter registers in the database.

    python -m backend.metering.service --db URL [--port 0] [--fee-bps 100]

The key: ``V2G_METER_KEY`` (or ``V2G_METER_KEYSTORE`` + ``V2G_KEYSTORE_PASSWORD``); on a local chain
(eth-tester, anvil) without one, the chain's dev meter account (the fourth dev key). The settler asks
over HTTP on loopback (``POST /sign``) and never holds this key. On start the service prints one line,
``metering service on http://127.0.0.1:PORT``, and then answers until it is stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Deployment, MeterSignature, Owner
from backend.db.session import session_factory
from backend.metering.frames import FrameChainError
from backend.metering.period import MeteredPeriodError, build_from, metered_period
from backend.metering.replay import MeterPolicy
from backend.metering.simulated import SimulatedRegisterError, digest, read
from backend.runtime import tune_gc
from backend.settlement.period import PeriodBuild, build_period
from backend.settlement.signing import sign_period_root
from backend.settlement.tariff import settle_trades

logger = logging.getLogger(__name__)

LOCAL_CHAIN_IDS = {131277322940537, 31337}
#: The largest request the service reads (simulated registers of a large fleet are the big ones).
MAX_REQUEST_BYTES = 1 << 28


class MeterMismatchError(RuntimeError):
    """The period the settler asked to sign is not what the meter data gives."""


class MeterServiceError(RuntimeError):
    """The metering service refused or could not be reached."""


def meter_key(chain_id: int) -> LocalAccount:
    key = os.environ.get("V2G_METER_KEY")
    if key:
        account: LocalAccount = Account.from_key(key)
        return account
    keystore = os.environ.get("V2G_METER_KEYSTORE")
    if keystore:
        from backend.chain.client import account_from_keystore  # web3: only for a keystore

        return account_from_keystore(Path(keystore))
    if chain_id == 131277322940537:
        from eth_tester.backends.pyevm.main import get_default_account_keys

        dev: LocalAccount = Account.from_key(get_default_account_keys(quantity=4)[3].to_bytes())
        return dev
    if chain_id == 31337:
        from backend.chain.client import anvil_dev_keys

        return anvil_dev_keys(4)[3]
    raise MeterServiceError("set V2G_METER_KEY (or V2G_METER_KEYSTORE) for a chain that is not local")


class MeterService:
    def __init__(self, database_url: str, fee_bps: int, policy: MeterPolicy | None = None) -> None:
        # the schema is the CSMS's and the settler's to migrate: on PostgreSQL the meter's own role can
        # read field data and insert its record, nothing else
        self.sessions = session_factory(database_url, upgrade=False)
        self.fee_bps = fee_bps
        self.policy = policy or MeterPolicy()
        self._lock = threading.Lock()

    def _deployment(self, session: Session, request: dict[str, Any]) -> Deployment:
        deployment = session.scalars(select(Deployment).order_by(Deployment.id.desc())).first()
        if deployment is None:
            raise MeterMismatchError("no deployment in the database")
        where = (
            int(request.get("chain_id", deployment.chain_id)),
            str(request.get("contract", deployment.settlement_address)),
        )
        if where != (deployment.chain_id, deployment.settlement_address):
            raise MeterMismatchError(
                f"asked to sign for chain {where[0]} contract {where[1]}; the meter serves chain "
                f"{deployment.chain_id} contract {deployment.settlement_address}"
            )
        return deployment

    def _sign_built(
        self,
        session: Session,
        request: dict[str, Any],
        deployment: Deployment,
        built: PeriodBuild,
        *,
        heads: dict[str, Any],
        policy: dict[str, Any],
        source: str,
    ) -> str:
        """Sign ``built`` when it is what the settler asked for; once per period (a second request for the
        same root and heads gets the recorded signature)."""
        period_id = built.period_id
        mine = ("0x" + built.root.hex(), built.total_credit, built.total_debit, len(built.entries))
        asked = (
            str(request["root"]).lower(),
            int(request["total_credit"]),
            int(request["total_debit"]),
            int(request["entry_count"]),
        )
        if mine != asked:
            raise MeterMismatchError(
                f"period {period_id}: asked to sign root {asked[0][:12]}… credit {asked[1]} debit "
                f"{asked[2]} entries {asked[3]}; the {source} give {mine[0][:12]}… credit {mine[1]} "
                f"debit {mine[2]} entries {mine[3]}"
            )
        done = session.scalar(select(MeterSignature).where(MeterSignature.period_id == period_id))
        if done is not None:
            if done.root != mine[0] or done.frame_heads != heads:
                raise MeterMismatchError(f"period {period_id} was signed with another root or heads")
            return done.signature
        key = meter_key(deployment.chain_id)
        signature = (
            "0x"
            + sign_period_root(
                key,
                chain_id=deployment.chain_id,
                contract=deployment.settlement_address,
                period_id=period_id,
                root=built.root,
                total_credit=built.total_credit,
                total_debit=built.total_debit,
                entry_count=len(built.entries),
            ).hex()
        )
        session.add(
            MeterSignature(
                period_id=period_id,
                chain_id=deployment.chain_id,
                contract=deployment.settlement_address,
                root=mine[0],
                frame_heads=heads,
                signature=signature,
                policy=policy,
            )
        )
        logger.info("period %d signed by the meter %s (%s)", period_id, key.address, source)
        return signature

    def sign(self, request: dict[str, Any]) -> str:
        """Sign a metered period when what the settler asks for is what the verified raw frames give."""
        period_id = int(request["period_id"])
        heads = request["frame_heads"]
        if not isinstance(heads, dict) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str)
            for v in heads.values()
        ):
            raise ValueError("frame_heads: {station: [seq, hash]}")
        with self._lock, self.sessions.begin() as session:
            deployment = self._deployment(session, request)
            metered = metered_period(session, period_id, self.fee_bps, heads=heads, policy=self.policy)
            built = build_from(
                session, metered, chain_id=deployment.chain_id, contract=deployment.settlement_address
            )
            return self._sign_built(
                session,
                request,
                deployment,
                built,
                heads=heads,
                policy={"fee_bps": self.fee_bps, **self.policy.to_json()},
                source="raw frames",
            )

    def sign_simulated(self, request: dict[str, Any]) -> str:
        """Sign a simulated day (local chains only) when the root asked for is what the simulated registers
        give (:mod:`backend.metering.simulated`); recorded as ``simulated`` with the registers' hash."""
        period_id = int(request["period_id"])
        registers = request["registers"]
        trades, tariff, _, _ = read(registers)
        if tariff.fee_bps != self.fee_bps:
            raise MeterMismatchError(
                f"period {period_id}: priced with a fee of {tariff.fee_bps} bps; "
                f"the meter's is {self.fee_bps}"
            )
        with self._lock, self.sessions.begin() as session:
            deployment = self._deployment(session, request)
            if deployment.chain_id not in LOCAL_CHAIN_IDS:
                raise MeterMismatchError(
                    f"chain {deployment.chain_id} is not local: the meter signs simulated registers on a "
                    "local chain only"
                )
            addresses = {o.id: o.address for o in session.scalars(select(Owner))}
            built = build_period(
                period_id,
                settle_trades(trades, tariff),
                addresses,
                chain_id=deployment.chain_id,
                contract=deployment.settlement_address,
            )
            return self._sign_built(
                session,
                request,
                deployment,
                built,
                heads={},
                policy={"simulated": True, "fee_bps": self.fee_bps, "registers_sha256": digest(registers)},
                source="simulated registers",
            )


def serve(database_url: str, port: int, fee_bps: int, policy: MeterPolicy | None = None) -> None:
    service = MeterService(database_url, fee_bps, policy)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/policy":
                self._answer(200, {"fee_bps": service.fee_bps, **service.policy.to_json()})
            else:
                self._answer(404, {"error": "NotFoundError", "detail": self.path})

        def do_POST(self) -> None:
            sign = {"/sign": service.sign, "/sign-simulated": service.sign_simulated}.get(self.path)
            if sign is None:
                self._answer(404, {"error": "NotFoundError", "detail": self.path})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 <= length <= MAX_REQUEST_BYTES:
                    raise ValueError(f"request of {length} bytes: at most {MAX_REQUEST_BYTES}")
                request = json.loads(self.rfile.read(length))
                self._answer(200, {"signature": sign(request)})
            except (MeterMismatchError, FrameChainError) as exc:
                self._answer(409, {"error": type(exc).__name__, "detail": str(exc)})
            except (MeteredPeriodError, SimulatedRegisterError, KeyError, ValueError, TypeError) as exc:
                self._answer(422, {"error": type(exc).__name__, "detail": str(exc)})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"metering service on http://127.0.0.1:{server.server_address[1]}", flush=True)  # noqa: T201 - the port, for the parent
    try:
        server.serve_forever()
    finally:
        server.server_close()


class MeterClient:
    """The settler's side: ask the metering service to sign (the settler holds no meter key)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __call__(self, *, frame_heads: dict[str, list[Any]] | None = None, **header: Any) -> bytes:
        """A metered period's signature (the meter recomputes it from the raw frames at ``frame_heads``);
        ``header``: the arguments of :func:`backend.settlement.signing.period_root_typed_data`."""
        return self._sign("/sign", {"frame_heads": frame_heads or {}, **_wire(header)})

    def simulated(self, registers: dict[str, Any]) -> Callable[..., bytes]:
        """A signer for a simulated day: the meter recomputes the period from these simulated registers
        (:func:`backend.metering.simulated.registers_of`), never from a plan."""

        def sign(**header: Any) -> bytes:
            return self._sign("/sign-simulated", {"registers": registers, **_wire(header)})

        return sign

    def _sign(self, path: str, body: dict[str, Any]) -> bytes:
        try:
            response = httpx.post(f"{self.url}{path}", json=body, timeout=600)
        except httpx.HTTPError as exc:
            raise MeterServiceError(f"metering service at {self.url} unreachable: {exc}") from None
        if response.status_code != 200:
            answer = response.json()
            raise MeterServiceError(f"{answer.get('error')}: {answer.get('detail')}")
        return bytes.fromhex(response.json()["signature"][2:])

    def policy(self) -> tuple[int, MeterPolicy]:
        """The meter's fee and rules, so the settler builds the period the meter will sign."""
        try:
            response = httpx.get(f"{self.url}/policy", timeout=30)
        except httpx.HTTPError as exc:
            raise MeterServiceError(f"metering service at {self.url} unreachable: {exc}") from None
        if response.status_code != 200:
            raise MeterServiceError(
                f"metering service at {self.url}: /policy answered {response.status_code}"
            )
        answer = response.json()
        return int(answer["fee_bps"]), MeterPolicy.from_json(answer)


def _wire(header: dict[str, Any]) -> dict[str, Any]:
    """A period header as JSON: the root in hex."""
    return {**header, "root": "0x" + bytes(header["root"]).hex()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fee-bps", type=int, default=100)
    parser.add_argument("--clock-tolerance-s", type=float, default=MeterPolicy.clock_tolerance_s)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tune_gc()
    serve(args.db, args.port, args.fee_bps, MeterPolicy(clock_tolerance_s=args.clock_tolerance_s))


if __name__ == "__main__":
    main()
