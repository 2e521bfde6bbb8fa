"""The service's jobs on the market's clock, run inside the server that holds the platform (``v2g operate``,
``v2g run``; ``v2g serve`` with ``V2G_SERVICE_JOBS=true``), so that nothing has to stop for them.

An APScheduler scheduler (its job store a table of the platform's database, ``apscheduler_jobs``, so the
schedule outlives a restart) ticks; each tick only looks at the database and hands the work to the
server's job runner, as the API's own routes do: every run is a row of ``jobs`` (``GET /jobs``), crash-safe
(a job left running is run again at the next start) and idempotent.

- ``settle``: every day that has ended (plus ``settle_grace_s`` for late frames) with field data and no
  claimed period is settled metered: the use case of ``v2g settle --metered``, while the stations go on
  charging. A failed day is tried again after an hour.
- ``finalise``: a period whose challenge window has passed is finalised and claimed (``resume``).
- ``prices``: each file dropped in ``prices_drop_dir`` (the platform's CSV or an ENTSO-E A44 document) is
  imported, then moved to ``imported/`` (or ``refused/``, beside a ``.error`` file saying why).
- ``entsoe``: with ``V2G_ENTSOE_TOKEN`` set, tomorrow's day-ahead prices of ``entsoe_area`` are fetched
  from the ENTSO-E transparency platform every hour from 11:00 UTC (published about 12:45 CET) until
  stored.

Every tick also runs once when the server starts: a day that ended while it was down is settled then.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.app.settle import settler_now
from backend.db.models import Job, OcppTransaction, Period, PeriodStatus, PricePoint
from backend.metering.period import day_of, period_window

if TYPE_CHECKING:
    from backend.api.deps import AppState

logger = logging.getLogger(__name__)

#: The clock of the server running now (the function APScheduler stores is :func:`tick`, by name).
_ACTIVE: MarketClock | None = None

#: A failed job for the same day or file is not tried again before this.
RETRY_AFTER = timedelta(hours=1)
#: A dropped price file is read once it has not changed for this long (s): one still being copied waits.
INBOX_QUIET_S = 10.0
#: Days looked back for one with field data and no claimed period.
LOOK_BACK_DAYS = 62


def tick(kind: str) -> None:
    """What the scheduler runs: the active clock's tick of ``kind`` (none after the server stopped)."""
    clock = _ACTIVE
    if clock is not None:
        clock.tick(kind)


def _active(session: Session, kind: str, key: str, value: Any, since: datetime) -> bool:
    """A job of ``kind`` for ``params[key] == value`` queued or running, or failed since ``since``."""
    for job in session.scalars(
        select(Job).where(Job.kind == kind, Job.status.in_(("queued", "running", "failed")))
    ):
        if job.params.get(key) == value and (job.status != "failed" or job.updated_at >= since):
            return True
    return False


def due_days(session: Session, now: datetime, grace: timedelta) -> list[str]:
    """Days (``YYYY-MM-DD``, oldest first) that have ended by ``now - grace``, had a transaction, and have
    no period yet, or one built or signed but not proposed."""
    last = (now - grace).replace(hour=0, minute=0, second=0, microsecond=0)  # the first day not yet ended
    first = last - timedelta(days=LOOK_BACK_DAYS)
    days = []
    day = first
    while day < last:
        end = day + timedelta(days=1)
        had = session.scalar(
            select(func.count())
            .select_from(OcppTransaction)
            .where(
                OcppTransaction.started_at < end,
                (OcppTransaction.ended_at.is_(None)) | (OcppTransaction.ended_at > day),
            )
        )
        period = session.get(Period, day_of(day))
        # a proposed or finalised period is the finalise tick's (its challenge window): settling it again
        # would only recompute it, and the days after it would wait behind it
        if had and (period is None or period.status in (PeriodStatus.BUILT, PeriodStatus.SIGNED)):
            days.append(f"{day:%Y-%m-%d}")
        day = end
    return days


class MarketClock:
    def __init__(self, state: AppState, now: Callable[[], datetime] = settler_now) -> None:
        self.state = state
        self.now = now
        self.scheduler: Any = None

    # --- the scheduler ---------------------------------------------------------------------------------

    def start(self) -> None:
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        global _ACTIVE
        settings = self.state.settings
        engine = self.state.platform.sessions.kw["bind"]
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine), "start": MemoryJobStore()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        every = {"settle": settings.settle_every_s, "finalise": settings.finalise_every_s}
        if settings.prices_drop_dir:
            every["prices"] = settings.prices_every_s
        _ACTIVE = self
        scheduler.start(paused=True)  # the stored schedule open, nothing run yet
        wanted = set(every) | ({"entsoe"} if os.environ.get("V2G_ENTSOE_TOKEN") else set())
        for job in scheduler.get_jobs(jobstore="default"):
            if job.id not in wanted:  # a job of an earlier configuration (an inbox or a token since removed)
                scheduler.remove_job(job.id, jobstore="default")
        for kind, seconds in every.items():
            scheduler.add_job(tick, "interval", args=[kind], seconds=seconds, id=kind, replace_existing=True)
            scheduler.add_job(tick, args=[kind], id=f"{kind}-at-start", jobstore="start")
        if "entsoe" in wanted:
            scheduler.add_job(
                tick, "cron", args=["entsoe"], hour="11-23", minute=5, id="entsoe", replace_existing=True
            )
            scheduler.add_job(tick, args=["entsoe"], id="entsoe-at-start", jobstore="start")
        scheduler.resume()
        self.scheduler = scheduler
        logger.info("market clock: %s", ", ".join(f"{k} every {s} s" for k, s in every.items()))

    def stop(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    # --- the ticks -------------------------------------------------------------------------------------

    def tick(self, kind: str) -> None:
        try:
            {
                "settle": self._settle,
                "finalise": self._finalise,
                "prices": self._prices,
                "entsoe": self._entsoe,
            }[kind]()
        except Exception as exc:  # a tick that fails is logged; the next one tries again
            logger.error("market clock %s: %s: %s", kind, type(exc).__name__, exc)

    def _submit(self, kind: str, params: dict[str, Any]) -> None:
        job_id = self.state.runner.submit(kind, {**params, "source": "market-clock"})
        logger.info("market clock: job %d %s %s", job_id, kind, params)

    def _settle(self) -> None:
        now = self.now()
        grace = timedelta(seconds=self.state.settings.settle_grace_s)
        with self.state.sessions() as session:
            days = [
                d
                for d in due_days(session, now, grace)
                if not _active(session, "settle_metered", "date", d, now - RETRY_AFTER)
            ]
        if days:  # one day at a time, oldest first (a day's settlement may close what the next one sees)
            self._submit("settle_metered", {"date": days[0]})
            if len(days) > 1 and self.scheduler is not None:  # the next as soon as this one is done
                self.scheduler.add_job(
                    self._settle_after,
                    args=[days[0]],
                    id="settle-backlog",
                    jobstore="start",
                    replace_existing=True,
                )

    def _settle_after(self, day: str) -> None:
        """Wait for ``day``'s settlement to finish, then settle the next day due."""
        while True:
            with self.state.sessions() as session:
                waiting = session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.kind == "settle_metered", Job.status.in_(("queued", "running")))
                )
            if not waiting or _ACTIVE is not self:
                break
            time.sleep(1.0)
        if _ACTIVE is self:
            self._settle()

    def _finalise(self) -> None:
        now = self.now()
        with self.state.sessions() as session:
            periods = [
                p.id
                for p in session.scalars(
                    select(Period).where(
                        Period.status.in_(
                            (PeriodStatus.SIGNED, PeriodStatus.PROPOSED, PeriodStatus.FINALISED)
                        )
                    )
                )
                if (p.challenge_ends is None or p.challenge_ends <= now.timestamp())
                and not _active(session, "resume", "period_id", p.id, now - RETRY_AFTER)
                and not _active(
                    session, "settle_metered", "date", f"{period_window(p.id)[0]:%Y-%m-%d}", now - RETRY_AFTER
                )
            ]
        for period_id in periods:
            self._submit("resume", {"period_id": period_id})

    def _prices(self) -> None:
        if not self.state.settings.prices_drop_dir:
            return
        drop = Path(self.state.settings.prices_drop_dir)
        drop.mkdir(parents=True, exist_ok=True)
        now = self.now()
        # a file still being written (changed in the last INBOX_QUIET_S, by the file system's clock) or a
        # hidden one (scp's and rsync's temporary names) waits for a later tick
        quiet = time.time() - INBOX_QUIET_S

        def settled(path: Path) -> bool:
            try:
                return path.is_file() and path.stat().st_mtime <= quiet
            except OSError:  # moved away meanwhile (imported by a job, or by hand)
                return False

        files = sorted(
            p
            for p in drop.iterdir()
            if p.suffix.lower() in (".xml", ".csv") and not p.name.startswith(".") and settled(p)
        )
        with self.state.sessions() as session:
            files = [
                p for p in files if not _active(session, "import_prices", "file", str(p), now - RETRY_AFTER)
            ]
        for path in files:
            self._submit("import_prices", {"file": str(path)})

    def _entsoe(self) -> None:
        now = self.now()
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        with self.state.sessions() as session:
            stored = session.scalar(
                select(func.count())
                .select_from(PricePoint)
                .where(PricePoint.utc >= tomorrow, PricePoint.utc < tomorrow + timedelta(days=1))
            )
            if stored and stored >= 24:
                return
            if _active(session, "fetch_prices", "day", f"{tomorrow:%Y-%m-%d}", now - timedelta(minutes=50)):
                return
        self._submit("fetch_prices", {"day": f"{tomorrow:%Y-%m-%d}", "area": self.state.settings.entsoe_area})


# --- the jobs the ticks hand out (run by the server's job runner) ----------------------------------------


def run_import_prices(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """A dropped price file imported, then moved to ``imported/`` (or, when the file is at fault,
    ``refused/`` with its ``.error``; any other failure, a database busy or a disk full, fails the job and
    leaves the file for a later tick)."""
    from backend.app.prices import read_price_file, store_prices

    path = Path(str(params["file"]))
    if not path.is_file():
        return {"file": str(path), "status": "gone (imported or moved by another run)"}
    try:
        prices = read_price_file(path)
    except OSError:  # unreadable now (permissions, a disk): the job fails, the file waits for a later tick
        raise
    except Exception as exc:  # anything else reading it is the file's fault: refused for good
        refused = path.parent / "refused"
        refused.mkdir(exist_ok=True)
        (refused / f"{path.name}.error").write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
        shutil.move(path, refused / path.name)
        raise
    result = store_prices(state.sessions, prices.points, str(path))  # a busy database: the job fails, retried
    imported = path.parent / "imported"
    imported.mkdir(exist_ok=True)
    shutil.move(path, imported / path.name)
    return {
        "file": str(path),
        "stored": result.stored,
        "replaced": result.replaced,
        "first": result.first.isoformat(),
        "last": result.last.isoformat(),
        "note": prices.note,
        "missing_hours": sum(hours for _, hours in prices.gaps),
    }


def run_fetch_prices(state: AppState, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """A day's day-ahead prices from the ENTSO-E transparency platform (``entsoe-py``'s client)."""
    import pandas as pd

    from backend.app.prices import hourly_points, store_prices

    token = os.environ.get("V2G_ENTSOE_TOKEN")
    if not token:
        raise RuntimeError("V2G_ENTSOE_TOKEN is not set")
    from entsoe.entsoe import EntsoePandasClient

    day = pd.Timestamp(str(params["day"]), tz="UTC")
    # the market's day (CET/CEST) starts at 22:00 or 23:00 UTC the day before: ask from the day before to
    # the day after, and store every hour returned (a UTC day needs two market days)
    series = EntsoePandasClient(api_key=token).query_day_ahead_prices(
        str(params["area"]), start=day - pd.Timedelta(days=1), end=day + pd.Timedelta(days=2)
    )
    prices = hourly_points(series, f"ENTSO-E API {params['area']}")
    result = store_prices(state.sessions, prices.points, f"ENTSO-E {params['area']} {params['day']}")
    return {"day": params["day"], "stored": result.stored, "note": prices.note}
