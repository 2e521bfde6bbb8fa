"""Sessions authorised against the owner's free escrow (issue 24, Deliver 3): real stations over real
websockets, a real chain holding the escrow, exposures computed by hand from the stored prices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select, update

from backend.chain.client import Chain
from backend.chain.contracts import SettlementClient, TokenClient
from backend.chain.deploy import Actors, deploy
from backend.db.models import OcppTransaction, Owner
from backend.db.session import migrate, session_factory
from backend.operations.credit import ChainBusyError, CreditGate, chain_escrow
from backend.operations.csms import Csms
from backend.operations.loop import OperationsLoop
from backend.settlement.tariff import eur_mwh_to_base_per_kwh
from scheduler.datasets import load_prices
from tests.operations.hostile import Clock, Field, register, register_value
from tests.threads import held_elsewhere

FEE_BPS = 100


def session_exposure(clock: Clock) -> int:
    """60 kWh at the highest price from an hour back to 48 hours ahead, plus 1 % (by hand: the rule's
    own rounding is half away from zero; these prices give whole numbers)."""
    hourly = load_prices().window(clock.now - timedelta(days=1), clock.now + timedelta(days=3))
    index = pd.DatetimeIndex(hourly.index)
    lo, hi = pd.Timestamp(clock.now - timedelta(hours=1)), pd.Timestamp(clock.now + timedelta(hours=48))
    window = hourly[(index >= lo) & (index < hi)]
    price = eur_mwh_to_base_per_kwh(float(window.max()))  # base units per kWh
    value = 60 * price
    return value + (value * FEE_BPS + 5_000) // 10_000


def funded_settlement() -> tuple[Chain, Actors, SettlementClient]:
    """An embedded chain with the contracts deployed and the admin able to deposit for anyone."""
    chain = Chain.eth_tester()
    record = deploy(chain)
    actors = Actors.of(chain)
    settlement = SettlementClient.at(chain, record.settlement)
    token = TokenClient.at(chain, record.token)
    token.mint(actors.admin, actors.admin.address, 10**12)
    token.approve(actors.admin, settlement.address, 10**12)
    return chain, actors, settlement


@pytest.fixture
def anvil() -> Iterator[Chain]:
    chain = Chain.anvil()  # a node that can be stopped: a check that cannot be made refuses
    try:
        yield chain
    finally:
        chain.close()


def test_a_session_starts_only_when_the_free_escrow_covers_it(tmp_path: Path, anvil: Chain) -> None:
    url = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    migrate(url)
    sessions = session_factory(url)
    register(sessions)
    chain = anvil
    record = deploy(chain)
    actors = Actors.of(chain)
    owner_key = chain.accounts[6]  # owner-1 withdraws with its own key
    with sessions.begin() as db:
        db.execute(update(Owner).where(Owner.id == "owner-1").values(address=owner_key.address))
    settlement = SettlementClient.at(chain, record.settlement)
    token = TokenClient.at(chain, record.token)
    token.mint(actors.admin, actors.admin.address, 10**15)
    token.approve(actors.admin, settlement.address, 10**15)
    clock = Clock()
    exposure = session_exposure(clock)
    assert exposure > 0
    owner0 = "0x" + f"{1:040x}"
    settlement.deposit_for(actors.admin, owner0, exposure - 1)
    settlement.deposit_for(actors.admin, owner_key.address, 2 * exposure)
    gate = CreditGate(sessions, chain_escrow(settlement, chain.lock), FEE_BPS)

    async def run() -> dict[str, object]:
        csms = Csms(sessions, clock, credit=gate)
        await csms.start()
        field = Field(url, sessions, csms, clock)
        seen: dict[str, object] = {}
        try:
            async with field.station("st201") as a, field.station("st21") as b:
                token0 = {"idToken": {"idToken": "TOKEN0", "type": "ISO14443"}}
                seen["one unit short"] = (await a.call("Authorize", token0))[2]["idTokenInfo"]["status"]
                settlement.deposit_for(actors.admin, owner0, 1)
                seen["covered"] = (await a.call("Authorize", token0))[2]["idTokenInfo"]["status"]
                started = await a.event(
                    "Started", "T1", clock.now, [register_value(clock.now, 0)], token="TOKEN0"
                )
                seen["started"] = started[2]["idTokenInfo"]["status"]
                # the same owner's second session: the first one's exposure is open
                seen["second"] = (await b.call("Authorize", token0))[2]["idTokenInfo"]["status"]
                await a.event("Ended", "T1", clock.now, [register_value(clock.now, 0)])
                seen["after it ended"] = (await b.call("Authorize", token0))[2]["idTokenInfo"]["status"]
                # an owner who gives notice for most of its balance: what is under notice may leave
                token1 = {"idToken": {"idToken": "TOKEN1", "type": "ISO14443"}}
                seen["before notice"] = (await b.call("Authorize", token1))[2]["idTokenInfo"]["status"]
                settlement.request_withdrawal(owner_key, exposure + 1)
                seen["under notice"] = (await b.call("Authorize", token1))[2]["idTokenInfo"]["status"]
                refused = await b.event(
                    "Started", "T2", clock.now, [register_value(clock.now, 0)], token="TOKEN1"
                )
                seen["started under notice"] = refused[2]["idTokenInfo"]["status"]
                # the session answered NoCredit is open, and the operations loop plans no energy for it
                day = clock.now.replace(hour=0, minute=0, second=0, microsecond=0)
                loop = OperationsLoop(
                    csms,
                    sessions,
                    lambda: clock.now,
                    day_start=day,
                    hourly_prices=load_prices().window(day, day + timedelta(days=1)),
                    import_limit_kw=100.0,
                    export_limit_kw=0.0,
                )
                present, _, _, _ = loop._state(clock.now)
                with sessions() as session:
                    seen["answered NoCredit"] = sorted(
                        (t.station_id, t.transaction_id)
                        for t in session.scalars(
                            select(OcppTransaction).where(OcppTransaction.credit_refused)
                        )
                    )
                seen["planned"] = [p.transaction_id for p in present]
                # a check that cannot be made refuses, by name: the node is gone
                chain.close()
                seen["chain gone"] = (await a.call("Authorize", token0))[2]["idTokenInfo"]["status"]
                seen["stats"] = dict(csms.stats.rejected)
        finally:
            await csms.stop()
        return seen

    seen = asyncio.run(run())
    assert seen == {
        "one unit short": "NoCredit",
        "covered": "Accepted",
        "started": "Accepted",
        "second": "NoCredit",
        "after it ended": "Accepted",
        "before notice": "Accepted",
        "under notice": "NoCredit",
        "started under notice": "NoCredit",
        "answered NoCredit": [("st21", "T2")],
        "planned": [],
        "chain gone": "NoCredit",
        "stats": {"NoCredit": 4, "CreditCheckError": 1},
    }


def test_the_owners_standing_is_stated_in_base_units(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    migrate(url)
    sessions = session_factory(url)
    register(sessions)
    chain, actors, settlement = funded_settlement()
    settlement.deposit_for(actors.admin, "0x" + f"{1:040x}", 7_000_000)
    clock = Clock()
    credit = CreditGate(sessions, chain_escrow(settlement, chain.lock), FEE_BPS).check(
        owner_id="owner-0", at=clock.now
    )
    assert (credit.escrow.balance, credit.escrow.held, credit.open_exposure, credit.session_exposure) == (
        7_000_000,
        0,
        0,
        0,
    )
    assert credit.free == 7_000_000 and credit.allowed
    with pytest.raises(KeyError):
        CreditGate(sessions, chain_escrow(settlement, chain.lock), FEE_BPS).check(
            owner_id="nobody", at=clock.now
        )
    chain.close()


def test_a_settlement_holding_the_chain_does_not_stall_an_authorisation(tmp_path: Path) -> None:
    """A thread holds the chain (as a day's settlement does, for minutes): an owner read recently is
    answered from that read after the short wait, with the balance as it was; an owner never read is
    refused after a bounded wait (ChainBusyError: NoCredit, the station may ask again), and gets its
    balance as the settlement left it once the chain is free."""
    chain, actors, settlement = funded_settlement()
    known, new = "0x" + f"{1:040x}", "0x" + f"{2:040x}"
    settlement.deposit_for(actors.admin, known, 7_000_000)
    read = chain_escrow(settlement, chain.lock, wait_s=0.2, cached_s=60.0, uncached_wait_s=5.0)
    assert read(known).balance == 7_000_000

    def settling() -> None:  # what the settlement changes while it holds the chain
        settlement.deposit_for(actors.admin, known, 1)
        settlement.deposit_for(actors.admin, new, 5)

    with held_elsewhere(chain.lock, settling):
        started = time.monotonic()
        assert read(known).balance == 7_000_000  # as last read, not the chain in the middle of a change
        assert time.monotonic() - started < 2.0
        impatient = chain_escrow(settlement, chain.lock, wait_s=0.1, cached_s=60.0, uncached_wait_s=0.3)
        with pytest.raises(ChainBusyError):  # never read, and the chain still held: refused, not stuck
            impatient(new)
    assert read(new).balance == 5  # once the chain is free: its balance as the settlement left it
    assert read(known).balance == 7_000_001  # the chain free again: read from it
    expired = chain_escrow(settlement, chain.lock, wait_s=0.2, cached_s=0.0)
    expired(known)
    with chain.lock:  # the same thread re-enters its own lock: no cache needed
        assert expired(known).balance == 7_000_001
    chain.close()
