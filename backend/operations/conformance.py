"""OCPP-J's answer to a CALL the CSMS will not handle: one CALLERROR code per case, as the specification
defines them (OCPP 2.0.1 and 2.1, part 4 "JSON over WebSockets", CALLERROR error codes).

The `ocpp` package's own mapping differs from the specification in three places (an action the version
does not define answers ``NotSupported`` on 2.0.1 and nothing at all on 2.1; one the CSMS has no handler
for answers ``NotImplemented``; a missing required field answers ``ProtocolError``), so the CSMS checks
each CALL here before the package handles it, with the package's own schemas.

======================================  ===========================================================
``RpcFrameworkError``                   not JSON, or not an OCPP-J message (type and message id; a
                                        CALL of four elements)
``MessageTypeNotSupported``             a message type the version does not define (2.1's SEND
                                        and CALLRESULTERROR are recorded, never answered)
``FormatViolation``                     a property the schema does not define
``ProtocolError``                       a CALL whose payload is not a JSON object
``NotImplemented``                      an action the station's OCPP version does not define
``NotSupported``                        an action of the version that the CSMS does not handle
``OccurrenceConstraintViolation``       a required field missing; too few or too many items
``TypeConstraintViolation``             a field of the wrong type, or a string too long or short
``PropertyConstraintViolation``         a value outside its enumeration, range or pattern
======================================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]
from ocpp.messages import MessageType, get_validator
from ocpp.v21.enums import Action as V21Action
from ocpp.v201.enums import Action as V201Action

#: The actions each OCPP version defines.
ACTIONS = {"2.0.1": {a.value for a in V201Action}, "2.1": {a.value for a in V21Action}}

#: JSON-schema keywords → OCPP-J CALLERROR code.
SCHEMA_CODES = {
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "minLength": "TypeConstraintViolation",
    "enum": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "exclusiveMinimum": "PropertyConstraintViolation",
    "exclusiveMaximum": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
    "additionalProperties": "FormatViolation",
}


@dataclass(frozen=True)
class CallError:
    code: str
    description: str
    #: whether the station is answered (a CALLERROR); never for a response or a SEND
    answer: bool = True

    def frame(self, unique_id: str) -> list[Any]:
        return [4, unique_id, self.code, self.description[:255], {}]


def message_error(frame: Any, version: str) -> CallError | None:
    """What is wrong with a message as an OCPP-J RPC message, before its action is looked at:
    ``RpcFrameworkError`` for what is not a message at all (not JSON, no message type and id),
    ``MessageTypeNotSupported`` for a type this version does not define. A malformed response (CALLRESULT,
    CALLERROR) or 2.1 SEND is recorded, never answered (OCPP-J answers CALLs only)."""
    if not (
        isinstance(frame, list)
        and len(frame) >= 2
        and isinstance(frame[0], int)
        and isinstance(frame[1], str)
    ):
        return CallError("RpcFrameworkError", "not an OCPP-J message: [messageTypeId, messageId, ...]")
    types = {2, 3, 4} | ({5, 6} if version == "2.1" else set())
    if frame[0] not in types:
        return CallError("MessageTypeNotSupported", f"message type {frame[0]} is not one of OCPP {version}'s")
    if frame[0] == 2 and (len(frame) != 4 or not isinstance(frame[2], str)):
        return CallError("RpcFrameworkError", "a CALL is [2, messageId, action, {payload}]")
    if frame[0] in (5, 6):  # 2.1's CALLRESULTERROR and SEND: the CSMS handles neither, and answers neither
        return CallError("NotSupported", f"message type {frame[0]} is not handled", answer=False)
    if frame[0] in (3, 4) and len(frame) < 3:
        return CallError("RpcFrameworkError", "a response without its payload", answer=False)
    return None


def frame_error(frame: Any) -> CallError | None:
    """A CALL whose payload is not a JSON object: ``ProtocolError`` (not the action's PDU structure)."""
    if not isinstance(frame[3], dict):
        return CallError("ProtocolError", "a CALL's payload is a JSON object")
    return None


def action_error(action: str, version: str, handled: set[str]) -> CallError | None:
    """``NotImplemented`` for an action the version does not define, ``NotSupported`` for one it defines
    that the CSMS does not handle."""
    if action not in ACTIONS[version]:
        return CallError("NotImplemented", f"{action} is not an action of OCPP {version}")
    if action not in handled:
        return CallError("NotSupported", f"the CSMS does not handle {action}")
    return None


def payload_error(action: str, payload: dict[str, Any], version: str) -> CallError | None:
    """The payload against the action's request schema of the version (the `ocpp` package's), its most
    relevant violation mapped to its code."""
    validator = get_validator(MessageType.Call, action, version)
    error: ValidationError | None = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "payload"
    return CallError(SCHEMA_CODES.get(str(error.validator), "FormatViolation"), f"{where}: {error.message}")
