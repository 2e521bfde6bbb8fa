"""OpenZeppelin ``StandardMerkleTree`` in Python: same leaves, same root, same proofs.

Leaf = keccak256(keccak256(abi.encode(values))) (double hashed, so a 64-byte
internal node can never pass as a leaf). Leaves are sorted by hash; the tree is
stored as an array with the root at 0 and node ``i``'s children at ``2i+1`` and
``2i+2``; a parent is the keccak of its two children in sorted order.
``tests/settlement/test_merkle.py`` checks roots and proofs against
``@openzeppelin/merkle-tree`` run by node on the same leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_utils.crypto import keccak


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """The standard double-hashed leaf."""
    return keccak(keccak(encode(list(types), list(values))))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class StandardMerkleTree:
    """A tree over ``values`` (each a row of ``types``); ``index_of[i]`` is value ``i``'s tree position."""

    types: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    tree: tuple[bytes, ...]
    index_of: tuple[int, ...]

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], types: Sequence[str]) -> StandardMerkleTree:
        if not values:
            raise ValueError("a Merkle tree needs at least one leaf")
        hashed = sorted(((leaf_hash(types, v), i) for i, v in enumerate(values)), key=lambda x: x[0])
        n = len(hashed)
        tree: list[bytes] = [b""] * (2 * n - 1)
        index_of = [0] * n
        for position, (h, value_index) in enumerate(hashed):
            tree[len(tree) - 1 - position] = h
            index_of[value_index] = len(tree) - 1 - position
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tuple(types), tuple(tuple(v) for v in values), tuple(tree), tuple(index_of))

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def proof(self, value_index: int) -> list[bytes]:
        """Sibling hashes from value ``value_index``'s leaf up to (not including) the root."""
        i = self.index_of[value_index]
        proof = []
        while i > 0:
            sibling = i - 1 if i % 2 == 0 else i + 1
            proof.append(self.tree[sibling])
            i = (i - 1) // 2
        return proof


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """Recompute the root from ``leaf`` and ``proof`` (as OpenZeppelin's MerkleProof does)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
