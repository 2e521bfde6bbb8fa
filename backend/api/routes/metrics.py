from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.api.deps import AuditReaderDep, StateDep
from backend.api.openapi import documented
from backend.metrics import registry_of

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4.",
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, responses={**documented({}), **PROMETHEUS_TEXT})
def metrics(state: StateDep, _: AuditReaderDep) -> Response:
    """What an operator watches, for Prometheus (an operator or auditor key: Prometheus sends it as the
    ``X-API-Key`` header, ``http_headers`` in its scrape config): periods by state, field refusals by
    reason, jobs, gas, meter readings, stations heard; under `v2g operate` also stations connected, OCPP
    messages, re-plans, profiles and planned energy (see backend/metrics.py)."""
    registry = registry_of(state.sessions, state.live)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
