"""JSON text on the hot paths (:mod:`backend.jsontext`): orjson's speed, the standard library's meaning."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

import numpy as np
import pytest

from backend.jsontext import dumps, loads_own
from backend.operations.profiles import profile_of


class Level(IntEnum):
    LOW = 1
    HIGH = 2


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_a_profile_is_written_as_the_standard_library_writes_it_and_read_back_whole() -> None:
    starts = [datetime(2023, 9, 12, 9, tzinfo=UTC) + timedelta(minutes=15 * k) for k in range(60)]
    charge = np.round(np.random.default_rng(3).uniform(0, 11, 60), 2)
    profile = profile_of(
        profile_id=2**40, transaction_id="tx-é", starts=starts, charge_kw=charge, discharge_kw=np.zeros(60),
        v2g=True, max_charge_kw=11.0, max_discharge_kw=7.4, periods_per_schedule=24,
    )  # fmt: skip
    body = {"evse_id": 1, "profile": profile}
    text = dumps(body)
    assert json.loads(text) == body == loads_own(text)
    assert text == json.dumps(body, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    "value",
    [
        {"limit": float("nan")},  # orjson would write null
        [math.inf, -math.inf],
        {"id": 2**70},  # beyond orjson's 64 bits
        {"kw": np.float64(7.4)},  # a float subclass orjson refuses
        {1: "a", "b": None},  # a key not a string; a None
        {"at": [datetime(2023, 9, 12, tzinfo=UTC)]},  # refused by both
        {datetime(2023, 9, 12, tzinfo=UTC).date(): 1},
        {"kind": OrderedDict(b=1, a=2), "level": Level.HIGH},
    ],
)
def test_what_orjson_would_write_otherwise_is_the_standard_librarys_text(value: Any) -> None:
    try:
        expected = compact(value)
    except TypeError as refused:
        with pytest.raises(TypeError, match=str(refused)):
            dumps(value)
    else:
        assert dumps(value) == expected
