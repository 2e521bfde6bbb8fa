"""The `ocpp` package's per-message work, memoised (backend.operations.ocpp_keys): the same results as the
package's own functions, key for key and handler for handler."""

from __future__ import annotations

import inspect
from typing import Any

from backend.operations import ocpp_keys

ORIGINAL_TO_SNAKE = ocpp_keys._package_convert
ORIGINAL_TO_CAMEL = ocpp_keys._package_to_camel

CAMEL = {
    "chargingProfile": {
        "id": 7,
        "chargingProfilePurpose": "TxProfile",
        "chargingSchedule": [
            {"chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 3000.0}]}
        ],
    },
    "evMinV2XEnergyRequest": 1,
    "ocppCSMSURL": "wss://x",
    "stateOfCharge": 0.5,
    "minSoC": 10,
    "SOCLimitReached": True,
    "evseId": 1,
    "meterValue": [{"sampledValue": [{"value": 1.0, "measurand": "Energy.Active.Import.Register"}]}],
}


def test_the_memoised_conversions_are_the_packages_key_for_key() -> None:
    snake = ocpp_keys.camel_to_snake_case(CAMEL)
    assert snake == ORIGINAL_TO_SNAKE(CAMEL)
    assert ocpp_keys.snake_to_camel_case(snake) == ORIGINAL_TO_CAMEL(snake)
    assert "ev_min_v2x_energy_request" in snake and "min_soc" in snake
    # values are never converted, only keys
    assert ocpp_keys.camel_to_snake_case({"idToken": "tokenValue"}) == {"id_token": "tokenValue"}


def test_a_handlers_signature_is_built_once_and_is_the_bound_methods() -> None:
    class Station:
        def on_call(self, evse_id: int, call_unique_id: str, **_: Any) -> None: ...

    one, two = Station(), Station()
    first = ocpp_keys.signature(one.on_call)
    assert first == inspect.signature(one.on_call)  # self is not a parameter of the bound method
    assert ocpp_keys.signature(two.on_call) is first
    assert "call_unique_id" in first.parameters and "self" not in first.parameters
