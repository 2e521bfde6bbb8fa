"""``build_index`` is vectorised over sessions; it must give bit-identical arrays to the loop it replaced
(kept here as the oracle) on problems a hand-made test would not think of: random horizons and
interval lengths, sessions starting before and ending after the horizon, arrivals a few microseconds
off a boundary, hard and priced targets."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from scheduler.errors import InputError, TargetUnreachableError
from scheduler.index import FloatArray, ModelIndex, _peak_arrays, build_index
from scheduler.inputs import Horizon, Prices, Problem, Session, Site, Vehicle

START = datetime(2023, 3, 26, tzinfo=UTC)


def loop_index(problem: Problem, *, check_targets: bool = True) -> ModelIndex:
    """The session-by-session construction ``build_index`` had before it was vectorised: the oracle."""
    horizon = problem.horizon
    n_t = horizon.intervals
    dt = horizon.dt_h
    hard = problem.shortfall_penalty_eur_kwh is None

    rows = []
    for session in problem.sessions:
        vehicle = problem.vehicle_by_id[session.vehicle_id]
        begin, end = horizon.offset(session.arrival), horizon.offset(session.departure)
        first = max(0, math.floor(begin + 1e-9))
        stop = min(n_t, math.ceil(end - 1e-9))
        n_plugged = max(0, stop - first)
        frac = np.ones(n_plugged)
        if n_plugged:  # only the first and last interval can be covered in part
            frac[0] = min(first + 1, end) - max(first, begin)
            frac[-1] = min(stop, end) - max(stop - 1, begin) if n_plugged > 1 else frac[0]
            np.clip(frac, 0.0, 1.0, out=frac)
            frac[frac < 1e-9] = 0.0  # a stray touch of an interval is no availability
            if frac[-1] == 0.0:
                stop, frac, n_plugged = stop - 1, frac[:-1], n_plugged - 1
            if n_plugged and frac[0] == 0.0:
                first, frac, n_plugged = first + 1, frac[1:], n_plugged - 1
        e0 = session.arrival_kwh
        lo = min(vehicle.min_kwh, e0)
        hi = max(vehicle.max_kwh, e0)
        target = session.target_kwh
        after_end_h = max(0.0, (session.departure - horizon.end).total_seconds() / 3600.0)
        if after_end_h > 0:
            target = max(min(e0, target), target - vehicle.eta_charge * vehicle.charge_kw * after_end_h)
        reachable = min(hi, e0 + vehicle.eta_charge * vehicle.charge_kw * dt * float(frac.sum()))
        if hard and check_targets and target > reachable + 1e-9:
            raise TargetUnreachableError(session.id, vehicle.id, target, reachable)
        if n_plugged == 0:
            continue
        rows.append(
            (session, vehicle, first, stop, lo, hi, min(target, hi), min(session.target_kwh, hi), frac)
        )

    n_s = len(rows)
    counts = np.array([stop - first for _, _, first, stop, *_ in rows], dtype=np.int64)
    firsts = np.array([first for _, _, first, *_ in rows], dtype=np.int64)
    first_pair = (
        np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if n_s else np.zeros(0, np.int64)
    )
    n_p = int(counts.sum())
    pair_session = np.repeat(np.arange(n_s, dtype=np.int64), counts)
    pair_t = (np.arange(n_p, dtype=np.int64) - np.repeat(first_pair, counts)) + np.repeat(firsts, counts)
    pair_is_first = np.zeros(n_p, dtype=bool)
    pair_is_first[first_pair] = True
    discharge = np.array([v.discharge_kw for _, v, *_ in rows], dtype=np.float64)

    def col(values: list[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    return ModelIndex(
        dt_h=dt,
        n_t=n_t,
        session_ids=tuple(s.id for s, *_ in rows),
        vehicle_ids=tuple(v.id for _, v, *_ in rows),
        owners=tuple(v.owner for _, v, *_ in rows),
        charge_kw=col([v.charge_kw for _, v, *_ in rows]),
        discharge_kw=discharge,
        eta_charge=col([v.eta_charge for _, v, *_ in rows]),
        eta_discharge=col([v.eta_discharge for _, v, *_ in rows]),
        soc_lo_kwh=col([r[4] for r in rows]),
        soc_hi_kwh=col([r[5] for r in rows]),
        arrival_kwh=col([s.arrival_kwh for s, *_ in rows]),
        target_kwh=col([r[6] for r in rows]),
        requested_kwh=col([r[7] for r in rows]),
        first_pair=first_pair,
        last_pair=first_pair + counts - 1,
        pair_session=pair_session,
        pair_t=pair_t,
        pair_is_first=pair_is_first,
        pair_frac=np.concatenate([r[8] for r in rows]) if n_s else np.zeros(0),
        v2g_pair=np.flatnonzero(discharge[pair_session] > 0) if n_p else np.zeros(0, np.int64),
        buy_eur_mwh=problem.prices.buy_eur_mwh,
        sell_eur_mwh=problem.prices.sell_eur_mwh,
        import_limit_kw=problem.import_limit_kw,
        export_limit_kw=problem.site.export_limit_kw,
        fixed_load_kw=problem.site.base_load_kw - problem.site.pv_kw,
        degradation_eur_kwh=problem.degradation_eur_kwh,
        shortfall_penalty_eur_kwh=problem.shortfall_penalty_eur_kwh,
        degradation_basis=problem.degradation_basis,
        **_peak_arrays(problem),
    )


def _random_problem(rng: np.random.Generator) -> Problem:
    minutes = int(rng.choice([15, 30, 60]))
    n_t = int(rng.integers(1, 60))
    horizon = Horizon(START, n_t, interval_minutes=minutes)
    span_s = n_t * minutes * 60
    vehicles, sessions = [], []
    for i in range(int(rng.integers(0, 40))):
        battery = float(rng.uniform(20, 100))
        discharge = float(rng.choice([0.0, rng.uniform(1, 11)]))
        v = Vehicle(
            f"v{i}", f"o{i % 5}", battery, float(rng.uniform(2, 22)), discharge,
            soc_min=float(rng.uniform(0, 0.2)), soc_max=float(rng.uniform(0.8, 1.0)),
            eta_charge=float(rng.uniform(0.85, 1.0)), eta_discharge=float(rng.uniform(0.85, 1.0)),
        )  # fmt: skip
        vehicles.append(v)
        kind = rng.integers(0, 4)
        if kind == 0:  # on a boundary, or a few microseconds off one
            a = int(rng.integers(-2, n_t + 1)) * minutes * 60 * 10**6 + int(rng.integers(-3, 4))
            d = a + int(rng.integers(1, 8)) * minutes * 60 * 10**6 + int(rng.integers(-3, 4))
        else:  # anywhere, from before the start to after the end
            a = int(rng.integers(-span_s // 3, span_s)) * 10**6 + int(rng.integers(0, 10**6))
            d = a + int(rng.integers(1, span_s)) * 10**6 + int(rng.integers(0, 10**6))
        e0 = float(rng.uniform(0, battery))
        sessions.append(
            Session(
                f"s{i}",
                v.id,
                START + timedelta(microseconds=a),
                START + timedelta(microseconds=max(d, a + 1)),
                e0,
                float(rng.uniform(0, battery * 0.8)),
            )
        )
    return Problem(
        horizon=horizon,
        vehicles=tuple(vehicles),
        sessions=tuple(sessions),
        site=Site.build(horizon, 50.0, 50.0, 0.0, 0.0),
        prices=Prices.build(horizon, rng.uniform(-50, 200, n_t)),
        shortfall_penalty_eur_kwh=None if rng.random() < 0.5 else 0.5,
    )


def _same(a: ModelIndex, b: ModelIndex) -> None:
    for f in fields(ModelIndex):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype.kind == np.asarray(y).dtype.kind, f.name
            assert np.array_equal(x, y, equal_nan=True), f.name
            assert x.tobytes() == np.asarray(y, dtype=x.dtype).tobytes(), f.name  # bit for bit
        else:
            assert x == y, f.name


def test_vectorised_index_is_bit_identical_to_the_loop_on_random_problems() -> None:
    rng = np.random.default_rng(20261203)
    built = raised = 0
    for _ in range(400):
        try:
            problem = _random_problem(rng)
        except InputError:
            continue
        for check in (True, False):
            try:
                expected = loop_index(problem, check_targets=check)
            except TargetUnreachableError as exc:
                with pytest.raises(TargetUnreachableError) as got:
                    build_index(problem, check_targets=check)
                assert got.value.session_id == exc.session_id
                assert math.isclose(got.value.reachable_kwh, exc.reachable_kwh, rel_tol=1e-12)
                raised += 1
                continue
            _same(build_index(problem, check_targets=check), expected)
            built += 1
    assert built > 300 and raised > 20  # both paths were exercised


def test_vectorised_index_is_bit_identical_on_a_case_study_day() -> None:
    from scheduler.datasets import load_prices
    from scheduler.fleet import FleetConfig, fleet_problem

    prices = load_prices().eur_mwh
    day = prices[(prices.index >= "2023-10-29") & (prices.index < "2023-10-31")]  # the clocks go back
    config = FleetConfig(n_evs=300, interval_minutes=15, clip_to_day=False, horizon_hours=48)
    problem = fleet_problem("2023-10-29", day, config, seed=3)
    _same(build_index(problem, check_targets=False), loop_index(problem, check_targets=False))
