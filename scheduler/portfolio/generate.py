"""A realistic portfolio of any size, drawn from the ElaadNL distributions and the EV specifications.

Sites: homes (one EV each, a household connection of 3×25 A or 1×35 A, a household's base load, PV on
some roofs), depots (a fleet behind a business connection, a working-day base load, PV on some
roofs) and public sites (a few chargers). Sessions: ElaadNL arrival shares of the site's charger type
(private, workplace, public), connection time given the arrival hour, energy quantiles; EV models by
registrations, V2G-capable with probability ``v2g_share``. Grid: homes hang on low-voltage feeders of
``homes_per_feeder``; feeders, depots and public sites hang on zones (MV/LV substations) of
``sites_per_zone`` feeders and business sites. Feeder and zone limits are the headroom the grid
operator grants the portfolio (kW per site, after diversity), so congestion shows where many EVs
would charge at once. DR events: a share of zones get an evening import cut.

Same seed, day and config: the same portfolio on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from scheduler.errors import InvalidParameterError
from scheduler.fleet import _data, _weights
from scheduler.inputs import Horizon
from scheduler.portfolio.model import DR_COLUMNS, Portfolio, base_load_shape


@dataclass(frozen=True)
class PortfolioConfig:
    n_evs: int = 10_000
    home_share: float = 0.7
    depot_share: float = 0.15  # the rest are at public sites
    v2g_share: float = 0.3
    charger_kw: float = 11.0
    evs_per_depot: tuple[int, int] = (10, 80)
    evs_per_public: tuple[int, int] = (2, 12)
    homes_per_feeder: int = 120
    sites_per_zone: int = 25  # feeders and business sites per zone
    #: the headroom the operator grants per home on a feeder and per EV in a zone (kW, after diversity)
    feeder_kw_per_home: float = 4.0
    zone_kw_per_ev: float = 3.5
    pv_share: float = 0.4
    dr_share: float = 0.2
    dr_fraction: float = 0.6  # a DR event cuts the zone's import limit to this share of it
    arrival_soc: tuple[float, float] = (0.2, 0.6)
    eta: float = 0.95
    soc_min: float = 0.1
    degradation_eur_kwh: float = 0.02
    #: optional cap on the fleet's net import as a share of its total charger power
    portfolio_cap_share: float | None = None

    def __post_init__(self) -> None:
        if self.n_evs < 1:
            raise InvalidParameterError(f"n_evs = {self.n_evs} must be at least 1")
        shares = (self.home_share, self.depot_share, self.v2g_share, self.pv_share, self.dr_share)
        if not all(0 <= x <= 1 for x in shares) or self.home_share + self.depot_share > 1:
            raise InvalidParameterError("shares must lie in [0, 1] and home + depot ≤ 1")


def _sessions(
    rng: np.random.Generator, n: int, horizon: Horizon, charger_type: str, config: PortfolioConfig
) -> dict[str, np.ndarray]:
    elaad, general, v2g_models = _data()
    weekend = horizon.start.weekday() >= 5
    arrivals = elaad.arrival_weekend if weekend else elaad.arrival_weekday
    column = charger_type if charger_type in arrivals.columns else "public"
    share = arrivals[column].to_numpy() / arrivals[column].sum()
    slot = rng.choice(96, size=n, p=share)
    hours = slot // 4
    bins = np.zeros(n, dtype=np.int64)
    joint = elaad.duration_given_hour
    for h in np.unique(hours):
        at = np.flatnonzero(hours == h)
        bins[at] = rng.choice(48, size=len(at), p=joint[h])
    quarters = 2 * bins + rng.integers(1, 3, size=n)
    quantiles = elaad.energy_demand_kwh[charger_type].to_numpy()
    energy = np.maximum(np.interp(rng.uniform(0, 100, size=n), np.arange(101), quantiles), 1.0)
    is_v2g = rng.uniform(size=n) < config.v2g_share
    pick_v2g = rng.choice(len(v2g_models), size=n, p=_weights(v2g_models))
    pick_general = rng.choice(len(general), size=n, p=_weights(general))
    soc0 = rng.uniform(*config.arrival_soc, size=n)
    battery = np.where(
        is_v2g,
        np.array([m.battery_kwh for m in v2g_models])[pick_v2g],
        np.array([m.battery_kwh for m in general])[pick_general],
    )
    ac = np.where(
        is_v2g,
        np.array([m.max_ac_charge_kw for m in v2g_models])[pick_v2g],
        np.array([m.max_ac_charge_kw for m in general])[pick_general],
    )
    ac_dis = np.array([m.max_ac_discharge_kw for m in v2g_models])[pick_v2g]
    charge = np.minimum(config.charger_kw, ac)
    discharge = np.where(is_v2g, np.minimum(config.charger_kw, ac_dis), 0.0)
    arrival = pd.Timestamp(horizon.start) + pd.to_timedelta(15 * slot, unit="min")
    departure = arrival + pd.to_timedelta(15 * quarters, unit="min")
    e0 = soc0 * battery
    plugged_h = 0.25 * quarters
    target = np.minimum.reduce([e0 + energy, battery, e0 + config.eta * charge * plugged_h])
    return {
        "battery_kwh": battery,
        "charge_kw": charge,
        "discharge_kw": discharge,
        "arrival": np.asarray(arrival),
        "departure": np.asarray(departure),
        "arrival_kwh": e0,
        "target_kwh": np.maximum(target, e0),
    }


def generate_portfolio(
    day: datetime | str,
    hourly_prices: pd.Series,
    config: PortfolioConfig = PortfolioConfig(),
    *,
    seed: int = 0,
) -> Portfolio:
    """One day's portfolio of ``config.n_evs`` EVs, priced at ``hourly_prices`` (UTC index, EUR/MWh)."""
    from scheduler.inputs import Prices

    horizon = Horizon.day(day, 15)
    rng = np.random.default_rng([seed, horizon.start.toordinal(), config.n_evs])
    n = config.n_evs
    n_home = round(n * config.home_share)
    n_depot_evs = round(n * config.depot_share)
    n_public_evs = n - n_home - n_depot_evs

    def split(total: int, bounds: tuple[int, int]) -> np.ndarray:
        sizes: list[int] = []
        while sum(sizes) < total:
            sizes.append(int(rng.integers(bounds[0], bounds[1] + 1)))
        if sizes:
            sizes[-1] -= sum(sizes) - total
        return np.asarray([s for s in sizes if s > 0], dtype=np.int64)

    depot_sizes = split(n_depot_evs, config.evs_per_depot)
    public_sizes = split(n_public_evs, config.evs_per_public)
    kinds = np.concatenate(
        [np.full(n_home, "home"), np.full(len(depot_sizes), "depot"), np.full(len(public_sizes), "public")]
    )
    evs_at = np.concatenate([np.ones(n_home, np.int64), depot_sizes, public_sizes])
    n_sites = len(kinds)
    site_ids = np.char.add("S", np.char.zfill(np.arange(n_sites).astype(str), 7))
    # grid: homes on feeders, feeders and business sites on zones
    n_feeders = max(1, -(-n_home // config.homes_per_feeder)) if n_home else 0
    feeder_of_home = np.arange(n_home) // max(config.homes_per_feeder, 1)
    business = n_sites - n_home
    units = n_feeders + business  # what hangs on zones
    n_zones = max(1, -(-units // config.sites_per_zone))
    zone_of_unit = rng.permutation(np.arange(units) % n_zones)
    feeder_ids = np.char.add("F", np.char.zfill(np.arange(n_feeders).astype(str), 5))
    zone_ids = np.char.add("Z", np.char.zfill(np.arange(n_zones).astype(str), 4))
    site_node = np.concatenate([feeder_ids[feeder_of_home], zone_ids[zone_of_unit[n_feeders:]]])
    # site connections, base loads, PV
    home_kw = np.where(rng.uniform(size=n_home) < 0.6, 17.25, 8.05)
    depot_kw = 7.0 * depot_sizes + rng.uniform(20, 60, size=len(depot_sizes))
    public_kw = 0.7 * config.charger_kw * public_sizes + 5.0
    import_kw = np.concatenate([home_kw, depot_kw, public_kw])
    base = np.concatenate(
        [
            rng.uniform(0.25, 0.6, size=n_home),
            rng.uniform(5, 30, size=len(depot_sizes)),
            rng.uniform(1, 6, size=len(public_sizes)),
        ]
    )
    has_pv = rng.uniform(size=n_sites) < config.pv_share
    kwp = np.where(kinds == "home", rng.uniform(2.5, 6.0, size=n_sites), rng.uniform(20, 100, size=n_sites))
    sites = pd.DataFrame(
        {
            "site": site_ids,
            "kind": kinds,
            "node": site_node,
            "import_limit_kw": import_kw,
            "export_limit_kw": import_kw,
            "base_load_kw": base,
            "pv_kwp": np.where(has_pv, np.minimum(kwp, import_kw), 0.0),
        }
    )
    # nodes: feeders under zones, zones at the top
    feeder_zone = zone_ids[zone_of_unit[:n_feeders]]
    homes_on = np.bincount(feeder_of_home, minlength=n_feeders)
    evs_in_zone = np.zeros(n_zones)
    np.add.at(evs_in_zone, zone_of_unit, np.concatenate([homes_on, evs_at[n_home:]]).astype(float))
    nodes = pd.DataFrame(
        {
            "node": np.concatenate([zone_ids, feeder_ids]),
            "parent": np.concatenate([np.full(n_zones, ""), feeder_zone]),
            "import_limit_kw": np.concatenate(
                [config.zone_kw_per_ev * evs_in_zone + 50.0, config.feeder_kw_per_home * homes_on + 10.0]
            ),
            "export_limit_kw": np.concatenate(
                [config.zone_kw_per_ev * evs_in_zone + 50.0, config.feeder_kw_per_home * homes_on + 10.0]
            ),
        }
    )
    # sessions: one per EV, by the charger type of its site
    site_of_ev = np.repeat(np.arange(n_sites), evs_at)
    # what each EV can count on at its site: an equal share of the connection above the base load's peak
    peak_shape = {k: float(np.max(base_load_shape(k, horizon))) for k in ("home", "depot", "public")}
    peak_base = base * np.select([kinds == k for k in peak_shape], list(peak_shape.values()))
    share_kw = (import_kw - peak_base) / evs_at
    frames = []
    for kind, charger_type in (("home", "private"), ("depot", "workplace"), ("public", "public")):
        evs = np.flatnonzero(kinds[site_of_ev] == kind)
        if len(evs) == 0:
            continue
        drawn = _sessions(rng, len(evs), horizon, charger_type, config)
        # a home's charger fits its connection (a 1×35 A house has a 7.4 kW charger), and no target asks
        # for more than the EV's share of its site could deliver while plugged in
        drawn["charge_kw"] = np.minimum(
            drawn["charge_kw"], np.where(import_kw[site_of_ev[evs]] < 11.0, 7.4, 11.0)
        )
        drawn["discharge_kw"] = np.minimum(drawn["discharge_kw"], drawn["charge_kw"])
        rate = np.minimum(drawn["charge_kw"], share_kw[site_of_ev[evs]])
        plugged_h = (drawn["departure"] - drawn["arrival"]) / np.timedelta64(1, "h")
        drawn["target_kwh"] = np.maximum(
            np.minimum(drawn["target_kwh"], drawn["arrival_kwh"] + 0.98 * config.eta * rate * plugged_h),
            drawn["arrival_kwh"],
        )
        frames.append(pd.DataFrame({"ev": evs, **drawn}))
    sessions = pd.concat(frames).sort_values("ev", kind="stable").reset_index(drop=True)
    ev = sessions["ev"].to_numpy()
    ev_ids = np.char.add("EV", np.char.zfill(ev.astype(str), 7))
    sessions = pd.DataFrame(
        {
            "session": np.char.add(ev_ids, f"-{horizon.start:%Y%m%d}"),
            "vehicle": ev_ids,
            "owner": np.char.add("owner-", np.char.zfill(ev.astype(str), 7)),
            "site": site_ids[site_of_ev[ev]],
            "battery_kwh": sessions["battery_kwh"].to_numpy(),
            "charge_kw": sessions["charge_kw"].to_numpy(),
            "discharge_kw": sessions["discharge_kw"].to_numpy(),
            "soc_min": config.soc_min,
            "soc_max": 1.0,
            "eta_charge": config.eta,
            "eta_discharge": config.eta,
            "arrival": pd.to_datetime(sessions["arrival"], utc=True),
            "departure": pd.to_datetime(sessions["departure"], utc=True),
            "arrival_kwh": sessions["arrival_kwh"].to_numpy(),
            "target_kwh": sessions["target_kwh"].to_numpy(),
        }
    )
    # DR events: an evening cut on a share of zones (17:00-20:00 UTC)
    with_dr = np.flatnonzero(rng.uniform(size=n_zones) < config.dr_share)
    zone_limit = nodes["import_limit_kw"].to_numpy()[:n_zones]
    dr = pd.DataFrame(
        {
            "event": [f"DR-{zone_ids[z]}" for z in with_dr],
            "node": zone_ids[with_dr],
            "start": pd.to_datetime([horizon.start + timedelta(hours=17)] * len(with_dr), utc=True),
            "duration_s": np.full(len(with_dr), 3 * 3600.0),
            "import_limit_kw": config.dr_fraction * zone_limit[with_dr],
        },
        columns=list(DR_COLUMNS),
    )
    prices = Prices.from_hourly(horizon, hourly_prices).buy_eur_mwh
    cap = None
    if config.portfolio_cap_share is not None:
        cap = np.full(horizon.intervals, config.portfolio_cap_share * float(sessions["charge_kw"].sum()))
    return Portfolio(horizon, nodes, sites, sessions, prices, dr, cap, config.degradation_eur_kwh)


__all__ = ["UTC", "PortfolioConfig", "generate_portfolio"]
