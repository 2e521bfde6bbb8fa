"""Our StandardMerkleTree equals @openzeppelin/merkle-tree's (run by node) on the same leaves."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Sequence

import pytest

from backend.chain.compiler import REPO_ROOT
from backend.settlement.merkle import StandardMerkleTree, leaf_hash, verify
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


def test_verify_refuses_a_wrong_leaf() -> None:
    values = [(1, "0x" + "11" * 20, 1, i, "0x" + "22" * 20, 5 + i) for i in range(4)]
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    assert not verify(tree.root, leaf_hash(LEAF_TYPES, values[0]), tree.proof(1))
