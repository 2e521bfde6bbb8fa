"""Our StandardMerkleTree equals @openzeppelin/merkle-tree's (run by node) on the same leaves, and the
plain construction (eth_abi + eth_utils, one bytes object per node) on thousands of random entries."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_abi.exceptions import EncodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from backend.chain.compiler import REPO_ROOT
from backend.settlement import merkle
from backend.settlement.merkle import StandardMerkleTree, abi_encode, leaf_hash, leaves, verify
from backend.settlement.period import LEAF_TYPES

NODE_SCRIPT = """
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const tree = StandardMerkleTree.of(input.values, input.types);
const proofs = input.values.map((_, i) => tree.getProof(i));
process.stdout.write(JSON.stringify({ root: tree.root, proofs }));
"""


def node_tree(values: Sequence[Sequence[object]], types: tuple[str, ...]) -> dict[str, object]:
    payload = json.dumps({"values": [[str(v) for v in row] for row in values], "types": list(types)})
    result = subprocess.run(
        ["node", "-e", NODE_SCRIPT], input=payload, capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 257])
def test_root_and_proofs_equal_openzeppelin_merkle_tree(n: int) -> None:
    rng = random.Random(n)
    contract = "0x" + "ab" * 20
    values = [
        (131277322940537, contract, 20230702, i, "0x" + rng.randbytes(20).hex(), rng.randint(-(2**95), 2**95))
        for i in range(n)
    ]
    ours = StandardMerkleTree.of(values, LEAF_TYPES)
    theirs = node_tree(values, LEAF_TYPES)
    assert "0x" + ours.root.hex() == theirs["root"]
    proofs = theirs["proofs"]
    assert isinstance(proofs, list)
    for i in range(n):
        assert ["0x" + p.hex() for p in ours.proof(i)] == proofs[i]
        assert verify(ours.root, leaf_hash(LEAF_TYPES, values[i]), ours.proof(i))
    assert [json.loads(text) for text in ours.proofs_json(chunk=5)] == proofs


def test_verify_refuses_a_wrong_leaf() -> None:
    values = [(1, "0x" + "11" * 20, 1, i, "0x" + "22" * 20, 5 + i) for i in range(4)]
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    assert not verify(tree.root, leaf_hash(LEAF_TYPES, values[0]), tree.proof(1))


# --- the plain construction, as the module was before it was made fast --------------------------------


def slow_tree(
    values: Sequence[Sequence[Any]], types: Sequence[str]
) -> tuple[bytes, Callable[[int], list[bytes]]]:
    """Root and proofs by eth_abi, eth_utils.keccak and a list of bytes objects."""
    hashed = sorted(
        ((keccak(keccak(encode(list(types), list(v)))), i) for i, v in enumerate(values)), key=lambda x: x[0]
    )
    n = len(hashed)
    tree = [b""] * (2 * n - 1)
    index_of = [0] * n
    for position, (h, value_index) in enumerate(hashed):
        tree[len(tree) - 1 - position] = h
        index_of[value_index] = len(tree) - 1 - position
    for i in range(len(tree) - 1 - n, -1, -1):
        a, b = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = keccak(a + b) if a < b else keccak(b + a)

    def proof(value_index: int) -> list[bytes]:
        i, out = index_of[value_index], []
        while i > 0:
            out.append(tree[i - 1 if i % 2 == 0 else i + 1])
            i = (i - 1) // 2
        return out

    return tree[0], proof


def random_entries(n: int, seed: int) -> list[tuple[int, str, int, int, str, int]]:
    rng = random.Random(seed)
    contract = to_checksum_address("0x" + rng.randbytes(20).hex())
    return [
        (
            131277322940537,
            contract,
            20230702,
            i,
            to_checksum_address("0x" + rng.randbytes(20).hex()),
            rng.randint(-(2**95), 2**95),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 5000])
def test_large_tree_equals_the_slow_construction(n: int) -> None:
    values = random_entries(n, seed=n)
    root, proof = slow_tree(values, LEAF_TYPES)
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    assert tree.root == root
    texts = list(tree.proofs_json(chunk=777))
    assert len(texts) == n
    for i in range(n):
        assert tree.proof(i) == proof(i)
        assert texts[i] == json.dumps(["0x" + p.hex() for p in proof(i)]).encode()
    assert list(tree.proofs_json(n // 3, n // 2)) == texts[n // 3 : n // 2]


def test_leaves_with_a_common_head_equal_whole_rows() -> None:
    values = random_entries(300, seed=7)
    head, rows = values[0][:3], [v[3:] for v in values]
    assert leaves(LEAF_TYPES, rows, common=head) == [leaf_hash(LEAF_TYPES, v) for v in values]
    dynamic = ("uint256", "string")  # not packed: the whole row goes to eth_abi
    assert leaves(dynamic, [("x",), ("yz",)], common=(5,)) == [
        keccak(keccak(encode(list(dynamic), [5, s]))) for s in ("x", "yz")
    ]


def test_leaves_by_column_fall_back_to_rows_for_an_unusual_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merkle, "LEAF_CHUNK", 7)
    values = random_entries(30, seed=8)
    head, rows = values[0][:3], [list(v[3:]) for v in values]
    rows[9][1] = bytes.fromhex(str(rows[9][1])[2:])  # a raw 20-byte address: eth_abi packs it
    expected = [keccak(keccak(encode(list(LEAF_TYPES), [*head, *row]))) for row in rows]
    assert leaves(LEAF_TYPES, rows, common=head) == expected
    rows[20] = rows[20][:2]  # a row too short: refused as eth_abi refuses it
    with pytest.raises(EncodingError):
        leaves(LEAF_TYPES, rows, common=head)


def test_tree_from_duplicate_leaves_equals_the_slow_construction() -> None:
    values = [(1, "0x" + "11" * 20, 1, i % 3, "0x" + "22" * 20, 5) for i in range(9)]
    root, proof = slow_tree(values, LEAF_TYPES)
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    assert tree.root == root
    assert [tree.proof(i) for i in range(9)] == [proof(i) for i in range(9)]


def test_a_tampered_entry_fails_its_proof() -> None:
    values = random_entries(64, seed=3)
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    entry = values[17]
    assert verify(tree.root, leaf_hash(LEAF_TYPES, entry), tree.proof(17))
    for tampered in (
        (*entry[:5], entry[5] + 1),
        (*entry[:4], values[18][4], entry[5]),
        (*entry[:3], 18, *entry[4:]),
        (entry[0], entry[1], entry[2] + 1, *entry[3:]),
    ):
        assert not verify(tree.root, leaf_hash(LEAF_TYPES, tampered), tree.proof(17))


# --- abi.encode and keccak ------------------------------------------------------------------------------

STATIC = ("uint256", "address", "uint64", "int256", "int96", "bool", "bytes32", "bytes4", "uint8", "int8")


def random_static_row(rng: random.Random) -> tuple[Any, ...]:
    raw = "0x" + rng.randbytes(20).hex()
    address = rng.choice([raw, raw.upper().replace("0X", "0x"), to_checksum_address(raw)])
    return (
        rng.choice([0, 2**256 - 1, rng.randrange(2**256)]),
        address,
        rng.randrange(2**64),
        rng.choice([-(2**255), 2**255 - 1, -1, rng.randrange(-(2**255), 2**255)]),
        rng.randrange(-(2**95), 2**95),
        rng.random() < 0.5,
        rng.randbytes(32),
        rng.randbytes(rng.randint(0, 4)),
        rng.randrange(256),
        rng.randrange(-128, 128),
    )


def test_abi_encode_of_static_types_equals_eth_abi() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        row = random_static_row(rng)
        assert abi_encode(STATIC, row) == encode(list(STATIC), list(row))


@pytest.mark.parametrize(
    ("abi_type", "value"),
    [
        ("uint256", 2**256),
        ("uint256", -1),
        ("uint64", 2**64),
        ("uint256", True),
        ("uint256", "5"),
        ("int256", 2**255),
        ("int96", -(2**95) - 1),
        ("bool", 1),
        ("bytes4", b"12345"),
        ("address", "0x" + "ab" * 19),
        ("address", "0x" + "zz" * 20),
    ],
)
def test_abi_encode_refuses_what_eth_abi_refuses(abi_type: str, value: object) -> None:
    with pytest.raises(EncodingError):
        encode([abi_type], [value])
    with pytest.raises(EncodingError):
        abi_encode((abi_type,), (value,))


def test_abi_encode_takes_what_only_eth_abi_packs() -> None:
    address = to_checksum_address("0x" + "ab" * 20)
    for types, row in (
        (("address",), (bytes.fromhex("ab" * 20),)),  # a raw 20-byte address
        (("address",), (("ab" * 20),)),  # no 0x
        (("uint256", "string"), (1, "x")),  # a dynamic type
        (("uint256[2]",), ([1, 2],)),
        (("address", "uint8"), (address, 7)),
        (("address",), ("0x52908400098527886E0F7030069857D2E4169Ee7",)),  # a broken checksum: not checked
    ):
        assert abi_encode(types, row) == encode(list(types), list(row))


@pytest.mark.parametrize("name", sorted(merkle.KECCAK_IMPLEMENTATIONS))
def test_every_keccak_implementation_equals_eth_utils(name: str) -> None:
    try:
        fn = merkle.KECCAK_IMPLEMENTATIONS[name]()
    except (ImportError, OSError) as exc:
        pytest.skip(f"{name} not installed: {exc}")
    rng = random.Random(5)
    for size in [0, 1, 31, 32, 64, 135, 136, 137, 192, 300, *[rng.randrange(1000) for _ in range(50)]]:
        data = rng.randbytes(size)
        assert fn(data) == keccak(data)


def test_the_c_keccak_state_is_one_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """pycryptodome's state is reused between messages: two threads must never share one."""
    monkeypatch.setattr(
        merkle, "KECCAK_IMPLEMENTATIONS", {"pycryptodome": merkle.KECCAK_IMPLEMENTATIONS["pycryptodome"]}
    )
    wrong: list[bytes] = []

    def work() -> None:
        fn = merkle.hasher()
        for _ in range(3000):
            data = os.urandom(64)
            if fn(data) != keccak(data):
                wrong.append(data)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
