"""Every error the API answers, in one shape: ``{"error": "<Name>", "detail": ...}``.

- named refusals (:class:`ApiError`, the scheduler's and settlement's named errors, contract reverts);
- the framework's own: 400 ``MalformedBodyError`` (a body that is not JSON, or nested too deep),
  401, 403, 404, 405, 413 ``RequestTooLargeError``, 422 ``RequestValidationError`` (the body or a
  parameter breaks the schema);
- 500 ``InternalServerError`` for anything unexpected, answered by :class:`CatchAllMiddleware`.

A validation error echoes what was sent only in short: strings cut to :data:`ECHO_CHARS` characters,
containers to a few items, NaN and infinities as strings, so the answer is always encodable JSON and
never larger than a few kilobytes, whatever came in.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: Longest echo of a string (or a location key) sent back in a 422.
ECHO_CHARS = 64
#: Most items of a list or object echoed back; the rest is summarised.
ECHO_ITEMS = 8
#: Most validation issues listed in one 422.
MAX_ISSUES = 20

#: The name of each error the framework raises on its own, by status.
FRAMEWORK_NAMES = {
    400: "MalformedBodyError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "RequestTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "RequestValidationError",
    500: "InternalServerError",
}


class ApiError(Exception):
    """A refusal with a name, answered as ``{"error": name, "detail": ...}`` (422s in FastAPI's shape)."""

    def __init__(self, status: int, name: str, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.name, self.detail, self.headers = status, name, detail, headers
        super().__init__(f"{name}: {detail}")


def named_errors(*bases: type[Exception]) -> list[str]:
    """The names of ``bases`` and of all their subclasses (for documenting the names a route may answer)."""
    seen: set[str] = set()
    stack = list(bases)
    while stack:
        cls = stack.pop()
        seen.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    return sorted(seen)


def _cut(text: str, limit: int = ECHO_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def echo(value: Any, depth: int = 0) -> Any:
    """A short, JSON-encodable echo of a value that was sent."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # never str() a huge one: Python limits int-to-text conversion
        return value if abs(value) < 2**128 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if depth >= 2:
        if isinstance(value, dict):
            return f"<object of {len(value)} keys>"
        if isinstance(value, list | tuple):
            return f"<array of {len(value)} items>"
        return _cut(repr(value))
    if isinstance(value, dict):
        items = list(value.items())
        out = {_cut(str(k)): echo(v, depth + 1) for k, v in items[:ECHO_ITEMS]}
        if len(items) > ECHO_ITEMS:
            out["…"] = f"{len(items) - ECHO_ITEMS} more keys"
        return out
    if isinstance(value, list | tuple):
        listed = [echo(v, depth + 1) for v in value[:ECHO_ITEMS]]
        if len(value) > ECHO_ITEMS:
            listed.append(f"… {len(value) - ECHO_ITEMS} more items")
        return listed
    return _cut(repr(value))


def _loc(loc: Sequence[Any]) -> list[str | int]:
    return [p if isinstance(p, int) and not isinstance(p, bool) else _cut(str(p)) for p in loc]


def issues(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as documented issues: loc, msg, type and a short echo of the input."""
    out = []
    for e in list(errors)[:MAX_ISSUES]:
        issue: dict[str, Any] = {
            "loc": _loc(e.get("loc", ())),
            "msg": _cut(str(e.get("msg", "")), 300),
            "type": _cut(str(e.get("type", "")), 64),
        }
        if "input" in e:
            issue["input"] = echo(e["input"])
        out.append(issue)
    if len(errors) > MAX_ISSUES:
        out.append({"loc": [], "msg": f"{len(errors) - MAX_ISSUES} more issues", "type": "truncated"})
    return out


def error_response(
    status: int, name: str, detail: str | list[dict[str, Any]], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A named error. 422s carry a list of issues (a named refusal is one issue of its own type)."""
    if status == 422 and isinstance(detail, str):
        detail = [{"loc": ["body"], "msg": detail, "type": name}]
    return JSONResponse(
        status_code=status, content=jsonable_encoder({"error": name, "detail": detail}), headers=headers
    )


async def api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.name, exc.detail, exc.headers)


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """422 for a request that breaks the schema; 400 for a body that is not JSON at all."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, FRAMEWORK_NAMES[400], "the body is not valid JSON")
    return error_response(422, FRAMEWORK_NAMES[422], issues(errors))


def allowed_methods(paths: Mapping[str, Mapping[str, Any]], path: str) -> list[str]:
    """The methods the OpenAPI document lists for the path template that ``path`` matches."""
    for template, item in paths.items():
        pattern = "^" + re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return sorted(method.upper() for method in item)
    return []


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The framework's HTTP errors (unknown route, method not allowed, a body it could not read).

    A 405's ``Allow`` lists every method of the path: FastAPI keeps one route per method, and Starlette
    would name only the first route's."""
    assert isinstance(exc, StarletteHTTPException)
    name = FRAMEWORK_NAMES.get(exc.status_code, "HTTPError")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods = allowed_methods(request.app.openapi()["paths"], request.url.path)
        if methods:
            headers["Allow"] = ", ".join(methods)
    return error_response(exc.status_code, name, _cut(str(exc.detail), 300), headers or None)


async def named_input_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Scheduling, tariff and period errors: the input is refused, named, and nothing changed."""
    return error_response(422, type(exc).__name__, _cut(str(exc), 2000))


class CatchAllMiddleware:
    """Answers any unexpected exception with a documented JSON 500 and does not re-raise it.

    Starlette's outermost ``ServerErrorMiddleware`` re-raises after its 500 so that the server can log
    it; uvicorn then closes the connection, and a client reusing it for the next request (keep-alive)
    sees a reset. Here the error is logged with a reference and the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except StarletteHTTPException as exc:  # raised outside a route (e.g. by a body read)
            if started:
                raise
            await error_response(
                exc.status_code,
                FRAMEWORK_NAMES.get(exc.status_code, "HTTPError"),
                str(exc.detail),
                exc.headers,
            )(scope, receive, send)
        except Exception:
            reference = uuid.uuid4().hex[:12]
            logger.exception(
                "unexpected error %s on %s %s", reference, scope.get("method"), scope.get("path")
            )
            if started:  # the answer is half sent: nothing valid can follow, the server closes
                raise
            detail = f"unexpected error, logged as {reference}"
            await error_response(500, FRAMEWORK_NAMES[500], detail)(scope, receive, send)


#: The deepest nesting of arrays and objects a JSON body may have (the API's bodies nest three deep).
MAX_JSON_DEPTH = 32
#: A JSON string, or an unterminated one up to the end: every match attempt consumes what it scans
#: (possessive), so stripping strings stays linear whatever the body (no quadratic backtracking).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NESTING = np.zeros(256, dtype=np.int8)
_NESTING[[ord("["), ord("{")]] = 1
_NESTING[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (strings skipped), in one vectorised pass."""
    if len(body) < 2 * MAX_JSON_DEPTH:
        return 0
    steps = _NESTING[np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


class BodyGuardMiddleware:
    """Reads a request body before the app does, and refuses what the app must never parse:

    - over ``max_bytes``: 413 ``RequestTooLargeError``, at once from ``Content-Length`` or as soon as a
      streamed (chunked) body passes the limit (the connection is then closed, the rest unread);
    - arrays or objects nested deeper than :data:`MAX_JSON_DEPTH` in a POST, PUT or PATCH body: 400
      ``MalformedBodyError``. The embedded chain's libraries raise Python's recursion limit to
      100,000, so parsing a few hundred thousand nested ``[`` would overflow the C stack and kill
      the server.

    The body (at most ``max_bytes``) is then handed to the app as if it had just arrived.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        detail = f"the request body exceeds the limit of {self.max_bytes} bytes"
        response = error_response(413, FRAMEWORK_NAMES[413], detail)
        response.headers["connection"] = "close"
        return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        last: Message = {"type": "http.request", "body": b"", "more_body": False}
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                last = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        parsed = scope.get("method") in ("POST", "PUT", "PATCH")  # the only methods with body parameters
        if parsed and json_depth(body) > MAX_JSON_DEPTH:
            detail = f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels"
            await error_response(400, FRAMEWORK_NAMES[400], detail)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                if last["type"] != "http.request":
                    return last
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
