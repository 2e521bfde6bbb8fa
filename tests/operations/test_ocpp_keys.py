"""The `ocpp` package's per-message work, memoised (backend.operations.ocpp_keys): the same results as the
package's own functions, key for key and handler for handler."""

from __future__ import annotations

import inspect
from typing import Any

from backend.operations import ocpp_keys

ORIGINAL_TO_SNAKE = ocpp_keys._package_convert
ORIGINAL_TO_CAMEL = ocpp_keys._package_to_camel
ORIGINAL_SERIALIZE = ocpp_keys._package_serialize

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


def test_the_serialisation_is_the_packages_without_its_copies() -> None:
    from ocpp.v201 import call, call_result, datatypes, enums

    profile: dict[str, Any] = {
        "id": 3,
        "stack_level": 1,
        "charging_profile_purpose": "TxProfile",
        "charging_schedule": [
            {
                "id": 3,
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 1.5}],
            }
        ],
    }
    payloads = [
        call.SetChargingProfile(evse_id=1, charging_profile=profile),
        call_result.TransactionEvent(
            total_cost=1.25,
            id_token_info=datatypes.IdTokenInfoType(status=enums.AuthorizationStatusEnumType.accepted),
        ),
        call_result.BootNotification(
            current_time="2023-09-12T09:00:00Z",
            interval=300,
            status=enums.RegistrationStatusEnumType.accepted,
            status_info=datatypes.StatusInfoType(reason_code="ok", additional_info=None),
        ),
        call.GetVariables(
            get_variable_data=[
                datatypes.GetVariableDataType(
                    component=datatypes.ComponentType(name="SmartChargingCtrlr"),
                    variable=datatypes.VariableType(name="PeriodsPerSchedule"),
                )
            ]
        ),
        call_result.Heartbeat(current_time="2023-09-12T09:00:00Z"),
    ]
    for payload in payloads:
        ours, theirs = ocpp_keys.serialize_as_dict(payload), ORIGINAL_SERIALIZE(payload)
        assert ours == theirs
        assert type(ours) is dict
    ours = ocpp_keys.serialize_as_dict(payloads[0])
    # new containers all the way down: the caller's profile is never the one sent, nor changed
    assert ours["charging_profile"] is not profile
    assert ours["charging_profile"]["charging_schedule"][0] is not profile["charging_schedule"][0]
    ours["charging_profile"]["id"] = 99
    assert profile["id"] == 3
    ocpp_keys.install()
    import ocpp.charge_point

    assert ocpp.charge_point.serialize_as_dict is ocpp_keys.serialize_as_dict


def test_a_profile_goes_on_the_wire_as_the_package_would_send_it() -> None:
    # the CSMS sends SetChargingProfile's payload from the plain profile in one pass: the package's
    # serialisation, camelCase and None removal, value for value, for V2G and charge-only profiles
    from datetime import UTC, datetime, timedelta

    import numpy as np
    from ocpp.charge_point import remove_nones
    from ocpp.v21 import call

    from backend.operations.profiles import profile_of

    starts = [datetime(2023, 9, 12, 10, tzinfo=UTC) + timedelta(minutes=15 * k) for k in range(12)]
    rng = np.random.default_rng(5)
    for v2g in (True, False):
        profile = profile_of(
            profile_id=4,
            transaction_id="tx-1",
            starts=starts,
            charge_kw=rng.choice([0.0, 3.7, 11.0], 12),
            discharge_kw=rng.choice([0.0, 5.0], 12),
            v2g=v2g,
            max_charge_kw=11.0,
            max_discharge_kw=5.0,
            periods_per_schedule=24,
        )
        profile["valid_to"] = None  # left out, as the package leaves out every None
        request = call.SetChargingProfile(evse_id=2, charging_profile=profile)
        theirs = remove_nones(ORIGINAL_TO_CAMEL(ORIGINAL_SERIALIZE(request)))
        ours = ocpp_keys.wire({"evse_id": 2, "charging_profile": profile})
        assert ours == theirs
        assert "validTo" not in ours["chargingProfile"] and "valid_to" in profile  # the profile unchanged
        period = ours["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
        assert ("dischargeLimit" in period) is v2g and "startPeriod" in period
