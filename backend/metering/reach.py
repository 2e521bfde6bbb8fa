"""How a settler reaches the metering service: at ``V2G_METER_URL`` (the service started on its own with
``v2g meter serve``), or, on a local chain only, a metering service started for one settlement as its own
process. The settler's process never loads the meter key, on any chain."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from backend.metering.replay import MeterPolicy
from backend.metering.service import MeterClient
from backend.platform import Platform, PlatformError, is_local

REPO = Path(__file__).resolve().parents[2]

#: Where a meter key would come from: never readable by a settler on a chain that is not local.
METER_KEY_VARIABLES = ("V2G_METER_KEY", "V2G_METER_KEYSTORE")


class MeterKeyInSettlerError(PlatformError):
    """The settler's own environment holds a meter key (``V2G_METER_KEY`` / ``V2G_METER_KEYSTORE``)."""


class MeterUrlRequiredError(PlatformError):
    """A metered settlement on a chain that is not local needs the metering service's URL."""


class MeterFeeMismatchError(PlatformError):
    """The settler and the metering service price with different fees."""


def _settler_secret(name: str) -> bool:
    """An environment variable with another role's key (``V2G_PRIVATE_KEYS``, ``V2G_<ROLE>_KEY``,
    ``V2G_<ROLE>_KEYSTORE`` but the meter's): never handed to the metering service."""
    return name == "V2G_PRIVATE_KEYS" or (
        name.startswith("V2G_") and name.endswith(("_KEY", "_KEYSTORE")) and not name.startswith("V2G_METER_")
    )


def meter_environment(env: dict[str, str]) -> dict[str, str]:
    """The metering service's environment from ``env``: none of the settler's keys; on a local chain keyed
    by ``V2G_PRIVATE_KEYS`` (admin, settler, auditor, meter), the fourth as its meter key."""
    out = {k: v for k, v in env.items() if not _settler_secret(k)}
    positional = [k.strip() for k in env.get("V2G_PRIVATE_KEYS", "").split(",") if k.strip()]
    if len(positional) >= 4 and not any(out.get(v) for v in METER_KEY_VARIABLES):
        out["V2G_METER_KEY"] = positional[3]
    return out


@contextlib.contextmanager
def metering_service(
    database_url: str, fee_bps: int, clock_tolerance_s: float | None = None
) -> Iterator[str]:
    """Start the metering service as its own process (bound to this one: it dies with it); yields its URL.

    For local chains only (the dev meter key is derived inside that process): with a real chain the
    metering service is started on its own (``v2g meter serve``) and reached at ``V2G_METER_URL``."""
    from backend.chain.client import _die_with_parent

    env = meter_environment(dict(os.environ))
    env.pop("V2G_METER_URL", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable,
        "-m",
        "backend.metering.service",
        "--db",
        database_url,
        "--fee-bps",
        str(fee_bps),
    ]
    if clock_tolerance_s is not None:
        command += ["--clock-tolerance-s", str(clock_tolerance_s)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env=env,
        preexec_fn=_die_with_parent,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("metering service on "):
            raise RuntimeError(f"the metering service did not start: {line!r}")
        yield line.removeprefix("metering service on ")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def meter_url_for(platform: Platform, meter_url: str | None) -> str | None:
    """The metering service to ask: ``meter_url``, else ``V2G_METER_URL``; ``None`` on a local chain means
    "start one for this settlement". The settler never holds the meter key: on a chain that is not local
    its environment must not carry one."""
    url = meter_url or os.environ.get("V2G_METER_URL") or None
    if not is_local(platform.chain):
        held = [v for v in METER_KEY_VARIABLES if os.environ.get(v)]
        if held:
            raise MeterKeyInSettlerError(
                f"{', '.join(held)} is set in the settler's environment: the meter key belongs to the "
                "metering service alone (start it with v2g meter serve and give its URL as V2G_METER_URL)"
            )
        if url is None:
            raise MeterUrlRequiredError(
                "set V2G_METER_URL to the metering service (v2g meter serve) for a chain that is not local"
            )
    return url


@contextlib.contextmanager
def meter_for(
    platform: Platform,
    fee_bps: int,
    *,
    meter_url: str | None = None,
    clock_tolerance_s: float | None = None,
) -> Iterator[tuple[MeterClient, MeterPolicy]]:
    """The metering service for one settlement (reached, or started on a local chain) and its policy,
    checked to price with ``fee_bps``."""
    url = meter_url_for(platform, meter_url)
    starter = (
        contextlib.nullcontext(url)
        if url is not None
        else metering_service(platform.database_url, fee_bps, clock_tolerance_s)
    )
    with starter as service_url:
        client = MeterClient(service_url)
        meter_fee, policy = client.policy()
        if meter_fee != fee_bps:
            raise MeterFeeMismatchError(
                f"the metering service at {service_url} prices with a fee of {meter_fee} bps, not {fee_bps}"
            )
        yield client, policy
