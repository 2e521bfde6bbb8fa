"""A portfolio: many sites under a grid hierarchy, traded as one position on the day-ahead market.

Columnar on purpose (one pandas frame per kind, one row per element), so a million EVs is a few
arrays, not a million objects:

- ``nodes``: the grid hierarchy. ``node`` (id), ``parent`` ("" at the top: a substation or congestion
  zone), ``import_limit_kw``, ``export_limit_kw`` (what the operator lets the node draw / feed in, kW,
  including every site's base load and PV under it).
- ``sites``: ``site``, ``kind`` (home | depot | public), ``node`` (the feeder or zone it hangs on),
  ``import_limit_kw``, ``export_limit_kw`` (its connection), ``base_load_kw`` (mean household or
  building load, shaped by :func:`base_load_shape`), ``pv_kwp`` (PV peak, times the Dutch capacity
  factor of the day).
- ``sessions``: ``session``, ``vehicle``, ``owner``, ``site``, ``battery_kwh``, ``charge_kw``,
  ``discharge_kw``, ``soc_min``, ``soc_max``, ``eta_charge``, ``eta_discharge``, ``arrival``,
  ``departure`` (UTC), ``arrival_kwh``, ``target_kwh``.
- ``dr_events``: ``event``, ``node``, ``start`` (UTC), ``duration_s``, ``import_limit_kw``: the node may
  import at most that much in every interval the event overlaps.
- ``import_cap_kw``: optional, per interval, a cap on the EV fleet's net import over the whole portfolio
  (the aggregator's position; households' own load is bought by their retailers, so it is not in it).

Time: one UTC day of ``interval_minutes`` intervals. A session is available in the whole intervals it
covers (arrival rounded up, departure down to the interval grid). A session plugged in before the day
starts arrives with ``arrival_kwh`` at the day's start; one that leaves after the day ends needs by the
day's end only what its charger could not still add afterwards (as :mod:`scheduler.index` does).

Money and energy inside the scheduler are floats (kW, kWh, EUR/MWh), as everywhere in ``scheduler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from scheduler.datasets import DATA_DIR
from scheduler.errors import (
    DataFileError,
    DepartureBeforeArrivalError,
    DuplicateIdError,
    InvalidParameterError,
    MisalignedIntervalError,
    MissingColumnError,
    NonFiniteValueError,
    TargetAboveCapacityError,
    TargetUnreachableError,
)
from scheduler.inputs import Horizon

SITE_KINDS = ("home", "depot", "public")

NODE_COLUMNS = ("node", "parent", "import_limit_kw", "export_limit_kw")
SITE_COLUMNS = ("site", "kind", "node", "import_limit_kw", "export_limit_kw", "base_load_kw", "pv_kwp")
SESSION_COLUMNS = (
    "session",
    "vehicle",
    "owner",
    "site",
    "battery_kwh",
    "charge_kw",
    "discharge_kw",
    "soc_min",
    "soc_max",
    "eta_charge",
    "eta_discharge",
    "arrival",
    "departure",
    "arrival_kwh",
    "target_kwh",
)
DR_COLUMNS = ("event", "node", "start", "duration_s", "import_limit_kw")

#: Relative hourly shape of each kind's base load (mean 1): a household's evening peak (after the
#: Dutch standard profile E1A's winter-weekday shape, rounded), a depot's and a public site's working
#: day. Documented assumptions, not measured data.
_HOURLY_SHAPE = {
    "home": (0.6, 0.5, 0.45, 0.45, 0.45, 0.5, 0.7, 1.0, 1.0, 0.9, 0.85, 0.85,
             0.9, 0.85, 0.85, 0.9, 1.1, 1.6, 2.0, 1.9, 1.7, 1.4, 1.1, 0.8),
    "depot": (0.4, 0.4, 0.4, 0.4, 0.4, 0.6, 1.0, 1.5, 1.7, 1.7, 1.7, 1.7,
              1.6, 1.7, 1.7, 1.6, 1.4, 1.0, 0.7, 0.5, 0.4, 0.4, 0.4, 0.4),
    "public": (0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.8, 1.0, 1.2, 1.3, 1.4, 1.4,
               1.4, 1.4, 1.3, 1.3, 1.3, 1.3, 1.2, 1.1, 0.9, 0.7, 0.6, 0.5),
}  # fmt: skip


class PortfolioError(InvalidParameterError):
    """A portfolio's tables are inconsistent (an unknown reference, a cycle, a missing column)."""


def base_load_shape(kind: str, horizon: Horizon) -> np.ndarray:
    """Per interval of ``horizon``, the relative base load of a site of ``kind`` (mean 1 over a day)."""
    shape = np.asarray(_HOURLY_SHAPE[kind], dtype=np.float64)
    shape = shape / shape.mean()
    hours = np.asarray(horizon.timestamps.hour, dtype=np.int64)
    return np.asarray(shape[hours])


def pv_capacity_factor(horizon: Horizon) -> np.ndarray:
    """Per interval, the Dutch PV capacity factor (Renewables.ninja, 2019) of the same date and hour."""
    return _pv_factor_for(horizon.start.month, horizon.start.day, horizon.intervals, horizon.interval_minutes)


_PV_CACHE: dict[tuple[int, int, int, int], np.ndarray] = {}


def _pv_factor_for(month: int, day: int, n_t: int, minutes: int) -> np.ndarray:
    key = (month, day, n_t, minutes)
    if key not in _PV_CACHE:
        frame = pd.read_csv(DATA_DIR / "nl" / "pv_netherlands.csv", usecols=["time", "electricity"])
        frame["time"] = pd.to_datetime(frame["time"], format="%Y-%m-%d %H:%M")
        day_of = datetime(2019, month, min(day, 28) if month == 2 else day)
        hourly = frame.set_index("time")["electricity"]
        stamps = pd.date_range(day_of, periods=n_t, freq=f"{minutes}min").floor("h")
        values = hourly.reindex(stamps).fillna(0.0).to_numpy(dtype=np.float64)
        _PV_CACHE[key] = np.clip(values, 0.0, 1.0)
    return _PV_CACHE[key]


@dataclass(frozen=True)
class Portfolio:
    """One day of a portfolio (see the module's docstring for the tables' columns)."""

    horizon: Horizon
    nodes: pd.DataFrame
    sites: pd.DataFrame
    sessions: pd.DataFrame
    prices_eur_mwh: np.ndarray
    dr_events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DR_COLUMNS)))
    import_cap_kw: np.ndarray | None = None
    degradation_eur_kwh: float = 0.02

    def __post_init__(self) -> None:
        validate(self)

    @property
    def n_evs(self) -> int:
        return len(self.sessions)

    def node_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Per node (in ``nodes`` order) and interval: import and export limits, DR events applied."""
        n_t = self.horizon.intervals
        imp = np.repeat(self.nodes["import_limit_kw"].to_numpy(np.float64)[:, None], n_t, axis=1)
        exp = np.repeat(self.nodes["export_limit_kw"].to_numpy(np.float64)[:, None], n_t, axis=1)
        if len(self.dr_events):
            row_of = {n: i for i, n in enumerate(self.nodes["node"])}
            step = self.horizon.step
            starts = pd.to_datetime(self.dr_events["start"], utc=True)
            durations = self.dr_events["duration_s"].to_numpy(np.float64)
            limits = self.dr_events["import_limit_kw"].to_numpy(np.float64)
            for k, node in enumerate(self.dr_events["node"].astype(str)):
                start = starts.iloc[k].to_pydatetime()
                lo = (start - self.horizon.start) / step
                hi = (start + timedelta(seconds=float(durations[k])) - self.horizon.start) / step
                t = np.arange(n_t)
                mask = (t + 1 > lo) & (t < hi)
                i = row_of[node]
                imp[i, mask] = np.minimum(imp[i, mask], limits[k])
        return imp, exp

    def site_fixed_kw(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Base load − PV per site (``rows`` of ``sites``, default all) and interval, kW."""
        sites = self.sites if rows is None else self.sites.iloc[rows]
        pv = pv_capacity_factor(self.horizon)
        out = np.outer(sites["pv_kwp"].to_numpy(np.float64), -pv)
        kinds = sites["kind"].to_numpy()
        base = sites["base_load_kw"].to_numpy(np.float64)
        for kind in SITE_KINDS:
            mask = kinds == kind
            if mask.any():
                out[mask] += np.outer(base[mask], base_load_shape(kind, self.horizon))
        return out

    def node_fixed_kw(self) -> np.ndarray:
        """Base load − PV of every site under each node (its whole subtree), per interval, kW."""
        n_t = self.horizon.intervals
        node_of_site = self.sites["node"].map({n: i for i, n in enumerate(self.nodes["node"])}).to_numpy()
        direct = np.zeros((len(self.nodes), n_t))
        pv = pv_capacity_factor(self.horizon)
        np.add.at(direct, node_of_site, -np.outer(self.sites["pv_kwp"].to_numpy(np.float64), pv))
        kinds = self.sites["kind"].to_numpy()
        base = self.sites["base_load_kw"].to_numpy(np.float64)
        for kind in SITE_KINDS:
            mask = kinds == kind
            if mask.any():
                sums = np.bincount(node_of_site[mask], weights=base[mask], minlength=len(self.nodes))
                direct += np.outer(sums, base_load_shape(kind, self.horizon))
        return subtree_sums(self.nodes, direct)


def parent_index(nodes: pd.DataFrame) -> np.ndarray:
    """Row of each node's parent (−1 at the top)."""
    row_of = {n: i for i, n in enumerate(nodes["node"])}
    return np.array([row_of.get(p, -1) if p else -1 for p in nodes["parent"]], dtype=np.int64)


def depth_order(nodes: pd.DataFrame) -> np.ndarray:
    """Node rows ordered deepest first (children before their parents)."""
    parent = parent_index(nodes)
    depth = np.zeros(len(nodes), dtype=np.int64)
    for i in range(len(nodes)):
        j, d = i, 0
        while parent[j] >= 0:
            j, d = int(parent[j]), d + 1
        depth[i] = d
    return np.argsort(-depth, kind="stable")


def subtree_sums(nodes: pd.DataFrame, direct: np.ndarray) -> np.ndarray:
    """Each node's own values plus all of its descendants' (rows in ``nodes`` order)."""
    parent = parent_index(nodes)
    total = np.array(direct, dtype=np.float64, copy=True)
    for i in depth_order(nodes):
        if parent[i] >= 0:
            total[parent[i]] += total[i]
    return total


def ancestors(nodes: pd.DataFrame) -> list[list[int]]:
    """For each node row: itself and every ancestor, bottom up."""
    parent = parent_index(nodes)
    out = []
    for i in range(len(nodes)):
        chain, j = [i], i
        while parent[j] >= 0:
            j = int(parent[j])
            chain.append(j)
        out.append(chain)
    return out


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PortfolioError(f"{what}: missing column(s) {', '.join(missing)}")


def _finite(frame: pd.DataFrame, columns: tuple[str, ...], what: str, key: str) -> None:
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise NonFiniteValueError(
                f"{what} {frame[key].iloc[int(np.flatnonzero(bad)[0])]}: {column} is not a finite number"
            )
        if column != "arrival_kwh" and (values < 0).any():
            row = int(np.flatnonzero(values < 0)[0])
            raise InvalidParameterError(
                f"{what} {frame[key].iloc[row]}: {column} = {values[row]} is negative"
            )


def _unique(frame: pd.DataFrame, key: str, what: str) -> None:
    duplicated = frame[key].duplicated()
    if duplicated.any():
        raise DuplicateIdError(f"{what} id {frame[key][duplicated].iloc[0]} appears twice")


def validate(portfolio: Portfolio) -> None:
    """Every reference resolves, every number is finite and in range, every target reachable."""
    p = portfolio
    n_t = p.horizon.intervals
    _require(p.nodes, NODE_COLUMNS, "nodes")
    _require(p.sites, SITE_COLUMNS, "sites")
    _require(p.sessions, SESSION_COLUMNS, "sessions")
    _require(p.dr_events, DR_COLUMNS, "DR events")
    for frame, key, what in (
        (p.nodes, "node", "node"),
        (p.sites, "site", "site"),
        (p.sessions, "session", "session"),
    ):
        _unique(frame, key, what)
    if len(p.sessions) and p.sessions["vehicle"].duplicated().any():
        vehicle = p.sessions["vehicle"][p.sessions["vehicle"].duplicated()].iloc[0]
        raise DuplicateIdError(f"vehicle {vehicle} has two sessions in one day's portfolio")
    _finite(p.nodes, ("import_limit_kw", "export_limit_kw"), "node", "node")
    _finite(p.sites, ("import_limit_kw", "export_limit_kw", "base_load_kw", "pv_kwp"), "site", "site")
    numbers = tuple(
        c for c in SESSION_COLUMNS if c.endswith(("_kwh", "_kw", "_min", "_max")) or c.startswith("eta")
    )
    _finite(p.sessions, numbers, "session", "session")
    _finite(p.dr_events, ("duration_s", "import_limit_kw"), "DR event", "event")
    known_nodes = set(p.nodes["node"])
    orphans = [x for x in p.nodes["parent"] if x and x not in known_nodes]
    if orphans:
        raise PortfolioError(f"node parent {orphans[0]} is not a node")
    parent = parent_index(p.nodes)
    for i in range(len(p.nodes)):  # no cycles
        j, steps = i, 0
        while parent[j] >= 0:
            j, steps = int(parent[j]), steps + 1
            if steps > len(p.nodes):
                raise PortfolioError(f"node {p.nodes['node'].iloc[i]} is in a cycle of parents")
    unknown = ~p.sites["node"].isin(known_nodes)
    if unknown.any():
        raise PortfolioError(
            f"site {p.sites['site'][unknown].iloc[0]}: unknown node {p.sites['node'][unknown].iloc[0]}"
        )
    bad_kind = ~p.sites["kind"].isin(SITE_KINDS)
    if bad_kind.any():
        raise PortfolioError(
            f"site {p.sites['site'][bad_kind].iloc[0]}: kind {p.sites['kind'][bad_kind].iloc[0]!r} "
            "is not one of " + ", ".join(SITE_KINDS)
        )
    unknown = ~p.sessions["site"].isin(set(p.sites["site"]))
    if unknown.any():
        raise PortfolioError(
            f"session {p.sessions['session'][unknown].iloc[0]}: "
            f"unknown site {p.sessions['site'][unknown].iloc[0]}"
        )
    unknown = ~p.dr_events["node"].isin(known_nodes)
    if unknown.any():
        raise PortfolioError(f"DR event {p.dr_events['event'][unknown].iloc[0]}: unknown node")
    s = p.sessions
    if len(s):
        if (s["departure"] <= s["arrival"]).any():
            row = s[s["departure"] <= s["arrival"]].iloc[0]
            raise DepartureBeforeArrivalError(f"session {row['session']}: departure is not after arrival")
        for name, rule in (
            ("battery_kwh", s["battery_kwh"] > 0),
            ("charge_kw", s["charge_kw"] > 0),
            ("soc window", (s["soc_min"] <= s["soc_max"]) & (s["soc_max"] <= 1)),
            ("eta_charge", (s["eta_charge"] > 0) & (s["eta_charge"] <= 1)),
            ("eta_discharge", (s["eta_discharge"] > 0) & (s["eta_discharge"] <= 1)),
        ):
            if not rule.all():
                raise InvalidParameterError(f"session {s['session'][~rule].iloc[0]}: {name} out of range")
        over = s["target_kwh"] > s["soc_max"] * s["battery_kwh"] + 1e-9
        if over.any():
            raise TargetAboveCapacityError(
                f"session {s['session'][over].iloc[0]}: target above the usable maximum"
            )
        over = s["arrival_kwh"] > s["battery_kwh"] + 1e-9
        if over.any():
            raise TargetAboveCapacityError(
                f"session {s['session'][over].iloc[0]}: arrival energy above the battery"
            )
    prices = np.asarray(p.prices_eur_mwh, dtype=np.float64)
    if prices.shape != (n_t,):
        raise MisalignedIntervalError(f"{prices.size} prices for {n_t} intervals")
    if not np.isfinite(prices).all():
        raise NonFiniteValueError("a price is not a finite number")
    if p.import_cap_kw is not None:
        cap = np.asarray(p.import_cap_kw, dtype=np.float64)
        if cap.shape != (n_t,):
            raise MisalignedIntervalError(f"portfolio import cap has {cap.size} values for {n_t} intervals")
        if not np.isfinite(cap).all():
            raise NonFiniteValueError("the portfolio import cap is not finite")
    if not math.isfinite(p.degradation_eur_kwh) or p.degradation_eur_kwh < 0:
        raise InvalidParameterError(f"degradation cost {p.degradation_eur_kwh} EUR/kWh must be >= 0")
    if len(s):
        plan = session_arrays(p)
        unreachable = plan.target_kwh > plan.reachable_kwh + 1e-6
        if unreachable.any():
            i = int(np.flatnonzero(unreachable)[0])
            raise TargetUnreachableError(
                str(s["session"].iloc[i]),
                str(s["vehicle"].iloc[i]),
                float(plan.target_kwh[i]),
                float(plan.reachable_kwh[i]),
            )


@dataclass(frozen=True)
class SessionArrays:
    """Sessions laid out on the horizon's grid (one entry per session, in ``sessions`` order)."""

    first_t: np.ndarray  # first interval plugged in
    n_plugged: np.ndarray  # whole intervals plugged in within the day (0: none)
    lo_kwh: np.ndarray
    hi_kwh: np.ndarray
    e0_kwh: np.ndarray
    target_kwh: np.ndarray  # what must be in the battery at the day's end or departure
    reachable_kwh: np.ndarray


def session_arrays(portfolio: Portfolio) -> SessionArrays:
    s = portfolio.sessions
    h = portfolio.horizon
    step_s = h.interval_minutes * 60.0
    start = pd.Timestamp(h.start)
    arrival = (pd.to_datetime(s["arrival"], utc=True) - start).dt.total_seconds().to_numpy() / step_s
    departure = (pd.to_datetime(s["departure"], utc=True) - start).dt.total_seconds().to_numpy() / step_s
    first = np.clip(np.ceil(arrival - 1e-9), 0, h.intervals).astype(np.int64)
    stop = np.clip(np.floor(departure + 1e-9), 0, h.intervals).astype(np.int64)
    n = np.maximum(stop - first, 0)
    battery = s["battery_kwh"].to_numpy(np.float64)
    e0 = s["arrival_kwh"].to_numpy(np.float64)
    lo = np.minimum(s["soc_min"].to_numpy(np.float64) * battery, e0)
    hi = np.maximum(s["soc_max"].to_numpy(np.float64) * battery, e0)
    eta = s["eta_charge"].to_numpy(np.float64)
    power = s["charge_kw"].to_numpy(np.float64)
    after_h = np.maximum(departure - h.intervals, 0.0) * h.dt_h
    target = s["target_kwh"].to_numpy(np.float64)
    target = np.where(after_h > 0, np.maximum(np.minimum(e0, target), target - eta * power * after_h), target)
    target = np.minimum(target, hi)
    reachable = np.minimum(hi, e0 + eta * power * h.dt_h * n)
    return SessionArrays(first, n, lo, hi, e0, target, reachable)


# --- files ---------------------------------------------------------------------------------------------

_FILES = {"nodes": NODE_COLUMNS, "sites": SITE_COLUMNS, "sessions": SESSION_COLUMNS, "dr_events": DR_COLUMNS}


def _read(directory: Path, name: str) -> pd.DataFrame:
    for suffix in (".parquet", ".csv"):
        path = directory / f"{name}{suffix}"
        if path.exists():
            try:
                frame = (
                    pd.read_parquet(path)
                    if suffix == ".parquet"
                    else pd.read_csv(path, keep_default_na=False)
                )
            except (OSError, ValueError) as exc:
                raise DataFileError(path, None, f"unreadable: {exc}") from exc
            missing = [c for c in _FILES[name] if c not in frame.columns]
            if missing:
                raise MissingColumnError(path, 1, f"missing column(s) {', '.join(missing)}")
            return frame
    if name == "dr_events":
        return pd.DataFrame(columns=list(DR_COLUMNS))
    raise DataFileError(directory / f"{name}.parquet", None, "not found (nor .csv)")


def _times(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns:
        try:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise DataFileError(path, None, f"column {column}: not ISO 8601 UTC times ({exc})") from exc
    return frame


def write_portfolio(portfolio: Portfolio, directory: Path, *, fmt: str = "parquet") -> None:
    """Write the portfolio as one file per table plus ``day.csv`` (day, interval, price, cap)."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = {
        "nodes": portfolio.nodes,
        "sites": portfolio.sites,
        "sessions": portfolio.sessions,
        "dr_events": portfolio.dr_events,
    }
    for name, frame in tables.items():
        if fmt == "parquet":
            frame.to_parquet(directory / f"{name}.parquet", index=False)
        else:
            out = frame.copy()
            for column in ("arrival", "departure", "start"):
                if column in out.columns:
                    out[column] = pd.to_datetime(out[column], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            out.to_csv(directory / f"{name}.csv", index=False)
    day = pd.DataFrame(
        {
            "utc": portfolio.horizon.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "price_eur_mwh": portfolio.prices_eur_mwh,
            "import_cap_kw": portfolio.import_cap_kw if portfolio.import_cap_kw is not None else np.nan,
        }
    )
    day.to_csv(directory / "day.csv", index=False)
    (directory / "settings.csv").write_text(f"degradation_eur_kwh\n{portfolio.degradation_eur_kwh!r}\n")


def read_portfolio(directory: Path) -> Portfolio:
    """Read what :func:`write_portfolio` wrote (each table as ``.parquet`` or ``.csv``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFileError(directory, None, "not a directory")
    day_path = directory / "day.csv"
    if not day_path.exists():
        raise DataFileError(
            day_path, None, "not found: one row per interval (utc, price_eur_mwh, import_cap_kw)"
        )
    day = pd.read_csv(day_path)
    for column in ("utc", "price_eur_mwh"):
        if column not in day.columns:
            raise MissingColumnError(day_path, 1, f"missing column {column}")
    try:
        utc = pd.to_datetime(day["utc"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataFileError(day_path, None, f"column utc: {exc}") from exc
    if len(utc) < 2:
        raise DataFileError(day_path, None, "needs at least two intervals")
    minutes = int((utc.iloc[1] - utc.iloc[0]).total_seconds() // 60)
    if minutes <= 0 or (utc.diff().iloc[1:] != utc.iloc[1] - utc.iloc[0]).any():
        raise DataFileError(day_path, None, "intervals must be evenly spaced and increasing")
    horizon = Horizon(utc.iloc[0].to_pydatetime().astimezone(UTC), len(utc), minutes)
    prices = pd.to_numeric(day["price_eur_mwh"], errors="coerce").to_numpy(np.float64)
    cap = None
    if "import_cap_kw" in day.columns:
        values = pd.to_numeric(day["import_cap_kw"], errors="coerce").to_numpy(np.float64)
        if np.isfinite(values).any():
            cap = values
    degradation = 0.02
    settings = directory / "settings.csv"
    if settings.exists():
        degradation = float(pd.read_csv(settings)["degradation_eur_kwh"].iloc[0])
    sessions = _times(_read(directory, "sessions"), ("arrival", "departure"), directory / "sessions")
    dr = _times(_read(directory, "dr_events"), ("start",), directory / "dr_events")
    nodes = _read(directory, "nodes")
    nodes["parent"] = nodes["parent"].fillna("").astype(str)
    nodes["node"] = nodes["node"].astype(str)
    sites = _read(directory, "sites")
    for frame, columns in (
        (sites, ("site", "node", "kind")),
        (sessions, ("session", "vehicle", "owner", "site")),
    ):
        for column in columns:
            frame[column] = frame[column].astype(str)
    dr["node"] = dr["node"].astype(str)
    return Portfolio(horizon, nodes, sites, sessions, prices, dr, cap, degradation)
