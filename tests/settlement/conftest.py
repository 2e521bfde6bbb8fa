"""A solved day for a small real fleet, its trades and tariff, and a fresh chain + database per use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backend.chain.client import Chain
from backend.chain.deploy import Actors, DeploymentRecord, deploy
from backend.db.session import session_factory
from backend.settlement.job import SettlementJob
from backend.settlement.pipeline import fund_escrow, local_owner_accounts
from backend.settlement.signing import sign_period_root
from backend.settlement.tariff import Tariff
from scheduler.datasets import load_prices
from scheduler.fleet import FleetConfig, fleet_problem
from scheduler.schedule import Schedule, Trade, to_trades
from scheduler.solve import solve

UNIT = 10**6


@dataclass
class Day:
    schedule: Schedule
    trades: list[Trade]
    tariff: Tariff
    addresses: dict[str, str]


@pytest.fixture(scope="session")
def day() -> Day:
    problem = fleet_problem("2023-07-03", load_prices().eur_mwh, FleetConfig(n_evs=12, v2g_share=0.5), seed=4)
    schedule = solve(problem)
    trades = to_trades(schedule)
    tariff = Tariff.from_market(
        list(problem.horizon.timestamps.to_pydatetime()),
        list(problem.prices.buy_eur_mwh),
        list(problem.prices.sell_eur_mwh),
        fee_bps=100,
    )
    owners = sorted({t.owner for t in trades})
    addresses = {o: str(a.address) for o, a in local_owner_accounts(owners).items()}
    return Day(schedule, trades, tariff, addresses)


@dataclass
class Setup:
    chain: Chain
    record: DeploymentRecord
    actors: Actors
    sessions: sessionmaker[Session]

    def job(self, **kwargs: object) -> SettlementJob:
        # the test plays the metering service: it signs with the dev meter key (the product never does
        # outside the metering service's own process)
        kwargs.setdefault("meter_signer", partial(sign_period_root, self.actors.meter))
        return SettlementJob(self.sessions, self.chain, self.record, self.actors, travel_time=True, **kwargs)  # type: ignore[arg-type]


def make_setup(day: Day, database: Path | str, chain: Chain | None = None) -> Setup:
    """A fresh chain and the database ``database`` (a SQLite file's path, or a URL)."""
    chain = chain or Chain.eth_tester()
    record = deploy(chain, liveness_s=3600)
    actors = Actors.of(chain)
    sessions = session_factory(f"sqlite:///{database}" if isinstance(database, Path) else database)
    # escrow: owners hold 20 tokens each (odd owners only 1, to exercise debts), aggregator 500
    amounts = {a: (20 if i % 2 == 0 else 1) * UNIT for i, a in enumerate(sorted(day.addresses.values()))}
    fund_escrow(chain, record, actors, amounts, aggregator_float=500 * UNIT)
    return Setup(chain, record, actors, sessions)


@pytest.fixture
def setup(day: Day, tmp_path: Path) -> Iterator[Setup]:
    s = make_setup(day, tmp_path / "v2g.sqlite")
    yield s
    s.chain.close()
