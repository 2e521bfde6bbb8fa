"""`v2g run`: the metering service and the platform from one configuration file, as processes a
supervisor keeps running; a crashed child is started again, SIGTERM stops everything cleanly, and a
supervisor killed outright leaves no process behind."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.operations.test_operate_cli import env, free_port


class Run:
    """``v2g run --config FILE`` as its own process, its output read line by line."""

    def __init__(self, cwd: Path, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "run", "--config", str(config)],
            cwd=cwd,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 90) -> re.Match[str]:
        """The first line from line ``after`` on that matches ``pattern`` (waiting for it to come)."""
        deadline = time.monotonic() + timeout
        seen = after
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                found = re.search(pattern, line)
                if found:
                    return found
            seen = max(seen, len(self.lines))
            try:
                self.lines.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                assert self.process.poll() is None or not self._queue.empty(), "\n".join(self.lines)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))


def configuration(tmp_path: Path) -> tuple[Path, int, int]:
    """A v2g.toml on free ports; the file, the API's port and the meter's."""
    csms, api, meter = free_port(), free_port(), free_port()
    config = tmp_path / "v2g.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "plant.sqlite"}"\n'
        f"csms_port = {csms}\napi_port = {api}\nmeter_port = {meter}\nimport_limit_kw = 150.0\n"
    )
    return config, api, meter


def answers(url: str, timeout: float = 60) -> int:
    """The status of GET ``url`` once the server listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=10).status_code
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def gone(pids: list[int], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_run_supervises_the_metering_service_and_the_platform(tmp_path: Path) -> None:
    config, api, meter = configuration(tmp_path)
    run = Run(tmp_path, config)
    try:
        meter_pid = int(run.wait_for(r"^metering service started \(pid (\d+)\)").group(1))
        platform_pid = int(run.wait_for(r"^platform started \(pid (\d+)\)").group(1))
        # each serves: the meter its policy, the platform its API (and the day waits for prices, up)
        assert httpx.get(f"http://127.0.0.1:{meter}/policy", timeout=10).json()["fee_bps"] == 100
        assert answers(f"http://127.0.0.1:{api}/health") == 200
        run.wait_for(r"NoPricesError: .* until they are stored no session can be bounded \(NoCredit\)")
        # the meter key's custody: the platform's environment has no meter key, the meter's no settler's
        platform_env = Path(f"/proc/{platform_pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"V2G_METER_KEY=", b"V2G_METER_KEYSTORE=")) for v in platform_env)
        assert f"V2G_METER_URL=http://127.0.0.1:{meter}".encode() in platform_env
        # the platform crashes: it is started again, and serves again
        mark = len(run.lines)
        os.kill(platform_pid, signal.SIGKILL)
        run.wait_for(
            r"^platform exited with code -9 after \d+ s: starting it again in 1 s \(restart 1\)", mark
        )
        again = int(run.wait_for(r"^platform started \(pid (\d+)\)", mark).group(1))
        assert again != platform_pid and alive(meter_pid)
        assert answers(f"http://127.0.0.1:{api}/health") == 200
        # SIGTERM: both stopped, the supervisor exits 0, nothing left behind
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=90) == 0, "\n".join(run.lines)
        assert gone([meter_pid, again], timeout=5)
        # each process kept its JSON log: one event per line, the waiting for prices among them
        events = [
            json.loads(line)
            for line in (tmp_path / ".v2g" / "logs" / "platform.jsonl").read_text().splitlines()
        ]
        assert all({"ts", "level", "logger", "pid", "message"} <= set(e) for e in events)
        assert {e["pid"] for e in events} == {platform_pid, again}
        waited = [e for e in events if e.get("refusal") == "NoPricesError"]
        assert len(waited) == 2 and waited[0]["message"].startswith("no prices for ")  # once per process
        assert (tmp_path / ".v2g" / "logs" / "meter.jsonl").exists()
    finally:
        if run.process.poll() is None:
            run.process.kill()


@pytest.mark.slow  # 6 s; children bound to their parent (PR_SET_PDEATHSIG) are tested with anvil by default
def test_a_supervisor_killed_outright_leaves_no_process_behind(tmp_path: Path) -> None:
    config, _, _ = configuration(tmp_path)
    run = Run(tmp_path, config)
    try:
        meter_pid = int(run.wait_for(r"^metering service started \(pid (\d+)\)").group(1))
        platform_pid = int(run.wait_for(r"^platform started \(pid (\d+)\)").group(1))
        run.process.kill()
        run.process.wait(timeout=30)
        assert gone([meter_pid, platform_pid])
    finally:
        if run.process.poll() is None:
            run.process.kill()
