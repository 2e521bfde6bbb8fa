"""The energy last planned per vehicle and interval: one row per vehicle's latest plan, the intervals a
later plan starts after kept, the old ones let go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from backend.operations.metered import PlannedEnergy

T0 = datetime(2024, 5, 1, 8, tzinfo=UTC)
W = timedelta(minutes=15)


def test_it_is_what_a_dict_updated_with_every_plan_would_be() -> None:
    # random re-plans of random cars, a boundary or none later, longer or shorter: the same entries
    rng = np.random.default_rng(11)
    planned = PlannedEnergy(W, keep=timedelta(days=30))
    reference: dict[tuple[str, datetime], int] = {}
    k0 = 0
    for _ in range(300):
        k0 += int(rng.integers(0, 2))
        for car in rng.choice(["a", "b", "c", "d"], size=int(rng.integers(1, 4)), replace=False):
            n = int(rng.integers(1, 12))
            wh = rng.integers(-2_000, 3_000, size=n).astype(np.int64)
            first = T0 + (k0 + int(rng.integers(0, 2))) * W
            planned.plan([str(car)], first, wh[None, :])
            reference.update(((str(car), first + k * W), int(v)) for k, v in enumerate(wh))
    assert dict(planned.items()) == reference
    assert len(planned) == len(reference)
    assert all(planned[key] == wh for key, wh in reference.items())
    # per interval, what charges and what discharges, each entry counted once
    totals = planned.totals(T0, T0 + 400 * W)
    for at, (up, down) in totals.items():
        here = [wh for (_, t), wh in reference.items() if t == at]
        assert (up, down) == (sum(w for w in here if w > 0), -sum(w for w in here if w < 0))
    assert set(totals) == {t for _, t in reference}


def test_a_re_plan_a_boundary_later_keeps_the_interval_that_has_begun() -> None:
    planned = PlannedEnergy(W)
    planned.plan(["ev"], T0, np.array([[100, 200, 300]]))
    planned.plan(["ev", "other"], T0 + W, np.array([[250, -50], [10, 20]]))
    del planned[("other", T0 + W)], planned[("other", T0 + 2 * W)]
    assert dict(planned.items()) == {("ev", T0): 100, ("ev", T0 + W): 250, ("ev", T0 + 2 * W): -50}
    assert planned.totals(T0, T0 + 3 * W) == {T0: (100, 0), T0 + W: (250, 0), T0 + 2 * W: (0, 50)}
    planned[("ev", T0 + 2 * W)] = 75  # within the latest plan
    planned[("ev", T0 + 9 * W)] = 5  # outside it
    assert planned[("ev", T0 + 2 * W)] == 75 and planned[("ev", T0 + 9 * W)] == 5
    del planned[("ev", T0 + W)]
    assert ("ev", T0 + W) not in planned and planned[("ev", T0 + 2 * W)] == 75
    with pytest.raises(KeyError):
        planned[("ev", T0 + 3 * W)]
    with pytest.raises(KeyError):
        del planned[("other", T0)]
    planned.clear()
    assert not planned and len(planned) == 0


def test_a_service_that_runs_for_days_holds_two_of_them() -> None:
    planned = PlannedEnergy(W)
    site = np.full((2, 32), 7)
    planned.plan(["gone", "other"], T0, site)  # a car planned once, on the first morning
    site[:] = 9  # a row of its own, not a view of the site's plan
    assert planned[("gone", T0)] == 7
    for k in range(4 * 96):  # four days, a re-plan at every boundary, a plan of the next 8 hours each
        planned.plan(["ev"], T0 + k * W, np.full((1, 32), 1_000))
    assert {vehicle for vehicle, _ in planned} == {"ev"}  # the cars not planned for two days: let go
    kept = sorted(at for _, at in planned)
    last = T0 + (4 * 96 - 1) * W
    assert kept[-1] == last + 31 * W
    assert kept[0] >= last - timedelta(days=2, hours=1)
    assert len(kept) <= 2 * 96 + 4 + 32
