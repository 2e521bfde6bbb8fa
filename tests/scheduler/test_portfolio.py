"""Portfolio scale: exact blocks, coordinated shared limits against the monolithic optimum, an
independent physics check, files that round-trip, and bad input named."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scheduler.cluster import dask_client
from scheduler.datasets import load_prices
from scheduler.errors import DataFileError, DuplicateIdError, NonFiniteValueError, TargetUnreachableError
from scheduler.inputs import Horizon
from scheduler.portfolio import (
    Portfolio,
    PortfolioConfig,
    PortfolioError,
    PortfolioLimitInfeasibleError,
    generate_portfolio,
    read_portfolio,
    solve_portfolio,
    write_portfolio,
)
from scheduler.portfolio.check import check_schedule
from scheduler.portfolio.model import DR_COLUMNS

DAY = "2023-03-15"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with dask_client(None, 2, keep_objects=True) as c:
        yield c


@pytest.fixture(scope="module")
def prices() -> pd.Series:
    return load_prices().window("2023-03-14", "2023-03-17")


def physics(portfolio: Portfolio, result: Any) -> list[Any]:
    schedule = result.schedule
    return check_schedule(
        portfolio,
        np.concatenate([b.session_row for b in schedule]),
        np.concatenate([b.t for b in schedule]),
        np.concatenate([b.charge_kw for b in schedule]),
        np.concatenate([b.discharge_kw for b in schedule]),
    )


def two_homes(zone_kw: float, cap_kw: float | None = None) -> Portfolio:
    """Two homes under one zone; each EV (10 kW, η = 1) needs 2.5 kWh in the day's first half hour."""
    horizon = Horizon.day(DAY)
    start = horizon.start
    prices = np.full(96, 50.0)
    prices[0], prices[1] = 10.0, 100.0
    nodes = pd.DataFrame(
        {"node": ["Z"], "parent": [""], "import_limit_kw": [zone_kw], "export_limit_kw": [zone_kw]}
    )
    sites = pd.DataFrame(
        {
            "site": ["H1", "H2"],
            "kind": ["home", "home"],
            "node": ["Z", "Z"],
            "import_limit_kw": [17.0, 17.0],
            "export_limit_kw": [17.0, 17.0],
            "base_load_kw": [0.0, 0.0],
            "pv_kwp": [0.0, 0.0],
        }
    )
    sessions = pd.DataFrame(
        {
            "session": ["s1", "s2"],
            "vehicle": ["v1", "v2"],
            "owner": ["o1", "o2"],
            "site": ["H1", "H2"],
            "battery_kwh": [50.0, 50.0],
            "charge_kw": [10.0, 10.0],
            "discharge_kw": [0.0, 0.0],
            "soc_min": [0.0, 0.0],
            "soc_max": [1.0, 1.0],
            "eta_charge": [1.0, 1.0],
            "eta_discharge": [1.0, 1.0],
            "arrival": [start, start],
            "departure": [start + timedelta(minutes=30)] * 2,
            "arrival_kwh": [10.0, 10.0],
            "target_kwh": [12.5, 12.5],
        }
    )
    cap = None if cap_kw is None else np.full(96, cap_kw)
    return Portfolio(
        horizon, nodes, sites, sessions, prices, pd.DataFrame(columns=list(DR_COLUMNS)), cap, 0.0
    )


def test_hand_computed_zone_limit_coordinated_across_blocks_is_exact(client: Any) -> None:
    # Alone each EV charges 10 kW in the cheap first quarter hour (2.5 kWh at 10 EUR/MWh = 0.025 EUR).
    # The zone allows 12 kW: 3 kWh at 10 EUR/MWh + 2 kWh at 100 EUR/MWh = 0.03 + 0.20 = 0.23 EUR.
    free = solve_portfolio(two_homes(zone_kw=100.0), client=client, max_evs_per_block=1)
    assert free.cost_eur == pytest.approx(0.05, abs=1e-9) and free.coupled_blocks == 0
    tight = two_homes(zone_kw=12.0)
    split = solve_portfolio(
        tight, client=client, max_evs_per_block=1
    )  # one EV per block: the zone couples them
    assert split.blocks == 2 and split.coupled_blocks == 2 and split.coupling_rows == ["node Z"]
    assert split.cost_eur == pytest.approx(0.23, abs=1e-9)
    assert split.lower_bound_eur == pytest.approx(0.23, abs=1e-6)
    cold = solve_portfolio(tight, client=client, max_evs_per_block=1, warm_start=False)  # zero first prices
    assert cold.cost_eur == pytest.approx(0.23, abs=1e-9) and cold.lower_bound_eur == pytest.approx(
        0.23, abs=1e-6
    )
    whole = solve_portfolio(tight, client=client, monolithic=True)
    assert whole.cost_eur == pytest.approx(0.23, abs=1e-9) and whole.iterations == 0
    assert physics(tight, split) == []
    # a portfolio cap of 14 kW on top of a zone of 100 kW: 3.5 kWh cheap, 1.5 kWh dear = 0.035 + 0.15
    capped = two_homes(zone_kw=100.0, cap_kw=14.0)
    result = solve_portfolio(capped, client=client, max_evs_per_block=1)
    assert result.coupling_rows == ["portfolio import cap"]
    assert result.cost_eur == pytest.approx(0.185, abs=1e-9)
    assert physics(capped, result) == []


def test_independent_zones_give_exactly_the_per_zone_optima(client: Any, prices: pd.Series) -> None:
    portfolio = generate_portfolio(
        DAY, prices, PortfolioConfig(n_evs=1200, sites_per_zone=4, homes_per_feeder=60), seed=3
    )
    result = solve_portfolio(portfolio, client=client, max_evs_per_block=600)
    assert result.coupled_blocks == 0 and result.gap == 0.0 and result.blocks >= 2
    assert result.zones >= 3
    total = 0.0
    for zone in portfolio.nodes.loc[portfolio.nodes["parent"] == "", "node"]:
        nodes = portfolio.nodes[(portfolio.nodes["node"] == zone) | (portfolio.nodes["parent"] == zone)]
        sites = portfolio.sites[portfolio.sites["node"].isin(nodes["node"])]
        alone = Portfolio(
            portfolio.horizon,
            nodes.reset_index(drop=True),
            sites.reset_index(drop=True),
            portfolio.sessions[portfolio.sessions["site"].isin(sites["site"])].reset_index(drop=True),
            portfolio.prices_eur_mwh,
            portfolio.dr_events[portfolio.dr_events["node"].isin(nodes["node"])].reset_index(drop=True),
            None,
            portfolio.degradation_eur_kwh,
        )
        total += solve_portfolio(alone, client=client, monolithic=True).cost_eur
    assert result.cost_eur == pytest.approx(total, rel=1e-9)
    assert physics(portfolio, result) == []


def test_binding_shared_limits_match_the_monolithic_optimum(client: Any, prices: pd.Series) -> None:
    config = PortfolioConfig(n_evs=1500, portfolio_cap_share=0.08, feeder_kw_per_home=2.0, zone_kw_per_ev=2.0)
    portfolio = generate_portfolio(DAY, prices, config, seed=5)
    coordinated = solve_portfolio(portfolio, client=client, max_evs_per_block=300)
    whole = solve_portfolio(portfolio, client=client, monolithic=True)
    assert coordinated.coupled_blocks >= 2 and coordinated.iterations >= 2
    assert "portfolio import cap" in coordinated.coupling_rows
    assert abs(coordinated.cost_eur - whole.cost_eur) <= 1e-3 * abs(whole.cost_eur)
    assert coordinated.lower_bound_eur <= whole.cost_eur + 1e-6 * abs(whole.cost_eur)  # a true bound
    assert coordinated.gap <= 1e-3
    assert physics(portfolio, coordinated) == []
    # the shared limits bind: without the cap the same fleet is cheaper
    free = solve_portfolio(
        generate_portfolio(
            DAY, prices, PortfolioConfig(n_evs=1500, feeder_kw_per_home=2.0, zone_kw_per_ev=2.0), seed=5
        ),
        client=client,
        monolithic=True,
    )
    assert free.cost_eur < whole.cost_eur - 1.0


def test_the_physics_check_catches_a_broken_schedule(client: Any) -> None:
    tight = two_homes(zone_kw=12.0)
    result = solve_portfolio(tight, client=client, max_evs_per_block=1)
    block = result.schedule[0]
    broken = block.charge_kw.copy()
    broken[0] += 1.0  # 13 kW under a 12 kW zone, and a charger pushed to 11 kW or an EV overfilled
    others = result.schedule[1]
    found = check_schedule(
        tight,
        np.concatenate([block.session_row, others.session_row]),
        np.concatenate([block.t, others.t]),
        np.concatenate([broken, others.charge_kw]),
        np.concatenate([block.discharge_kw, others.discharge_kw]),
    )
    assert {v.what for v in found} >= {"node"}
    short = check_schedule(tight, block.session_row, block.t, block.charge_kw, block.discharge_kw)
    assert [v.what for v in short] == ["target"] and short[0].element == "s2"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_portfolio_round_trips_through_files(
    tmp_path: Path, prices: pd.Series, fmt: str, client: Any
) -> None:
    portfolio = generate_portfolio(DAY, prices, PortfolioConfig(n_evs=300, portfolio_cap_share=0.2), seed=7)
    write_portfolio(portfolio, tmp_path, fmt=fmt)
    back = read_portfolio(tmp_path)
    for name in ("nodes", "sites", "sessions", "dr_events"):
        pd.testing.assert_frame_equal(
            getattr(back, name).reset_index(drop=True),
            getattr(portfolio, name).reset_index(drop=True),
            check_dtype=False,
        )
    assert np.array_equal(back.prices_eur_mwh, portfolio.prices_eur_mwh)
    assert back.import_cap_kw is not None and portfolio.import_cap_kw is not None
    assert np.allclose(back.import_cap_kw, portfolio.import_cap_kw)
    assert back.horizon == portfolio.horizon
    a = solve_portfolio(portfolio, client=client, monolithic=True).cost_eur
    b = solve_portfolio(back, client=client, monolithic=True).cost_eur
    assert a == pytest.approx(b, rel=1e-12)


def test_generator_is_reproducible_and_shaped(prices: pd.Series) -> None:
    config = PortfolioConfig(n_evs=2000)
    a = generate_portfolio(DAY, prices, config, seed=11)
    b = generate_portfolio(DAY, prices, config, seed=11)
    pd.testing.assert_frame_equal(a.sessions, b.sessions)
    assert len(a.sessions) == 2000 and a.sessions["vehicle"].is_unique
    kinds = a.sites["kind"].value_counts()
    assert kinds["home"] == 1400 and set(kinds.index) == {"home", "depot", "public"}
    assert (a.sessions["target_kwh"] >= a.sessions["arrival_kwh"]).all()
    assert not generate_portfolio(DAY, prices, config, seed=12).sessions.equals(a.sessions)


def test_bad_portfolios_are_named(prices: pd.Series, tmp_path: Path) -> None:
    good = two_homes(zone_kw=12.0)

    def with_(**changes: Any) -> Portfolio:
        fields: dict[str, Any] = {
            "horizon": good.horizon,
            "nodes": good.nodes,
            "sites": good.sites,
            "sessions": good.sessions,
            "prices_eur_mwh": good.prices_eur_mwh,
            "dr_events": good.dr_events,
            "import_cap_kw": good.import_cap_kw,
            "degradation_eur_kwh": 0.0,
        }
        fields.update(changes)
        return Portfolio(**fields)

    with pytest.raises(PortfolioError, match="site H2: unknown node Y"):
        with_(sites=good.sites.assign(node=["Z", "Y"]))
    with pytest.raises(PortfolioError, match="cycle"):
        with_(nodes=pd.concat([good.nodes.assign(parent="A"), good.nodes.assign(node="A", parent="Z")]))
    with pytest.raises(NonFiniteValueError, match="session s1: charge_kw"):
        with_(sessions=good.sessions.assign(charge_kw=[np.nan, 10.0]))
    with pytest.raises(DuplicateIdError, match="site id H1"):
        with_(sites=good.sites.assign(site=["H1", "H1"]))
    with pytest.raises(TargetUnreachableError, match="session s1"):
        with_(sessions=good.sessions.assign(target_kwh=[20.0, 12.5]))
    with pytest.raises(PortfolioLimitInfeasibleError):
        solve_portfolio(two_homes(zone_kw=9.0), workers=1, monolithic=True)  # 5 kWh in 30 min needs 10 kW
    with pytest.raises(DataFileError, match=r"day\.csv"):
        read_portfolio(tmp_path)
    write_portfolio(good, tmp_path, fmt="csv")
    (tmp_path / "sessions.csv").write_text("session,vehicle\ns1,v1\n")
    with pytest.raises(DataFileError, match="missing column"):
        read_portfolio(tmp_path)


def test_dr_event_lowers_a_zone_limit_in_its_window() -> None:
    good = two_homes(zone_kw=100.0)
    event = pd.DataFrame(
        {
            "event": ["cut"],
            "node": ["Z"],
            "start": [datetime(2023, 3, 15, 0, 5, tzinfo=UTC)],  # overlaps the first quarter hour
            "duration_s": [600.0],
            "import_limit_kw": [12.0],
        }
    )
    portfolio = Portfolio(
        good.horizon, good.nodes, good.sites, good.sessions, good.prices_eur_mwh, event, None, 0.0
    )
    imp, _ = portfolio.node_limits()
    assert imp[0, 0] == 12.0 and imp[0, 1] == 100.0
    result = solve_portfolio(portfolio, workers=1, monolithic=True)
    assert result.cost_eur == pytest.approx(0.23, abs=1e-9)  # the same as a 12 kW zone in that quarter


@pytest.mark.slow
def test_ten_thousand_evs_coordinated_within_a_tenth_of_a_percent_of_the_monolithic_optimum(
    client: Any, prices: pd.Series
) -> None:
    """The issue's figure: at 10,000 EVs with a binding portfolio cap (every block coupled), the coordinated
    plan is within 0.1 % of the one-LP optimum and the physics check finds nothing (about a minute)."""
    portfolio = generate_portfolio(
        DAY, prices, PortfolioConfig(n_evs=10_000, portfolio_cap_share=0.1), seed=0
    )
    coordinated = solve_portfolio(portfolio, client=client)
    whole = solve_portfolio(portfolio, client=client, monolithic=True)
    assert coordinated.coupled_blocks == coordinated.blocks >= 4
    assert abs(coordinated.cost_eur - whole.cost_eur) <= 1e-3 * abs(whole.cost_eur)
    assert coordinated.lower_bound_eur <= whole.cost_eur * (1 + 1e-9)
    assert physics(portfolio, coordinated) == []


def test_the_aggregate_of_the_coupled_blocks_bounds_the_optimum_and_prices_the_cap(
    client: Any, prices: pd.Series
) -> None:
    """The coupled blocks as virtual batteries: a relaxation (its cost at most the one-LP optimum), whose
    duals price the binding cap (never above zero on an upper limit)."""
    from scheduler.portfolio.aggregate import aggregate, block_envelopes
    from scheduler.portfolio.blocks import BlockModel
    from scheduler.portfolio.coordinate import block_data, layout

    config = PortfolioConfig(n_evs=1500, portfolio_cap_share=0.08, feeder_kw_per_home=2.0, zone_kw_per_ev=2.0)
    portfolio = generate_portfolio(DAY, prices, config, seed=5)
    lay = layout(portfolio, 300, target_evs=300)
    envelopes = [e for b in sorted(lay.coupled) for e in block_envelopes(block_data(portfolio, lay, b))]
    for e in envelopes:
        assert (e.lo_kwh <= e.hi_kwh + 1e-9).all() and (e.charge_kw >= 0).all()
    solved = aggregate(
        envelopes,
        np.stack([r.lower for r in lay.coupling]),
        np.stack([r.upper for r in lay.coupling]),
        portfolio.horizon.dt_h,
    )
    assert solved is not None
    duals, relaxed = solved
    whole = solve_portfolio(portfolio, client=client, monolithic=True)
    free = sum(
        BlockModel(block_data(portfolio, lay, b)).solve().cost_eur
        for b in range(len(lay.blocks))
        if b not in lay.coupled
    )
    assert relaxed + free <= whole.cost_eur + 1e-6 * abs(whole.cost_eur)
    assert duals.max() <= 1e-9 and duals.min() < -1e-6  # the cap binds somewhere, priced
    # (a run started from these duals ends at the one-LP optimum: the test above, warm_start by default)


def test_allocations_share_out_the_room_and_keep_each_blocks_share() -> None:
    """The final plans' allocations: each block's share of the master's combination, plus a part of the
    room left in the limit in proportion to its reach; they sum to the limit where it has a side."""
    from scheduler.portfolio.blocks import BlockAnswer
    from scheduler.portfolio.coordinate import _NO_LIMIT, CouplingRow, Master

    row = CouplingRow("cap", np.full(2, -_NO_LIMIT), np.array([10.0, 6.0]))
    zone = CouplingRow("zone", np.array([-4.0, -4.0]), np.array([8.0, 8.0]))
    rows_of_block = {0: np.array([0, 1]), 1: np.array([0])}
    master = Master([row, zone], [0, 1], rows_of_block, 2)
    # block 0: one column (under both rows); block 1: two columns mixed half and half (under the cap)
    master.add(BlockAnswer(0, 1.0, 1.0, np.array([[2.0, 3.0], [2.0, 3.0]]), 0.0))
    master.add(BlockAnswer(1, 1.0, 1.0, np.array([[4.0, 0.0]]), 0.0))
    master.add(BlockAnswer(1, 2.0, 2.0, np.array([[2.0, 2.0]]), 0.0))
    reach = {0: np.array([[1.0, 3.0], [5.0, 5.0]]), 1: np.array([[3.0, 1.0]])}
    out = master.allocations(np.array([1.0, 0.5, 0.5]), reach)
    # the cap: shares 2+3 = 5 of 10 (room 5) and 3+1 = 4 of 6 (room 2), shared 1:3 and 3:1 by reach
    np.testing.assert_allclose(out[0][1][0], [2.0 + 5 * 0.25, 3.0 + 2 * 0.75])
    np.testing.assert_allclose(out[1][1][0], [3.0 + 5 * 0.75, 1.0 + 2 * 0.25])
    assert np.all(out[0][0][0] == -np.inf) and np.all(out[1][0][0] == -np.inf)  # no lower side
    # the zone: block 0 alone, its share 2 and 3, the whole room to either side
    np.testing.assert_allclose(out[0][0][1], [-4.0, -4.0])
    np.testing.assert_allclose(out[0][1][1], [8.0, 8.0])
    np.testing.assert_allclose(out[0][1][0] + out[1][1][0], [10.0, 6.0])
