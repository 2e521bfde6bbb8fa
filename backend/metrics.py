"""Prometheus metrics (``GET /metrics``): what an operator watches, read at scrape time.

From the database, wherever the API runs: periods by state, field refusals by reason, jobs by kind and
outcome, gas spent by transaction kind, meter readings stored, stations heard from in the last 5 minutes.
Where the CSMS and the operations loop run in the same process (`v2g operate`), also: stations connected,
OCPP messages, re-plans and their duration, profiles sent and rejected, and today's planned energy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import FieldRejection, Job, MeterReading, Period, PeriodStatus, Station, Submission


@dataclass
class Live:
    """The live parts of a `v2g operate` process: its CSMS and its current operations loop."""

    csms: Any
    loop: Callable[[], Any]


def _refusal_kinds() -> set[str]:
    """The names of every field refusal (:class:`~backend.operations.field.FieldDataError` and below)."""
    from backend.operations.field import FieldDataError

    kinds: set[str] = set()
    todo: list[type[Exception]] = [FieldDataError]
    while todo:
        sub: type[Exception]
        for sub in todo.pop().__subclasses__():
            kinds.add(sub.__name__)
            todo.append(sub)
    return kinds


class PlatformCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], live: Callable[[], Live | None]) -> None:
        self.sessions = sessions
        self.live = live

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as db:
            periods = GaugeMetricFamily("v2g_periods", "Settlement periods by state.", labels=["status"])
            # every known state and refusal is a series from the start, at 0 until it happens: an alert
            # on a rate needs the series before its first increase
            by_status = {str(s): 0 for s in PeriodStatus}
            for status, count in db.execute(select(Period.status, func.count()).group_by(Period.status)):
                by_status[str(status)] = count
            for status, count in by_status.items():
                periods.add_metric([status], count)
            yield periods
            refusals = CounterMetricFamily(
                "v2g_field_refusals", "Field data refused or flagged, by reason (named).", labels=["kind"]
            )
            by_kind = dict.fromkeys(sorted(_refusal_kinds()), 0)
            for kind, count in db.execute(
                select(FieldRejection.kind, func.count()).group_by(FieldRejection.kind)
            ):
                by_kind[kind] = count
            for kind, count in by_kind.items():
                refusals.add_metric([kind], count)
            yield refusals
            jobs = GaugeMetricFamily(
                "v2g_jobs", "Background jobs by kind and status.", labels=["kind", "status"]
            )
            for kind, status, count in db.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ):
                jobs.add_metric([kind, str(status)], count)
            yield jobs
            gas = CounterMetricFamily(
                "v2g_gas_used", "Gas used by the settlement job's mined transactions.", labels=["kind"]
            )
            for kind, used in db.execute(
                select(Submission.kind, func.coalesce(func.sum(Submission.gas_used), 0)).group_by(
                    Submission.kind
                )
            ):
                gas.add_metric([kind], int(used or 0))
            yield gas
            readings = db.scalar(select(func.count()).select_from(MeterReading)) or 0
            yield CounterMetricFamily("v2g_meter_readings", "Meter samples stored.", value=readings)
            recent = datetime.now(UTC) - timedelta(minutes=5)
            heard = (
                db.scalar(select(func.count()).select_from(Station).where(Station.last_seen >= recent)) or 0
            )
            yield GaugeMetricFamily(
                "v2g_stations_heard", "Stations heard from in the last 5 minutes.", value=heard
            )
        live = self.live()
        if live is None:
            return
        stats = live.csms.stats
        yield GaugeMetricFamily(
            "v2g_stations_connected", "Stations connected now.", value=len(live.csms.stations)
        )
        yield CounterMetricFamily("v2g_ocpp_messages", "OCPP messages received.", value=stats.messages)
        loop = live.loop()
        if loop is None:
            return
        yield CounterMetricFamily(
            "v2g_replans", "Re-plans of the fleet (today's loop).", value=loop.stats.replans
        )
        yield CounterMetricFamily(
            "v2g_replans_failed",
            "Re-plans that failed (the profiles in force stayed).",
            value=loop.stats.failed_replans,
        )
        yield CounterMetricFamily(
            "v2g_replan_sites_failed",
            "Sites a re-plan found no plan for in its time limit (their cars got the load balancer's plan).",
            value=loop.stats.failed_sites,
        )
        seconds = loop.stats.replan_seconds
        yield GaugeMetricFamily(
            "v2g_replan_seconds_last", "Duration of the last re-plan.", value=seconds[-1] if seconds else 0.0
        )
        yield CounterMetricFamily(
            "v2g_profiles_sent", "Charging profiles sent.", value=loop.stats.profiles_sent
        )
        yield CounterMetricFamily(
            "v2g_profiles_rejected",
            "Charging profiles stations rejected.",
            value=loop.stats.profiles_rejected,
        )
        # today's part of the plan (it runs past midnight once tomorrow's prices are stored)
        today, tomorrow = loop.day.start, loop.day.start + timedelta(days=1)
        yield GaugeMetricFamily(
            "v2g_planned_wh",
            "Net energy of today's plan, every interval of it (Wh, charge > 0).",
            value=sum(up - down for up, down in loop.planned_wh.totals(today, tomorrow).values()),
        )
        # what the registers moved today, beside the plan (from each transaction's first reading of the day)
        with self.sessions() as db:
            moved = db.execute(
                select(
                    func.max(MeterReading.import_wh) - func.min(MeterReading.import_wh),
                    func.max(MeterReading.export_wh) - func.min(MeterReading.export_wh),
                )
                .where(MeterReading.measured_at >= today, MeterReading.measured_at < tomorrow)
                .group_by(MeterReading.station_id, MeterReading.transaction_id)
            ).all()
        yield GaugeMetricFamily(
            "v2g_metered_wh",
            "Net energy the meters measured today (Wh, import less export), beside v2g_planned_wh.",
            value=sum(int(i or 0) - int(e or 0) for i, e in moved),
        )


def registry_of(sessions: sessionmaker[Session], live: Callable[[], Live | None]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(sessions, live))
    return registry
