"""Solve a :class:`~scheduler.inputs.Problem`: V2G, smart charging, exact and honest.

Exactness with few binaries: a charging-mode binary is placed only on V2G
session-intervals whose price is below −θ (see
:meth:`~scheduler.index.ModelIndex.binary_candidates`), and the LP keeps the
convex-hull cut ``charge/P_ch + discharge/P_dis ≤ 1`` everywhere. The result
is then checked: if any session still charges and discharges in the same
interval, binaries are added there and the model is solved again. A schedule
without simultaneous flows that is optimal for a relaxation of the full MILP is
optimal for the full MILP, so the returned schedule carries the full model's
gap.

Values are read only from an optimal or feasible-with-gap result; an infeasible
input raises a named error saying which session or which site limit is at fault.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from enum import StrEnum
from typing import Literal

import numpy as np

from scheduler.errors import SiteLimitInfeasibleError, SolverFailedError
from scheduler.index import FLOW_TOL_KW, IntArray, ModelIndex, build_index
from scheduler.inputs import Problem
from scheduler.matrix import RawSolution, WarmStart, solve_matrix
from scheduler.schedule import Schedule

logger = logging.getLogger(__name__)

Builder = Literal["highspy", "pyomo"]
MAX_ROUNDS = 8


class Status(StrEnum):
    OPTIMAL = "optimal"  # proven optimal within the requested MIP gap
    FEASIBLE = "feasible"  # a solution with a stated gap (time limit reached)


def _run(
    builder: Builder,
    idx: ModelIndex,
    binaries: IntArray,
    mip_gap: float,
    time_limit: float | None,
    threads: int | None,
    what: str,
    start: WarmStart | None = None,
) -> RawSolution:
    """One solve of the model with ``binaries``. The highspy builder goes through the recovery chain of
    :mod:`scheduler.highs`; when Pyomo's solve ends without an answer, the same model is solved by the
    highspy builder (and its chain), and that recovery is recorded."""
    if builder == "pyomo":
        from scheduler.model import solve_pyomo

        raw = solve_pyomo(idx, binaries, mip_gap=mip_gap, time_limit=time_limit, threads=threads)
        if raw.optimal or raw.infeasible or (raw.has_solution and time_limit is not None):
            return raw
        logger.warning(
            "%s: Pyomo/HiGHS ended %s; re-solving with the highspy builder", what, raw.model_status
        )
        again = solve_matrix(
            idx, binaries, mip_gap=mip_gap, time_limit=time_limit, threads=threads, what=what
        )
        return replace(again, recoveries=(f"{raw.model_status}→highspy", *again.recoveries))
    return solve_matrix(
        idx, binaries, mip_gap=mip_gap, time_limit=time_limit, threads=threads, what=what, start=start
    )


def _warm_start(problem: Problem, plan: Schedule | None) -> WarmStart | None:
    """``plan`` as a start for ``problem``: when its intervals are the problem's, shifted by whole ones."""
    if plan is None or len(plan.timestamps) == 0 or plan.dt_h != problem.horizon.dt_h:
        return None
    shift = (problem.horizon.start - plan.timestamps[0].to_pydatetime()) / problem.horizon.step
    if shift != int(shift):
        return None
    return WarmStart(plan, int(shift))


def simultaneous(idx: ModelIndex, raw: RawSolution) -> IntArray:
    """Indices into V2G pairs that charge and discharge in the same interval."""
    return np.flatnonzero((raw.charge_kw[idx.v2g_pair] > FLOW_TOL_KW) & (raw.discharge_kw > FLOW_TOL_KW))


def _diagnose_infeasible(idx: ModelIndex, problem: Problem) -> Exception:
    """Name the site limit that makes the problem infeasible (targets were checked when indexing)."""
    raw = solve_matrix(idx, np.zeros(0, np.int64), mip_gap=1e-4, time_limit=None, elastic_site=True)
    stamps = problem.horizon.timestamps
    if raw.has_solution:
        over_import = raw.import_kw - idx.import_limit_kw
        over_export = raw.export_kw - idx.export_limit_kw
        for limit, over in (("import", over_import), ("export", over_export)):
            bad = np.flatnonzero(over > 1e-6)
            if len(bad):
                return SiteLimitInfeasibleError(
                    limit, [stamps[int(t)].isoformat() for t in bad], [float(over[t]) for t in bad]
                )
    return SolverFailedError("the model is infeasible, and no single site limit explains it")


def solve(
    problem: Problem,
    *,
    v2g: bool = True,
    builder: Builder = "highspy",
    mip_gap: float = 1e-4,
    time_limit: float | None = None,
    threads: int | None = None,
    strategy: str | None = None,
    context: str = "",
    start: Schedule | None = None,
) -> Schedule:
    """Optimal schedule for ``problem``: with V2G (``v2g=True``) or smart charging only.

    ``mip_gap`` is relative (1e-4 = 0.01 %). Raises
    :class:`~scheduler.errors.TargetUnreachableError` or
    :class:`~scheduler.errors.SiteLimitInfeasibleError` when no schedule
    exists, :class:`~scheduler.errors.SolverFailedError` when the solver stops
    without a usable solution after every recovery of :mod:`scheduler.highs` (naming the instance and
    the file that reproduces it). ``context`` names the instance in logs and errors (e.g. a day).
    ``start``: a plan of (some of) the same sessions, e.g. the last re-plan's, that the solver starts
    from (the highspy builder, while the model is an LP: not once binaries are added, nor with Pyomo):
    from its basis when the model is the same (the same vertex when nothing changed), else from that
    basis carried over by session and interval (:func:`scheduler.matrix.mapped_basis`), or from its
    values when it has none (a MILP's). The optimal value is the same, found sooner.
    """
    if not v2g:
        problem = problem.without_discharge()
    name = strategy or ("v2g" if v2g else "smart")
    idx = build_index(problem)
    binaries = np.sort(idx.binary_candidates())
    build_s = solve_s = 0.0
    recoveries: list[str] = []
    warm = _warm_start(problem, start)
    for round_ in range(MAX_ROUNDS):
        what = f"{context + ' ' if context else ''}{name} round {round_ + 1}"
        raw = _run(
            builder, idx, binaries, mip_gap, time_limit, threads, what, warm if len(binaries) == 0 else None
        )
        build_s += raw.build_s
        solve_s += raw.solve_s
        recoveries += raw.recoveries
        if not raw.has_solution:
            if raw.infeasible:
                raise _diagnose_infeasible(idx, problem)
            raise SolverFailedError(
                f"{what} ({idx.n_s} sessions × {idx.n_t} intervals, {len(binaries)} binaries): HiGHS "
                f"ended {raw.model_status!r} with no usable solution after recoveries "
                f"{', '.join(raw.recoveries) or 'none'}; instance written to {raw.instance_path}"
            )
        extra = np.setdiff1d(simultaneous(idx, raw), binaries)
        if len(extra) == 0:
            break
        logger.info(
            "round %d: %d session-intervals charge and discharge at once; adding binaries",
            round_ + 1,
            len(extra),
        )
        binaries = np.union1d(binaries, extra)
    else:
        raise SolverFailedError(f"simultaneous charge and discharge remain after {MAX_ROUNDS} rounds")
    status = Status.OPTIMAL if raw.optimal else Status.FEASIBLE
    # Where sell <= buy, importing and exporting at once never pays; the solver may still return it
    # as a tie (sell == buy). Netting it changes no constraint and no cost, and keeps the meter honest.
    both = np.minimum(raw.import_kw, raw.export_kw)
    logger.info(
        "%s: %s, objective %.4f EUR, gap %.2e, %d binaries, build %.2fs solve %.2fs (%d iterations%s)",
        name,
        status,
        -raw.objective_cost,
        raw.mip_gap,
        len(binaries),
        build_s,
        solve_s,
        raw.iterations,
        f", warm from the start's {raw.warm}" if raw.warm else "",
    )
    return Schedule.from_pairs(
        idx,
        problem.horizon.timestamps,
        strategy=name,
        charge_kw=raw.charge_kw,
        discharge_kw=raw.discharge_kw,
        soc_kwh=raw.soc_kwh,
        import_kw=raw.import_kw - both,
        export_kw=raw.export_kw - both,
        shortfall_kwh=raw.shortfall_kwh,
        status=str(status),
        termination=raw.model_status,
        mip_gap=raw.mip_gap,
        objective_eur=-raw.objective_cost,
        solve_s=solve_s,
        build_s=build_s,
        recoveries=tuple(recoveries),
        lp_basis=raw.basis,
    )
