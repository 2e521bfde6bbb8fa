"""Several CSMS processes on one PostgreSQL database: ``v2g operate --csms-workers N``.

How a station reaches its process. Every CSMS process listens on the same port with ``SO_REUSEPORT``;
the kernel hands each new connection to one of them (a hash of the connection's addresses), so the
stations spread over the processes with no proxy in front. The process that accepts a station writes
``csms_links`` (station → process) at the handshake and removes it when the connection ends; if the
station was held by another process (it reconnected while its old connection lingered there), that
process is told to close the old one (as :class:`~backend.operations.csms.Csms` does within a process).

What each process does on its own: the handshake (registry, password, OCPP version), every message
stored and answered (the field store is the database they share), the credit gate (the chain, read).

What runs once, here in the coordinator: the operations loop (state from the database, one plan for
the fleet). A profile for a station is a row of ``csms_commands`` and a ``NOTIFY`` on
:data:`CALLS`; the process that holds the station sends it, stores the profile and the answer as it
does alone, and answers on :data:`ANSWERS`. A station no process holds is ``Offline`` at once. The
processes tell the coordinator of arrivals, departures and (re)connections on :data:`FIELD`, which
re-plan as they do within one process.

When a process dies. Its connections drop; the coordinator removes its ``csms_links`` rows, so the
loop sees its stations offline, and starts it again (after 1 s, doubling to 30 s while it keeps
dying). The stations reconnect as OCPP has them do; the kernel hands them to a process that listens,
and the loop sends their profiles again at the reconnection, as within one process. A message a
station sent that got no answer is sent again by the station; the field store takes it once.

SQLite stays the one-process default: its writers cannot share the file across processes at this
rate, and it has no NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, Text, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from backend import jsontext
from backend.db.models import CsmsCommand, CsmsLink
from backend.db.session import bound_chunks
from backend.operations.csms import REPLACED, Csms, CsmsStats, profile_record
from backend.operations.field import GroupCommit
from backend.platform import PlatformError

logger = logging.getLogger(__name__)

#: coordinator → processes: ``"<process>|<command id> <station id>;..."``, calls for the process that
#: holds each station (it answers ``Offline`` if the station has left it meanwhile)
CALLS = "v2g_csms_calls"
#: a process → the coordinator: ``"<command id> <status>;..."``
ANSWERS = "v2g_csms_answers"
#: a process → the coordinator: ``"<event> <station id>"`` (connected, disconnected, boot, arrival, ...),
#: and ``"stats <pid> <messages>"``: the OCPP messages the process has received since it started
FIELD = "v2g_field"
#: How often a process tells the coordinator its message count (when it changed), seconds.
STATS_S = 2.0
#: The environment variable that gives a CSMS process its database URL.
POOL_DB = "V2G_CSMS_POOL_DB"
#: How long the coordinator waits for a station's answer to a call: the station's own 30 s and the trip.
CALL_TIMEOUT_S = 35.0
#: The longest wait before a process that keeps dying is started again, seconds.
BACKOFF_MAX_S = 30.0
#: Calls older than an hour are removed this often, seconds.
SWEEP_S = 600.0
#: A NOTIFY payload is at most 8,000 bytes: longer lists of calls or answers go in several.
NOTE_BYTES = 7_000


def chunks(items: list[str], head: str = "") -> list[str]:
    """``items`` joined by ``;`` into payloads of at most :data:`NOTE_BYTES`, each after ``head``."""
    out: list[str] = []
    part: list[str] = []
    size = len(head)
    for item in items:
        if part and size + len(item) + 1 > NOTE_BYTES:
            out.append(head + ";".join(part))
            part, size = [], len(head)
        part.append(item)
        size += len(item) + 1
    if part:
        out.append(head + ";".join(part))
    return out


class CsmsStartError(PlatformError):
    """A CSMS process of the pool that exited, or did not listen, as the pool started."""


class CsmsWorkersNeedPostgresError(ValueError):
    """``--csms-workers`` on a database that is not PostgreSQL."""


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL ``postgresql+psycopg://...`` as libpq takes it."""
    scheme, _, rest = url.partition("://")
    if not scheme.startswith("postgresql"):
        raise CsmsWorkersNeedPostgresError(
            f"--csms-workers needs PostgreSQL (NOTIFY, and writers in several processes): {scheme}:// is not"
        )
    return f"postgresql://{rest}"


def drop_links(sessions: sessionmaker[Session], worker: int | None) -> None:
    """The process ``worker`` holds no station any more (it stopped or died; ``None``: no process holds
    any, as the pool starts)."""
    with sessions() as session, session.begin():
        gone = delete(CsmsLink) if worker is None else delete(CsmsLink).where(CsmsLink.worker == worker)
        session.execute(gone)


class Channel:
    """LISTEN on some channels (one connection, autocommit) and NOTIFY on others (another one)."""

    def __init__(self, url: str, listen: list[str], handler: Callable[[str, str], None]) -> None:
        self.url = libpq_url(url)
        self.listen = listen
        self.handler = handler
        self._listening: Any = None
        self._sending: Any = None
        self._lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._listen()
        self._pump = asyncio.create_task(self._run())

    async def _listen(self) -> None:
        import psycopg

        self._listening = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        for channel in self.listen:
            await self._listening.execute(f"LISTEN {channel}")

    async def _run(self) -> None:
        """Hand each note to the handler; a connection that drops (the database restarted) is made
        again, once a second, logged (the calls of the notes lost meanwhile time out and are sent
        again at the next re-plan)."""
        while True:
            try:
                async for note in self._listening.notifies():
                    try:
                        self.handler(note.channel, note.payload)
                    except Exception:  # one bad note must not end the listening
                        logger.exception("notification %s %r", note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "LISTEN %s lost (%s: %s): connecting again", self.listen, type(exc).__name__, exc
                )
            while True:
                await asyncio.sleep(1.0)
                try:
                    await self._listen()
                    break
                except Exception as exc:
                    logger.warning("LISTEN %s: %s: %s", self.listen, type(exc).__name__, exc)

    async def notify(self, channel: str, payload: str) -> None:
        import psycopg

        async with self._lock:
            for attempt in (1, 2):  # a connection that dropped is made again once
                try:
                    if self._sending is None or self._sending.closed:
                        self._sending = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                    await self._sending.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                    return
                except psycopg.OperationalError:
                    self._sending = None
                    if attempt == 2:
                        raise

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        for conn in (self._listening, self._sending):
            if conn is not None:
                await conn.close()


# --- a CSMS process ----------------------------------------------------------------------------------


class Command(NamedTuple):
    """A call handed to this process, as read from ``csms_commands``."""

    id: int
    station_id: str
    kind: str
    body: dict[str, Any]


class Worker:
    """One CSMS process of the pool: a :class:`Csms` on the shared port that takes its calls from the
    database and reports its stations' events."""

    def __init__(self, number: int, csms: Csms, url: str) -> None:
        self.number = number
        self.csms = csms
        self.sessions = csms.sessions
        self.channel = Channel(url, [CALLS], self._on_note)
        self._tasks: set[asyncio.Task[None]] = set()
        #: the stations' events, reported in the order they happened (a station's link is written before
        #: its BootNotification is reported, so the profiles the boot brings find where to go)
        self._events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._reporter: asyncio.Task[None] | None = None
        self._stats: asyncio.Task[None] | None = None
        self._answers: list[tuple[int, str]] = []
        self._answering: asyncio.Task[None] | None = None
        csms.on_event = self._on_event

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, kind: str, station_id: str) -> None:
        self._events.put_nowait((kind, station_id))

    async def _report(self) -> None:
        while True:
            kind, station_id = await self._events.get()
            try:
                await self._event(kind, station_id)
            except Exception:  # the database or the channel: logged; the next event is reported
                logger.exception(
                    "CSMS process %d: event %s of %s not reported", self.number, kind, station_id
                )

    async def _event(self, kind: str, station_id: str) -> None:
        if kind == "connected":
            if station_id not in self.csms.stations:  # gone again (to another process) meanwhile
                return
            held_by = await asyncio.to_thread(self._link, station_id)
            if held_by is not None and held_by != self.number:  # its old connection is in another process
                # closed there if it is older than this one (not a newer one it may have made since)
                before = {"before": datetime.now(UTC).isoformat()}
                command = await asyncio.to_thread(self._command, station_id, "close", before)
                await self.channel.notify(CALLS, f"{held_by}|{command} {station_id}")
        elif kind == "disconnected":
            await asyncio.to_thread(self._unlink, station_id)
        await self.channel.notify(FIELD, f"{kind} {station_id}")

    def _link(self, station_id: str) -> int | None:
        """Record that this process holds the station; return who held it before (None: nobody)."""
        with self.sessions() as session, session.begin():
            row = session.get(CsmsLink, station_id, with_for_update=True)
            before = None if row is None else row.worker
            if row is None:
                session.add(
                    CsmsLink(station_id=station_id, worker=self.number, connected_at=datetime.now(UTC))
                )
            else:
                row.worker, row.connected_at = self.number, datetime.now(UTC)
        return before

    def _unlink(self, station_id: str) -> None:
        with self.sessions() as session, session.begin():
            session.execute(
                delete(CsmsLink).where(CsmsLink.station_id == station_id, CsmsLink.worker == self.number)
            )

    def _command(self, station_id: str, kind: str, body: dict[str, Any]) -> int:
        with self.sessions() as session, session.begin():
            row = CsmsCommand(station_id=station_id, kind=kind, body=body, created_at=datetime.now(UTC))
            session.add(row)
            session.flush()
            return int(row.id)

    def _on_note(self, channel: str, payload: str) -> None:
        worker, _, calls = payload.partition("|")
        if int(worker) != self.number:
            return
        items = [c.split(" ") for c in calls.split(";")]
        self._spawn(self._calls({int(command): station_id for command, station_id in items}))

    async def _calls(self, calls: dict[int, str]) -> None:
        try:
            rows = await asyncio.to_thread(self._load, list(calls))
        except Exception as exc:  # the database: the calls time out at the coordinator, sent again later
            logger.error(
                "CSMS process %d: %d calls not read: %s: %s", self.number, len(calls), type(exc).__name__, exc
            )
            return
        for row in rows:
            self._spawn(self._call(row))

    async def _call(self, row: Command) -> None:
        try:
            status = await self._execute(row)
            if row.kind == "set_profile" and status != "Offline":
                status += "+"  # the profile and its answer are stored (charging_profiles) by this process
        except Exception as exc:  # the station's link or the database: named, and the caller answered
            logger.error(
                "CSMS process %d: call %d to %s failed: %s: %s", self.number, row.id, row.station_id,
                type(exc).__name__, exc,
            )  # fmt: skip
            status = "Failed"
        self._answers.append((int(row.id), status))
        if self._answering is None or self._answering.done():
            self._answering = asyncio.get_running_loop().create_task(self._answer_all())

    async def _execute(self, row: Command) -> str:
        station_id = row.station_id
        if row.kind == "close":
            link = self.csms.stations.get(station_id)
            since = self.csms.connected_at.get(station_id)
            if link is not None and since is not None and since < datetime.fromisoformat(row.body["before"]):
                logger.info("station %s connected to another CSMS process: closing it here", station_id)
                await link._connection.close(REPLACED, "replaced by a new connection")
            return "Closed"
        if station_id not in self.csms.stations:
            return "Offline"  # it left this process since the call was handed over
        if row.kind == "set_profile":
            return await self.csms.set_profile(station_id, int(row.body["evse_id"]), row.body["profile"])
        if row.kind == "request_stop":
            return await self.csms.request_stop(station_id, str(row.body["transaction_id"]))
        return "Failed"

    def _load(self, commands: list[int]) -> list[Command]:
        """The calls not answered yet (a call handed over twice is made once)."""
        body = CsmsCommand.body.cast(Text)  # as written (by the coordinator: jsontext), read by orjson
        with self.sessions() as session:
            return [
                Command(command, station_id, kind, jsontext.loads_own(written))
                for command, station_id, kind, written in session.execute(
                    select(CsmsCommand.id, CsmsCommand.station_id, CsmsCommand.kind, body).where(
                        CsmsCommand.id.in_(commands), CsmsCommand.status.is_(None)
                    )
                )
            ]

    async def _answer_all(self) -> None:
        """Store the answers that came meanwhile (one transaction) and tell the coordinator (one NOTIFY
        per few hundred)."""
        while self._answers:
            await asyncio.sleep(0.005)  # the answers of one re-plan arrive together
            batch, self._answers = self._answers, []
            try:
                await asyncio.to_thread(self._store_answers, batch)
                for note in chunks([f"{command} {status}" for command, status in batch]):
                    await self.channel.notify(ANSWERS, note)
            except Exception as exc:  # the coordinator's wait times out; the calls are sent again
                logger.error(
                    "CSMS process %d: %d answers not reported: %s: %s",
                    self.number, len(batch), type(exc).__name__, exc,
                )  # fmt: skip

    def _store_answers(self, answers: list[tuple[int, str]]) -> None:
        now = datetime.now(UTC)
        by_status: dict[str, list[int]] = {}
        for command, status in answers:
            by_status.setdefault(status.rstrip("+"), []).append(command)
        commands_table = cast(Table, CsmsCommand.__table__)  # Core: no ORM bulk-update bookkeeping
        with self.sessions() as session, session.begin():  # a statement per answer given, not per call
            for status, commands in by_status.items():
                for chunk in bound_chunks(commands):
                    session.execute(
                        update(commands_table)
                        .where(commands_table.c.id.in_(chunk))
                        .values(status=status, answered_at=now)
                    )

    async def start(self, host: str, port: int, ssl: Any = None) -> int:
        await self.channel.start()
        self._reporter = asyncio.create_task(self._report())
        self._stats = asyncio.create_task(self._publish_stats())
        return await self.csms.start(host, port, ssl=ssl, reuse_port=True)

    async def _publish_stats(self) -> None:
        """The process's message count to the coordinator, every :data:`STATS_S` while it grows (its
        ``/metrics`` sums the processes)."""
        told = -1
        while True:
            await asyncio.sleep(STATS_S)
            messages = self.csms.stats.messages
            if messages != told:
                try:
                    await self.channel.notify(FIELD, f"stats {os.getpid()} {messages}")
                    told = messages
                except Exception as exc:  # the database: told again at the next turn
                    logger.warning("CSMS process %d: stats not sent: %s", self.number, exc)

    async def stop(self) -> None:
        await self.csms.stop()
        deadline = time.monotonic() + 10
        while not self._events.empty() and time.monotonic() < deadline:  # what happened is reported
            await asyncio.sleep(0.05)
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        if self._stats is not None:
            self._stats.cancel()
            await asyncio.gather(self._stats, return_exceptions=True)
            with contextlib.suppress(Exception):  # its last count (the database may be gone)
                await self.channel.notify(FIELD, f"stats {os.getpid()} {self.csms.stats.messages}")
        tasks = list(self._tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._answering is not None:
            await asyncio.gather(self._answering, return_exceptions=True)
        await asyncio.to_thread(drop_links, self.sessions, self.number)
        await self.channel.stop()


# --- the coordinator ---------------------------------------------------------------------------------


class _Process:
    def __init__(self, number: int) -> None:
        self.number = number
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff_s = 1.0
        self.restarts = 0
        self.due: float | None = None  # when to start it again (monotonic), after it died


#: ``n`` ids of ``csms_commands`` from its sequence, in the order they are to be written
NEXT_COMMAND_IDS = "SELECT nextval(pg_get_serial_sequence('csms_commands', 'id')) FROM generate_series(1, %s)"


class CsmsPool:
    """The CSMS as the operations loop sees it when N processes serve the stations: the same calls as
    :class:`Csms` (``set_profile``, ``request_stop``, ``writer``, ``stations``, ``stats``), each handed
    to the process that holds the station."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        url: str,
        workers: int,
        *,
        on_event: Callable[[str, str], None] | None = None,
        worker_args: list[str] | None = None,
    ) -> None:
        libpq_url(url)  # PostgreSQL or a named error, before anything starts
        self.sessions = sessions
        self.url = url
        self.workers = [_Process(k) for k in range(workers)]
        self.worker_args = worker_args or []
        self.on_event = on_event
        self.writer = GroupCommit(sessions)
        #: ``messages``: every process's OCPP messages (what each told last, and the processes that ended)
        self.stats = CsmsStats()
        self._messages: dict[int, int] = {}  # pid → its count
        self._ended: set[int] = set()  # pids that exited: their count is in ``_ended_messages``
        self._ended_messages = 0
        self.port = 0
        self.channel = Channel(url, [ANSWERS, FIELD], self._on_note)
        self._waiting: dict[int, asyncio.Future[str]] = {}
        self._sent_to: dict[int, int] = {}  # command → the process it was handed to
        self._early: dict[int, str] = {}  # answers that came before their caller was waiting
        self._outbox: list[tuple[str, str, dict[str, Any], asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready_dir = Path(tempfile.mkdtemp(prefix="v2g-csms-"))
        self._host = "127.0.0.1"

    @property
    def stations(self) -> dict[str, int]:
        """Station → the process that holds it, now."""
        with self.sessions() as session:
            return {r.station_id: r.worker for r in session.scalars(select(CsmsLink))}

    def _on_note(self, channel: str, payload: str) -> None:
        if channel == ANSWERS:
            for answer in payload.split(";"):
                command, _, status = answer.partition(" ")  # "Accepted+": stored by the process
                future = self._waiting.pop(int(command), None)
                if future is None:  # its caller is still being handed the command's id (or gave up)
                    self._early[int(command)] = status
                    if len(self._early) > 10_000:  # answers nobody waits for any more
                        for stale in list(self._early)[:5_000]:
                            del self._early[stale]
                elif not future.done():
                    future.set_result(status)
        elif channel == FIELD:
            kind, _, station_id = payload.partition(" ")
            if kind == "stats":
                pid, _, count = station_id.partition(" ")
                if int(pid) not in self._ended:
                    self._messages[int(pid)] = int(count)
                    self.stats.messages = self._ended_messages + sum(self._messages.values())
            elif self.on_event is not None:
                self.on_event(kind, station_id)

    # --- the processes -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start the processes on ``host:port`` (0: a free port, the same for all) and wait until each
        listens (:class:`CsmsStartError` if one does not, and every process stopped). Returns the port."""
        try:
            return await self._start(host, port)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, host: str, port: int) -> int:
        await self.channel.start()
        await asyncio.to_thread(drop_links, self.sessions, None)
        self._host = host
        self.port = port or _free_port(host)
        for w in self.workers:
            self._spawn(w)
        deadline = time.monotonic() + 120
        for w in self.workers:
            while not (self._ready_dir / str(w.number)).exists():
                if w.process is not None and w.process.poll() is not None:
                    raise CsmsStartError(
                        f"CSMS process {w.number} exited with code {w.process.returncode} before it listened"
                    )
                if time.monotonic() > deadline:
                    raise CsmsStartError(f"CSMS process {w.number} did not start listening in 120 s")
                await asyncio.sleep(0.05)
        self._watch = asyncio.create_task(self._supervise())
        logger.info("%d CSMS processes listening on port %d", len(self.workers), self.port)
        return self.port

    def _spawn(self, w: _Process) -> None:
        from backend.chain.client import _die_with_parent

        (self._ready_dir / str(w.number)).unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "backend.operations.pool", "--worker", str(w.number),
            "--host", self._host, "--port", str(self.port),
            "--ready-file", str(self._ready_dir / str(w.number)), *self.worker_args,
            *(["--verbose"] if logging.getLogger().getEffectiveLevel() <= logging.INFO else []),
        ]  # fmt: skip
        # the database URL (a password in it, perhaps) through the environment, not the command line
        environment = {**os.environ, POOL_DB: self.url}
        w.process = subprocess.Popen(command, env=environment, preexec_fn=_die_with_parent)
        self._ended.discard(w.process.pid)  # a pid used again: this process's count counts
        w.started_at = time.monotonic()
        logger.info("CSMS process %d started (pid %d)", w.number, w.process.pid)

    async def _supervise(self) -> None:
        last_sweep = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(0.5)
            try:
                await self._check_processes()
                if time.monotonic() - last_sweep > SWEEP_S:
                    await asyncio.to_thread(self._sweep)
                    last_sweep = time.monotonic()
            except Exception:  # the database, a fork that failed: logged, and checked again
                logger.exception("supervising the CSMS processes")

    async def _check_processes(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if self._stopping:
                return
            if w.process is None:
                if w.due is not None and now >= w.due:  # its wait is over: started again
                    w.due = None
                    try:
                        self._spawn(w)
                    except OSError as exc:
                        logger.error("CSMS process %d not started: %s", w.number, exc)
                        w.due = now + w.backoff_s
                continue
            if w.process.poll() is None:
                continue
            code = w.process.returncode
            self._ended.add(w.process.pid)  # what it counted stays in the sum
            self._ended_messages += self._messages.pop(w.process.pid, 0)
            w.process = None
            ran = now - w.started_at
            if ran > 60:
                w.backoff_s = 1.0
            wait = w.backoff_s
            w.backoff_s = min(w.backoff_s * 2, BACKOFF_MAX_S)
            w.restarts += 1
            logger.warning(
                "CSMS process %d exited with code %s after %.0f s: its stations reconnect to the others; "
                "starting it again in %.0f s",
                w.number, code, ran, wait,
            )  # fmt: skip
            w.due = now + wait
            for command, worker in list(self._sent_to.items()):  # its calls get no answer now
                future = self._waiting.get(command)
                if worker == w.number and future is not None and not future.done():
                    future.set_result("Failed")
            await asyncio.to_thread(drop_links, self.sessions, w.number)
            if self.on_event is not None:
                self.on_event("disconnected", "")

    def _sweep(self) -> None:
        """Calls answered (or handed over) more than an hour ago are history: removed."""
        with self.sessions() as session, session.begin():
            old = datetime.now(UTC) - timedelta(hours=1)
            session.execute(delete(CsmsCommand).where(CsmsCommand.created_at < old))

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]

    # --- calls -------------------------------------------------------------------------------------

    async def _ask(self, station_id: str, kind: str, body: dict[str, Any]) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._outbox.append((station_id, kind, body, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT_S)
        except TimeoutError:
            logger.info(
                "%s to %s: no answer from its CSMS process in %.0f s", kind, station_id, CALL_TIMEOUT_S
            )
            return "Failed"

    async def _flush(self) -> None:
        """Hand the calls waiting to their processes: one transaction and a NOTIFY per process for the
        calls of a whole re-plan, which arrive together."""
        while self._outbox:
            await asyncio.sleep(0.005)
            batch, self._outbox = self._outbox, []
            try:
                handed = await asyncio.to_thread(self._commands, [(s, k, b) for s, k, b, _ in batch])
            except Exception as exc:  # the database: every call of the batch fails, by name
                logger.error(
                    "calls to %d stations not handed over: %s: %s", len(batch), type(exc).__name__, exc
                )
                handed = [None] * len(batch)
                failed = True
            else:
                failed = False
            for (_, _, _, future), one in zip(batch, handed, strict=True):
                if future.done():
                    continue
                if one is None:
                    future.set_result("Failed" if failed else "Offline")
                    continue
                command, worker = one
                if command in self._early:
                    future.set_result(self._early.pop(command))
                    continue
                self._waiting[command] = future
                self._sent_to[command] = worker
                future.add_done_callback(functools.partial(self._forget, command))

    def _forget(self, command: int, _: object = None) -> None:
        self._waiting.pop(command, None)
        self._sent_to.pop(command, None)

    def _commands(self, calls: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[int, int] | None]:
        """The calls as rows, and their NOTIFY to the processes that hold the stations, in one
        transaction: (command, process) per call; None where no process holds the station."""
        stations = sorted({station_id for station_id, _, _ in calls})
        now = datetime.now(UTC)
        with self.sessions() as session, session.begin():
            held: dict[str, int] = {}
            for chunk in bound_chunks(stations):
                query = select(CsmsLink.station_id, CsmsLink.worker).where(CsmsLink.station_id.in_(chunk))
                held.update((station_id, worker) for station_id, worker in session.execute(query))
            handed = [(station_id, kind, body) for station_id, kind, body in calls if station_id in held]
            # the ids first, then every row in one COPY: a third of the INSERT ... RETURNING's time for a
            # re-plan's 10,000 profiles (the planner's own process, on the re-plan's critical path)
            driver = session.connection().connection.driver_connection
            assert driver is not None  # a live connection of the session's transaction
            with driver.cursor() as cursor:
                cursor.execute(NEXT_COMMAND_IDS, (len(handed),))
                ids = [int(row[0]) for row in cursor.fetchall()]
                columns = "id, station_id, kind, body, created_at"
                with cursor.copy(f"COPY csms_commands ({columns}) FROM STDIN") as copy:
                    for command, (station_id, kind, body) in zip(ids, handed, strict=True):
                        copy.write_row((command, station_id, kind, jsontext.dumps(body), now))
            by_worker: dict[int, list[str]] = {}
            for command, (station_id, _, _) in zip(ids, handed, strict=True):
                by_worker.setdefault(held[station_id], []).append(f"{command} {station_id}")
            for worker, items in by_worker.items():
                for note in chunks(items, f"{worker}|"):
                    session.execute(text("SELECT pg_notify(:c, :p)"), {"c": CALLS, "p": note})
            given = iter(ids)
            return [(int(next(given)), held[s]) if s in held else None for s, _, _ in calls]

    async def set_profile(self, station_id: str, evse_id: int, profile: dict[str, Any]) -> str:
        answer = await self._ask(station_id, "set_profile", {"evse_id": evse_id, "profile": profile})
        status = answer.rstrip("+")
        self.stats.profiles_sent += 1
        if status == "Rejected":
            self.stats.profiles_rejected += 1
        if not answer.endswith("+"):  # no process stored it (offline, timed out, its process died): here
            sent_at = datetime.now(UTC)
            await self.writer.run(  # the row made in the writer: a batch written twice adds it once
                lambda s: s.add(profile_record(station_id, evse_id, profile, sent_at, status))
            )
        return status

    async def request_stop(self, station_id: str, transaction_id: str) -> str:
        return (await self._ask(station_id, "request_stop", {"transaction_id": transaction_id})).rstrip("+")

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for w in self.workers:
            if w.process is not None and w.process.poll() is None:
                w.process.send_signal(signal.SIGTERM)
        for w in self.workers:
            if w.process is not None:
                try:
                    await asyncio.to_thread(w.process.wait, 30)
                except subprocess.TimeoutExpired:
                    w.process.kill()
                    await asyncio.to_thread(w.process.wait)
        await self.channel.stop()
        await asyncio.to_thread(self.writer.close)
        with contextlib.suppress(OSError):
            for f in self._ready_dir.iterdir():
                f.unlink()
            self._ready_dir.rmdir()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- the process entry point -------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    from backend.app.settle import open_platform
    from backend.clock import platform_clock
    from backend.config import Settings
    from backend.db.session import session_factory
    from backend.operations.credit import credit_gate

    settings = Settings()
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(sig, stop.set)
    # the chain only for the credit gate (read); without the gate (a bench) the database alone
    platform = None
    if not args.no_credit_gate:
        platform = open_platform(settings, database_url=args.db, chain=args.chain, write=False, strict=False)
    try:
        ssl = None
        if args.tls_cert:
            import ssl as ssl_module

            ssl = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
            ssl.minimum_version = ssl_module.TLSVersion.TLSv1_2  # as the one-process CSMS
            ssl.load_cert_chain(args.tls_cert, args.tls_key, password=lambda: b"")
        clock = platform_clock()  # the wall clock, or a drill's (V2G_DRILL_CLOCK), as the coordinator's
        open_door = args.allow_unauthenticated
        if platform is None:
            csms = Csms(session_factory(args.db), clock, allow_unauthenticated=open_door)
        else:
            fee = args.fee_bps if args.fee_bps is not None else settings.fee_bps
            csms = Csms(
                platform.sessions, clock, credit=credit_gate(platform, fee), allow_unauthenticated=open_door
            )
        worker = Worker(args.worker, csms, args.db)
        await worker.start(args.host, args.port, ssl)
        Path(args.ready_file).touch()
        await stop.wait()
        await worker.stop()
    finally:
        if platform is not None:
            platform.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One CSMS process of `v2g operate --csms-workers N`.")
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chain", default=None)
    parser.add_argument("--fee-bps", type=int, default=None)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--no-credit-gate", action="store_true")
    parser.add_argument("--allow-unauthenticated", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.db = os.environ.get(POOL_DB)
    if not args.db:
        parser.error(f"{POOL_DB} is not set (the coordinator gives it)")
    from backend.config import Settings
    from backend.logs import configure
    from backend.runtime import tune_gc

    configure(verbose=args.verbose, log_file=Settings().log_file)  # as the platform's own process logs
    tune_gc()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
