"""The `ocpp` package's camelCase → snake_case key conversion, memoised per key.

The package converts every key of every incoming payload with two regular expressions, on the event loop
(``ocpp.charge_point.camel_to_snake_case``): a MeterValues frame of 2,500 samples (0.6 MB) took about
0.3 s of the CSMS's one event loop, during which every other station waited (a Heartbeat answered in
500 ms instead of 5). The keys of OCPP payloads are few and repeat: each is converted once, by the
package's own function (so the result is the package's, key for key), and looked up afterwards.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import ocpp.charge_point

_package_convert = ocpp.charge_point.camel_to_snake_case


@lru_cache(maxsize=4096)  # bounded: a station inventing keys costs it its own time, not memory
def snake_key(key: str) -> str:
    """The package's snake_case of one key."""
    (converted,) = _package_convert({key: None})
    return str(converted)


def camel_to_snake_case(data: Any) -> Any:
    """``ocpp.charge_point.camel_to_snake_case``, with each key converted once per process."""
    if isinstance(data, dict):
        return {snake_key(k) if isinstance(k, str) else k: camel_to_snake_case(v) for k, v in data.items()}
    if isinstance(data, list):
        return [camel_to_snake_case(v) for v in data]
    return data


def install() -> None:
    """Make the package's message handling use the memoised conversion (idempotent)."""
    ocpp.charge_point.camel_to_snake_case = camel_to_snake_case
