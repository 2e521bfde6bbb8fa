"""Property-based API testing against the OpenAPI schema, as strong as ``schemathesis run --checks all``.

The engine the CLI runs (probing, examples, coverage, fuzzing and stateful phases through the document's
links) runs here in-process against the real app on the embedded chain and a SQLite file, seeded with
owners, vehicles, plug-ins, prices, escrow and one settled day, with an operator key. Every built-in
check is on, plus :func:`schema_and_validator_agree`; zero failures are allowed.

One check is configured rather than left at its default: ``positive_data_acceptance`` also accepts 422.
Some rules of a well-formed request cannot be written in JSON Schema (an EIP-55 checksum, departure after
arrival, a price hour given twice, a vehicle that must exist, a horizon that must have prices); the API
refuses those with 422 and a named error that each operation documents (``error`` is an ``enum`` of
the names in its 422 response, which ``response_schema_conformance`` checks). What the default check is
for, that the schema and the server agree on what is well formed, is checked by
:func:`schema_and_validator_agree`: data the schema calls valid never gets ``RequestValidationError``
(nor 400 ``MalformedBodyError``).

Run the same against a served app with the CLI: ``python -m tests.backend.test_schemathesis --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as ev

from tests.backend.conftest import SCHEDULE, Api, make_api

#: Statuses positive (schema-valid) requests may get: the defaults and 422 for a documented named rule.
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
#: Values that broke the API before (issue 12), drawn now and then in place of generated ones (where
#: they break the schema, in negative cases): timestamps at the calendar's edges, integers past 64 bits.
HOSTILE: dict[str, Any] = {
    "strings": {
        "values": [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T22:00:00-05:00",
            "0001-01-01T00:00:00Z",
            "2023-07-02T00:00:00",
            "2023-02-30T00:00:00Z",
            "0x0000000000000000000000000000000000000000",
        ]
    },
    "integers": {"values": [9223372036854775808, 9223372036854775807, -9223372036854775809, 2**64, 2**53]},
    "numbers": {"values": [1e308, -1e308, 5e-324, 9007199254740993]},
}
HOSTILE_MARKERS = [str(v) for d in HOSTILE.values() for v in d["values"]]
#: Operations that send chain transactions: fewer examples, each costs about half a second.
ON_CHAIN = ["fund_float", "deposit", "claim_entry", "reconciliation"]


@schemathesis.check
def schema_and_validator_agree(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the schema calls valid is never refused as malformed: a 422 for it names a domain rule
    (documented in the operation's 422 response), never the generic ``RequestValidationError``."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    try:
        name = json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        name = None
    if name in (None, "RequestValidationError", "MalformedBodyError"):
        raise AssertionError(
            f"schema-valid request refused as malformed ({response.status_code} {name}): "
            f"{response.content[:500]!r}"
        )
    return True


def config(
    key: str, *, examples: int, steps: int, seed: int = 20_230_702, coverage: bool = True
) -> dict[str, Any]:
    """The run's configuration, as ``schemathesis.toml`` would hold it."""
    return {
        "seed": seed,
        "workers": 1,
        "cache": {"enabled": False},  # nothing written into the working tree
        "suppress-health-check": ["all"],
        "auth": {"openapi": {"APIKeyHeader": {"api_key": key}}},
        "dictionaries": HOSTILE,
        "generation": {
            "max-examples": examples,
            "mode": "all",
            "dictionaries": {
                "string": {"dictionary": "strings", "probability": 0.15},
                "integer": {"dictionary": "integers", "probability": 0.15},
                "number": {"dictionary": "numbers", "probability": 0.15},
            },
        },
        "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES}},
        "phases": {"stateful": {"max-steps": steps}, "coverage": {"enabled": coverage}},
        "operations": [
            {"include-operation-id": ON_CHAIN, "generation": {"max-examples": max(3, examples // 10)}}
        ],
    }


@dataclass
class Outcome:
    seconds: float = 0.0
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    by_phase: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    hostile: int = 0  # requests that carried a value of HOSTILE
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.operations)} operations, {self.cases} test cases "
            f"({dict(self.by_phase)}, {self.hostile} with a known-hostile value), "
            f"{len(self.failures)} failures, {len(self.errors)} errors, "
            f"{self.seconds:.1f} s; statuses {dict(sorted(self.statuses.items()))}; "
            f"checks {dict(sorted(self.checks.items()))}"
        )


def run_engine(api: Api, *, examples: int, steps: int, coverage: bool = True) -> Outcome:
    app = api.client.app  # type: ignore[attr-defined]
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json",
        app,
        config=SchemathesisConfig.from_dict(
            config(api.keys["operator"], examples=examples, steps=steps, coverage=coverage)
        ),
    )
    outcome = Outcome()
    start = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, ev.ScenarioFinished):
            recorder = event.recorder
            outcome.operations.add(recorder.label) if event.phase.value != "stateful" else None
            outcome.cases += len(recorder.cases)
            outcome.by_phase[event.phase.value] += len(recorder.cases)
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    outcome.statuses[interaction.response.status_code] += 1
                carried = (interaction.request.body or b"").decode(errors="replace") + interaction.request.uri
                outcome.hostile += any(marker in carried for marker in HOSTILE_MARKERS)
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    outcome.checks[check.name] += 1
                    if check.status == Status.FAILURE:
                        node = recorder.cases.get(case_id)
                        where = f"{node.value.method} {node.value.formatted_path}" if node else recorder.label
                        info = check.failure_info
                        detail = f"{info.failure.title}: {info.failure.message}" if info is not None else ""
                        recorded = recorder.interactions.get(case_id)
                        answer = recorded.response if recorded is not None else None
                        sent = node.value.body if node is not None else None
                        outcome.failures.append(
                            f"{where}: {check.name}: {detail}\n  sent {str(sent)[:300]}\n  got "
                            + (f"{answer.status_code} {answer.content[:400]!r}" if answer else "-")
                        )
        elif isinstance(event, ev.NonFatalError):
            outcome.errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, ev.FatalError):
            outcome.errors.append(f"fatal: {event.exception!r}")
    outcome.seconds = time.monotonic() - start
    return outcome


def settled_api(tmp_path: Path) -> Iterator[Api]:
    """The seeded app with one settled day, so periods, entries, proofs and claims have data to reach."""
    gen = make_api(tmp_path, dask_workers=1)  # portfolio jobs on threads: no cluster of processes per case
    api = next(gen)
    try:
        job = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
        api.wait(api.post("/periods", {"schedule_id": job["result"]["schedule_id"]}))  # type: ignore[arg-type,index]
        yield api
    finally:
        gen.close()


def assert_clean(outcome: Outcome, api: Api) -> None:
    operations = len(api.client.app.openapi()["paths"])  # type: ignore[attr-defined]
    assert not outcome.errors, outcome.errors
    assert not outcome.failures, "\n".join(sorted(set(outcome.failures)))
    assert outcome.by_phase["stateful"] > 0, outcome.summary()
    assert len(outcome.operations) >= operations, (sorted(outcome.operations), outcome.summary())
    assert 500 not in outcome.statuses, outcome.summary()


def test_api_passes_every_schemathesis_check(tmp_path: Path) -> None:
    """The default suite's pass: examples, fuzzing and the stateful links. The coverage phase (2,000
    deterministic boundary and negative cases, 20 s) runs in the pass at length (``-m slow``)."""
    for api in settled_api(tmp_path):
        outcome = run_engine(api, examples=3, steps=10, coverage=False)
        print(outcome.summary())  # noqa: T201 - the figures of the run, shown with -s
        assert_clean(outcome, api)


@pytest.mark.slow
def test_api_passes_every_schemathesis_check_at_length(tmp_path: Path) -> None:
    for api in settled_api(tmp_path):
        outcome = run_engine(api, examples=300, steps=60)
        print(outcome.summary())  # noqa: T201
        assert_clean(outcome, api)


def to_toml(table: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for :func:`config`: scalars, lists of scalars, tables and arrays of tables."""
    lines, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append(f"\n[{prefix}{key}]\n" + to_toml(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend(f"\n[[{prefix}{key}]]\n" + to_toml(item, f"{prefix}{key}.") for item in value)
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "".join(tables)


def main() -> int:  # pragma: no cover - a manual tool, not a test
    """Serve the seeded app (one settled day) on loopback and run the schemathesis CLI against it with this
    file's configuration and check; the server stops when the run ends."""
    import shlex
    import tempfile

    import httpx

    from backend.api.app import create_app
    from backend.api.security import Role, create_api_key
    from tests.backend.conftest import seed, served, settings_for

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--examples", type=int, default=100, help="examples per operation")
    parser.add_argument("--steps", type=int, default=50, help="most steps of a stateful scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(settings_for(Path(tmp)))
        with served(app) as url, httpx.Client(base_url=url, timeout=300) as client:
            state = app.state.v2g
            with state.sessions.begin() as session:
                keys = {"operator": create_api_key(session, Role.OPERATOR)}
            api = Api(client, state, keys)
            seed(api)
            job = api.wait(api.post("/schedules", SCHEDULE))  # type: ignore[arg-type]
            api.wait(api.post("/periods", {"schedule_id": job["result"]["schedule_id"]}))  # type: ignore[arg-type,index]
            config_file = Path(tmp) / "schemathesis.toml"
            config_file.write_text(
                to_toml(config(keys["operator"], examples=args.examples, steps=args.steps))
            )
            command = [
                str(Path(sys.executable).with_name("schemathesis")),
                "--config-file",
                str(config_file),
                "run",
                "--checks",
                "all",
                f"{url}/openapi.json",
            ]
            hooks = {"SCHEMATHESIS_HOOKS": "tests.backend.test_schemathesis", "PYTHONPATH": str(Path.cwd())}
            print(" ".join(f"{k}={v}" for k, v in hooks.items()), shlex.join(command), flush=True)  # noqa: T201
            env = {**os.environ, **hooks}
            print(config_file.read_text(), flush=True)  # noqa: T201
            return subprocess.call(command, env=env)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
