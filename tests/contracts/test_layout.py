"""Storage layout: the packing the propose gas budget relies on, read from the committed artifact."""

from __future__ import annotations

from backend.chain.compiler import load_artifact


def test_paused_flag_and_meter_key_share_one_storage_slot() -> None:
    # propose reads the pause flag and the meter key: one slot means one cold access (2,100 gas) for both
    layout = {v["label"]: v for v in load_artifact("V2GSettlement").storage_layout}
    assert layout["_paused"]["slot"] == layout["_meter"]["slot"]
    assert (layout["_paused"]["offset"], layout["_meter"]["offset"]) == (0, 1)
    assert layout["_meter"]["type"] == "address"
