"""The `ocpp` package's per-message work that depends on nothing in the message, memoised: its
camelCase ↔ snake_case key conversions (per key, both ways) and its look at each handler's signature
(per handler).

The package converts every key of every incoming payload with two regular expressions, on the event loop
(``ocpp.charge_point.camel_to_snake_case``): a MeterValues frame of 2,500 samples (0.6 MB) took about
0.3 s of the CSMS's one event loop, during which every other station waited (a Heartbeat answered in
500 ms instead of 5). The keys of OCPP payloads are few and repeat: each is converted once, by the
package's own function (so the result is the package's, key for key), and looked up afterwards.

For every CALL the package also builds ``inspect.signature(handler)`` to see whether the handler takes
``call_unique_id``: about a third of a TransactionEvent's handling on the CSMS (profiled at 2,000 stations
in the field writer's bench). A bound method's signature does not depend on its instance, so it is built
once per handler function.

Every call the CSMS sends and every answer it gives is first turned into a dict by
``ocpp.charge_point.serialize_as_dict`` (``dataclasses.asdict``), which deep-copies every leaf of the
payload: a SetChargingProfile of 24 periods took more of a CSMS process's time than writing it to the
database (profiled at 2,000 stations). :func:`serialize_as_dict` builds the same dict, new containers
all the way down, and keeps the leaves that copying could not change (strings, numbers, enums, None).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import inspect
import types
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import ocpp.charge_point

_package_convert = ocpp.charge_point.camel_to_snake_case
_package_to_camel = ocpp.charge_point.snake_to_camel_case
_package_serialize = ocpp.charge_point.serialize_as_dict


@lru_cache(maxsize=4096)  # bounded: a station inventing keys costs it its own time, not memory
def snake_key(key: str) -> str:
    """The package's snake_case of one key."""
    (converted,) = _package_convert({key: None})
    return str(converted)


@lru_cache(maxsize=4096)
def camel_key(key: str) -> str:
    """The package's camelCase of one key (what every call and answer the CSMS sends goes through)."""
    (converted,) = _package_to_camel({key: None})
    return str(converted)


def _keys(data: Any, convert: Callable[[str], str]) -> Any:
    """``data`` with every dictionary key (at any depth) converted by ``convert``; values as they are."""
    if isinstance(data, dict):
        return {convert(k) if isinstance(k, str) else k: _keys(v, convert) for k, v in data.items()}
    if isinstance(data, list):
        return [_keys(v, convert) for v in data]
    return data


def snake_to_camel_case(data: Any) -> Any:
    """``ocpp.charge_point.snake_to_camel_case``, with each key converted once per process."""
    return _keys(data, camel_key)


def wire(data: Any) -> Any:
    """A payload given as plain snake_case dicts and lists, as the station gets it, in one pass: every key
    camelCase (the package's, :func:`camel_key`) and every None left out. What ``ChargePoint.call`` sends
    for the same payload (``serialize_as_dict``, ``snake_to_camel_case``, ``remove_nones``: three passes
    and half of a SetChargingProfile's time in a CSMS process, profiled at 2,000 stations). A charging
    profile's 140 keys and values in 22 µs (40 before): keys from a plain dict (an ``lru_cache`` call
    costs as much as the rest), no call for a string or a number."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            if v is None:
                continue
            if isinstance(k, str):
                k = _CAMEL.get(k) or _camel(k)
            out[k] = v if type(v) in _SCALARS else wire(v)
        return out
    if isinstance(data, list):
        return [v if type(v) in _SCALARS else wire(v) for v in data if v is not None]
    return data


#: values a payload has most of, passed as they are without a call (anything else goes through wire)
_SCALARS = frozenset((str, int, float, bool))


#: the camelCase keys seen, by snake_case key (bounded as :func:`camel_key`'s cache)
_CAMEL: dict[str, str] = {}


def _camel(key: str) -> str:
    converted = camel_key(key)
    if len(_CAMEL) < 4096:
        _CAMEL[key] = converted
    return converted


def camel_to_snake_case(data: Any) -> Any:
    """``ocpp.charge_point.camel_to_snake_case``, with each key converted once per process."""
    return _keys(data, snake_key)


#: leaves a deep copy returns as they are
_ATOMS = (str, int, float, bool, type(None), enum.Enum)
_fields: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """``dataclasses.asdict``'s recursion (dataclasses to dicts, lists, tuples and dicts rebuilt), without
    copying the leaves a copy would return unchanged."""
    if isinstance(value, _ATOMS):
        return value
    kind = type(value)
    names = _fields.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _fields[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if kind is list:
        return [_plain(v) for v in value]
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if kind is tuple:
        return tuple(_plain(v) for v in value)
    return _package_serialize_leaf(value)


def _package_serialize_leaf(value: Any) -> Any:
    """What ``asdict`` makes of anything else (a namedtuple, a set, a subclass of a container): its own
    recursion, which is ``deepcopy`` for a leaf."""
    if isinstance(value, (list, tuple, dict)):
        return dataclasses.asdict(_Box(value)).get("value")
    return copy.deepcopy(value)


@dataclasses.dataclass
class _Box:
    value: Any


def serialize_as_dict(payload: Any) -> dict[str, Any]:
    """``ocpp.charge_point.serialize_as_dict(payload)``: the same dict, built without deep copies."""
    result = _plain(payload)
    if not isinstance(result, dict):
        raise TypeError(f"{type(payload).__name__} is not a dataclass payload")
    return result


_signatures: dict[Any, inspect.Signature] = {}


def signature(handler: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(handler)``, built once per function (a bound method's is its instance's
    method's: the same for every station's connection)."""
    key = getattr(handler, "__func__", handler)
    known = _signatures.get(key)
    if known is None:
        if len(_signatures) >= 1024:  # bounded: handlers are a class's methods, a few dozen
            _signatures.clear()
        known = _signatures[key] = inspect.signature(handler)
    return known


class _Inspect(types.ModuleType):
    """The ``inspect`` module as the package's ``charge_point`` module sees it: ``signature`` memoised,
    everything else the module's own."""

    signature = staticmethod(signature)

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


def install() -> None:
    """Make the package's message handling use the memoised conversion and signatures, and the copy-free
    serialisation (idempotent)."""
    ocpp.charge_point.camel_to_snake_case = camel_to_snake_case
    ocpp.charge_point.snake_to_camel_case = snake_to_camel_case
    ocpp.charge_point.inspect = _Inspect("inspect")
    ocpp.charge_point.serialize_as_dict = serialize_as_dict
