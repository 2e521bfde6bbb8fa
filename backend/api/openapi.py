"""The OpenAPI document: every status an operation can answer, each with the error body and the names
it may carry, and links between operations (which stateful clients and schemathesis follow).

Routes declare what is theirs (``documented({404: [...], 409: [...]})``); :func:`complete` adds what
every operation shares: 401 and 403 where a key is needed, 400 (a body that is not JSON) where there
is a body, 413 (a body over the limit) and 500 everywhere, 422 wherever there is something to
validate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from backend.api.schemas import ErrorPublic

ERROR_SCHEMA = "#/components/schemas/ErrorPublic"

DESCRIPTIONS = {
    400: "the body is not valid JSON, or nests arrays or objects more than 32 deep",
    401: "missing or unknown API key",
    403: "the key's role may not do this, or an owner key asked for another owner's data",
    404: "no such resource",
    409: "conflicts with the stored state or the contract",
    413: "the request body is over the size limit",
    422: "the request breaks the schema (RequestValidationError) or a rule that needs the stored state",
    500: "unexpected error (logged with the reference in `detail`)",
    503: "the platform cannot serve this now: the chain does not match the database, or a key or "
    "the deployment is missing (GET /health names it)",
}

SHARED_NAMES = {
    400: ["MalformedBodyError"],
    401: ["MissingApiKeyError", "UnknownApiKeyError"],
    403: ["ForbiddenError"],
    404: ["NotFoundError"],
    413: ["RequestTooLargeError"],
    422: ["RequestValidationError"],
    500: ["InternalServerError"],
    503: ["ChainMismatchError", "MissingKeysError", "NoDeploymentError", "WrongSignerError"],
}

#: Any error name (contract reverts are named after the contract's custom errors).
NAME_PATTERN = "^[A-Z][A-Za-z0-9]*$"
ANY_NAME = "*"


def _error_response(status: int, names: Iterable[str] | None) -> dict[str, Any]:
    listed = sorted(set(names)) if names is not None else None
    error: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN}
    if listed:
        error["enum"] = listed
    description = DESCRIPTIONS.get(status, "error")
    if listed:
        description += ": " + ", ".join(f"`{n}`" for n in listed)
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [{"$ref": ERROR_SCHEMA}],
                    "properties": {"error": error},
                }
            }
        },
    }


def documented(
    errors: Mapping[int, Iterable[str] | None], links: Mapping[int, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's own error statuses and names (``None``: any name, e.g. contract reverts) and the links of
    its success responses (``{201: {"GetVehicle": {...}}}``), for ``responses=`` of a route."""
    out: dict[int | str, dict[str, Any]] = {
        status: {"_names": list(names) if names is not None else ANY_NAME} for status, names in errors.items()
    }
    for status, status_links in (links or {}).items():
        out[status] = {"links": status_links}
    return out


def link(
    operation_id: str, description: str, request_body: Any = None, **parameters: str | int
) -> dict[str, Any]:
    """An OpenAPI link to ``operation_id``: its parameters (and body) as values or runtime expressions."""
    out: dict[str, Any] = {"operationId": operation_id, "description": description}
    if parameters:
        out["parameters"] = parameters
    if request_body is not None:
        out["requestBody"] = request_body
    return out


def complete(app: FastAPI) -> dict[str, Any]:
    """Build the document once: shared statuses added, each error status with its names."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for item in doc["paths"].values():
        for method, operation in item.items():
            responses: dict[str, Any] = operation["responses"]
            own = {
                int(s): (None if n == ANY_NAME else n)
                for s, r in responses.items()
                if isinstance(r, dict) and (n := r.pop("_names", None)) is not None
            }
            secured = bool(operation.get("security"))
            has_body = "requestBody" in operation
            has_params = bool(operation.get("parameters")) or has_body
            names: dict[int, list[str] | None] = {413: SHARED_NAMES[413], 500: SHARED_NAMES[500]}
            if operation.get("operationId") != "health":  # health reports a mismatch, it does not refuse
                names[503] = SHARED_NAMES[503]
            if secured:
                names[401] = SHARED_NAMES[401]
                names[403] = SHARED_NAMES[403]
            if has_body or method in ("post", "put", "patch"):  # any such body is checked before parsing
                names[400] = SHARED_NAMES[400]
            if method in ("post", "put", "patch", "delete"):  # a concurrent write the database refused
                names[409] = ["ConflictError"]
            if has_params or 422 in own:
                names[422] = SHARED_NAMES[422]
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                names[404] = SHARED_NAMES[404]
            for status, extra in own.items():
                if extra is None or names.get(status, []) is None:
                    names[status] = None
                else:
                    names[status] = sorted({*(names.get(status) or []), *extra})
            for status, listed in names.items():
                responses[str(status)] = _error_response(status, listed)
            operation["responses"] = dict(sorted(responses.items()))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    error = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorPublic"] = error
    app.openapi_schema = doc
    return doc
