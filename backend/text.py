"""Words for people, shared by every door (the portal's pages, the command line)."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 period``, ``2 periods``, ``1,024 entries``: the number and its noun, in agreement."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
