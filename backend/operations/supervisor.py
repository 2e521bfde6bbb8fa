"""``v2g run``: the whole live platform from one configuration, its processes supervised.

Two children, each its own process with its own keys:

- the **metering service** (``v2g meter serve`` on ``meter_port``): it alone holds the meter key
  (``V2G_METER_KEY`` / ``V2G_METER_KEYSTORE``, or a local chain's dev key), and none of the settler's;
- the **platform** (``v2g operate``): the CSMS, the re-planning loop, the API and the portal, the jobs on
  the market's clock (settle each ended day, finalise, import prices), the OpenADR VEN when configured.
  It reaches the metering service at ``V2G_METER_URL`` and never sees the meter key.

A child that exits while the platform runs is logged and started again (after 1 s, doubling to at most
60 s while it keeps failing within a minute of its start); SIGTERM or SIGINT stops both (the platform
first, then the meter), waiting for each to finish its work, and the supervisor exits 0. Each child is
bound to the supervisor (``PR_SET_PDEATHSIG``): killed outright, the supervisor leaves no process behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend.config import Settings
from backend.metering.reach import METER_KEY_VARIABLES, REPO, meter_environment

logger = logging.getLogger(__name__)

#: The longest wait before a child that keeps failing is started again, seconds.
BACKOFF_MAX_S = 60.0
#: A child that ran this long before it exited is started again at once (its backoff reset), seconds.
STEADY_S = 60.0


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str]
    #: a line the child prints on stdout once it serves (None: started is enough)
    ready: str | None = None
    process: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    _pump: threading.Thread | None = field(default=None, repr=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "backend.cli", *args]


def platform_children(
    settings: Settings, *, database_url: str, chain: str | None, fee_bps: int
) -> list[Child]:
    """The metering service and the platform, configured from ``settings``."""
    base = dict(os.environ)
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    logs = Path(settings.log_file).parent if settings.log_file else Path(settings.data_dir) / "logs"
    meter_env = meter_environment(base)
    meter_env.pop("V2G_METER_URL", None)
    platform_env = {k: v for k, v in base.items() if k not in METER_KEY_VARIABLES}
    positional = [k.strip() for k in base.get("V2G_PRIVATE_KEYS", "").split(",") if k.strip()]
    if len(positional) >= 4:  # admin, settler, auditor, meter: the meter's goes to the meter alone
        from eth_account import Account

        platform_env["V2G_PRIVATE_KEYS"] = ",".join(positional[:3])
        platform_env.setdefault("V2G_METER_ADDRESS", Account.from_key(positional[3]).address)
    platform_env["V2G_METER_URL"] = f"http://127.0.0.1:{settings.meter_port}"
    # each process its own JSON log (two writers of one file would fight over its rotation)
    meter_env["V2G_LOG_FILE"] = str(logs / "meter.jsonl")
    platform_env["V2G_LOG_FILE"] = str(logs / "platform.jsonl")
    chain_args = ["--chain", chain] if chain else []
    meter = Child(
        "metering service",
        _cli(
            "meter",
            "serve",
            "--db",
            database_url,
            "--port",
            str(settings.meter_port),
            "--fee-bps",
            str(fee_bps),
        ),
        meter_env,
        ready="metering service on ",
    )
    platform = Child(
        "platform",
        _cli(
            "operate",
            "--db",
            database_url,
            *chain_args,
            "--fee-bps",
            str(fee_bps),
            "--host",
            str(settings.host),
            "--port",
            str(settings.csms_port),
            "--api-port",
            str(settings.api_port),
            "--import-limit-kw",
            str(settings.import_limit_kw),
            "--export-limit-kw",
            str(settings.export_limit_kw),
        ),
        platform_env,
        ready="CSMS on ",
    )
    return [meter, platform]


class Supervisor:
    def __init__(self, children: list[Child], say: Callable[[str], None]) -> None:
        self.children = children
        self.say = say
        self.stopping = threading.Event()

    def _start(self, child: Child, deadline_s: float = 120.0) -> None:
        from backend.chain.client import _die_with_parent

        child.process = subprocess.Popen(
            child.command,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's own named errors and logs, as they come
            text=True,
            env=child.env,
            preexec_fn=_die_with_parent,
        )
        child.started_at = time.monotonic()
        ready = threading.Event()

        def pump(process: subprocess.Popen[str]) -> None:
            assert process.stdout is not None
            for line in process.stdout:
                text = line.rstrip("\n")
                if child.ready and text.startswith(child.ready):
                    ready.set()
                self.say(f"[{child.name}] {text}")
            ready.set()

        child._pump = threading.Thread(target=pump, args=(child.process,), daemon=True)
        child._pump.start()
        if child.ready:
            ready.wait(timeout=deadline_s)
        self.say(f"{child.name} started (pid {child.process.pid})")

    def run(self) -> int:
        """Start the children in order, keep them running until SIGTERM/SIGINT, then stop them; 0."""
        previous = {
            sig: signal.signal(sig, lambda *_: self.stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self.children:
                if not self.stopping.is_set():
                    self._start(child)
            while not self.stopping.is_set():
                for child in self.children:
                    process = child.process
                    if process is None or process.poll() is None:
                        continue
                    ran = time.monotonic() - child.started_at
                    if ran >= STEADY_S:
                        child.backoff_s = 1.0
                    child.restarts += 1
                    self.say(
                        f"{child.name} exited with code {process.returncode} after {ran:.0f} s: "
                        f"starting it again in {child.backoff_s:.0f} s (restart {child.restarts})"
                    )
                    if self.stopping.wait(child.backoff_s):
                        break
                    child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
                    self._start(child)
                self.stopping.wait(0.2)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _stop_all(self) -> None:
        for child in reversed(self.children):  # the platform first: it may be asking the meter to sign
            process = child.process
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop within 60 s: killed")
                process.kill()
                process.wait()
            if child._pump is not None:
                child._pump.join(timeout=5)
            code = process.returncode
            how = "on SIGTERM" if code == -signal.SIGTERM else f"with code {code}"
            self.say(f"{child.name} stopped {how}")
