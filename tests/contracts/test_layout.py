"""Storage layout: the packing the propose gas budget relies on, read from the committed artifact."""

from __future__ import annotations

from backend.chain.compiler import load_artifact


def test_pause_meter_key_and_float_share_one_storage_slot() -> None:
    # propose reads the end of the pause, the meter key and the aggregator's float, and writes the float:
    # one slot means one cold access (2,100 gas) for all three and one write
    layout = {v["label"]: v for v in load_artifact("V2GSettlement").storage_layout}
    assert layout["_meter"]["slot"] == layout["_pausedUntil"]["slot"] == layout["_aggregatorBalance"]["slot"]
    assert [layout[k]["offset"] for k in ("_meter", "_pausedUntil", "_aggregatorBalance")] == [0, 20, 24]
    assert (layout["_pausedUntil"]["type"], layout["_aggregatorBalance"]["type"]) == ("uint32", "uint64")
