"""HiGHS instances without a banner, and the recovery chain every solve of the scheduler goes through.

HiGHS sometimes ends a solve without a proven optimum although one exists: a warm-started simplex can
stop with model status ``Unknown`` (primal feasible, a dual infeasibility of about 1e-5), a numerically
hard MILP with a solve error. Such a status says nothing about the model, only about the path the
solver took, so a different path usually proves the optimum. :func:`run_with_recovery` tries, in order:

1. ``cold``: the same model re-solved from scratch (``clearSolver``: no basis, no factorisation), which
   is what cures a warm start that drifted (seen on every ``Unknown`` step of the rolling re-plan);
2. ``ipm`` for an LP (interior point with crossover: another algorithm, not another start) or
   ``no-presolve`` for a MILP (the presolve reductions are where MILP numerics most often go wrong);

and leaves the options as they were. Each recovery is logged with the status it recovered from and
counted by the caller. What to do when every recovery fails belongs to the caller: the rolling re-plan
holds the plan in force (see :mod:`scheduler.horizon`), a day-ahead solve raises
:class:`~scheduler.errors.SolverFailedError`. Either way :func:`write_instance` first writes the model
to a file that reproduces it (``V2G_REPRO_DIR``, default ``./failed-solves``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highspy
import numpy as np

logger = logging.getLogger(__name__)

Status = highspy.HighsModelStatus

#: Statuses that are an answer about the model, not about the solver's path: never "recovered".
ANSWERS = frozenset({Status.kOptimal, Status.kInfeasible, Status.kUnboundedOrInfeasible, Status.kUnbounded})
#: Limits a caller sets (the scheduler's ``time_limit``): the budget is spent, a re-solve would only spend
#: it again. An iteration limit is not one of them: the scheduler sets none, so reaching HiGHS's own is a
#: path that went wrong, and is recovered like any other.
LIMITS = frozenset({Status.kTimeLimit, Status.kSolutionLimit, Status.kInterrupt})

_banner_lock = threading.Lock()
_banner_shown = False


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send the C-level standard output to /dev/null (HiGHS prints its banner from C++)."""
    try:
        fd = os.dup(1)
    except OSError:  # no standard output at all: nothing to keep quiet
        yield
        return
    try:
        with Path(os.devnull).open("wb") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(fd, 1)
    finally:
        os.close(fd)


def silence_banner() -> None:
    """Let HiGHS print its banner where nobody sees it.

    The first ``Highs`` instance of a process prints HiGHS's copyright banner from its constructor,
    before any option can be set. That instance is created here once, with the standard output sent
    elsewhere, so a run that succeeds prints no solver output at all (also through Pyomo, whose solver
    interface creates its own instances).
    """
    global _banner_shown
    with _banner_lock:
        if not _banner_shown:
            with _quiet_stdout():
                highspy.Highs()  # type: ignore[no-untyped-call]
            _banner_shown = True


def new_highs(
    *,
    mip_gap: float | None = None,
    time_limit: float | None = None,
    threads: int | None = None,
    presolve: bool = True,
) -> highspy.Highs:
    """A silent ``Highs`` instance with the given options. ``presolve=False`` for the scheduling LPs:
    HiGHS's presolve costs them more than it saves (the dual simplex alone is 1.3-2.8 × faster from 20
    EVs to 5,000: a site of 100 cars 64 → 42 ms, 5,000 EVs over two days 1.50 → 1.02 s, a portfolio of
    100,000 EVs 7.9 → 5.1 s); on the MILPs it is a wash, and there it stays."""
    silence_banner()
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    if mip_gap is not None:
        h.setOptionValue("mip_rel_gap", float(mip_gap))
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    if threads is not None:
        h.setOptionValue("threads", int(threads))
    if not presolve:
        h.setOptionValue("presolve", "off")
    return h


@dataclass
class Matrix:
    """A column-wise sparse matrix as numpy arrays, with ``highspy.HighsSparseMatrix``'s field names."""

    start_: np.ndarray  # int32, num_col_ + 1
    index_: np.ndarray  # int32
    value_: np.ndarray  # float64
    num_col_: int
    num_row_: int


@dataclass
class Lp:
    """An LP (minimised) as numpy arrays, with ``highspy.HighsLp``'s field names, handed over by
    :func:`pass_model` in one call. A ``HighsLp``'s fields are copied from Python element by element as
    they are set: 3 ms of a 7,000-column site model's 3.7 ms build, 0.03 ms through ``passModel``'s
    arrays."""

    num_col_: int
    num_row_: int
    col_cost_: np.ndarray
    col_lower_: np.ndarray
    col_upper_: np.ndarray
    row_lower_: np.ndarray
    row_upper_: np.ndarray
    a_matrix_: Matrix
    offset_: float = 0.0

    @classmethod
    def colwise(
        cls,
        cost: np.ndarray,
        col_lower: np.ndarray,
        col_upper: np.ndarray,
        row_lower: np.ndarray,
        row_upper: np.ndarray,
        start: np.ndarray,
        index: np.ndarray,
        value: np.ndarray,
        offset: float = 0.0,
    ) -> Lp:
        n_col, n_row = len(cost), len(row_lower)
        matrix = Matrix(
            np.ascontiguousarray(start, dtype=np.int32),
            np.ascontiguousarray(index, dtype=np.int32),
            np.ascontiguousarray(value, dtype=np.float64),
            n_col,
            n_row,
        )

        def floats(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=np.float64)

        return cls(
            n_col, n_row, floats(cost), floats(col_lower), floats(col_upper), floats(row_lower),
            floats(row_upper), matrix, offset,
        )  # fmt: skip


def pass_model(h: highspy.Highs, lp: Lp) -> highspy.HighsStatus:
    """``h.passModel(lp)`` from the arrays (no integrality: a MILP's columns are marked afterwards)."""
    m = lp.a_matrix_
    return h.passModel(
        lp.num_col_,
        lp.num_row_,
        len(m.value_),
        int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMinimize),
        float(lp.offset_),
        lp.col_cost_,
        lp.col_lower_,
        lp.col_upper_,
        lp.row_lower_,
        lp.row_upper_,
        m.start_,
        m.index_,
        m.value_,
        np.zeros(lp.num_col_, dtype=np.int32),  # every column continuous (HiGHS reads one per column)
    )


@dataclass
class RunResult:
    """How a solve ended: the final status and the recoveries it took (``"Unknown→cold"``)."""

    status: highspy.HighsModelStatus
    recoveries: list[str] = field(default_factory=list)

    @property
    def optimal(self) -> bool:
        return bool(self.status == Status.kOptimal)


def status_name(h: highspy.Highs, status: highspy.HighsModelStatus | None = None) -> str:
    return str(h.modelStatusToString(h.getModelStatus() if status is None else status))


def _is_mip(h: highspy.Highs) -> bool:
    lp = h.getLp()
    return bool(len(lp.integrality_) and any(int(v) != 0 for v in lp.integrality_))


def _settled(h: highspy.Highs, status: highspy.HighsModelStatus, recover_infeasible: bool) -> bool:
    """True when ``status`` is an answer to accept (or a limit the caller set)."""
    if status == Status.kOptimal or status in LIMITS:
        return True
    return status in ANSWERS and not recover_infeasible


def run_with_recovery(h: highspy.Highs, what: str, *, recover_infeasible: bool = False) -> RunResult:
    """Run ``h``; when it ends without an answer, re-solve cold, then with another algorithm.

    ``recover_infeasible``: treat an infeasible verdict as a solver failure too (for a model that is
    feasible by construction, such as the rolling re-plan with priced shortfall).
    """
    h.run()
    status = h.getModelStatus()
    result = RunResult(status)
    if _settled(h, status, recover_infeasible):
        return result
    # (name, options set for the re-solve): the same path from scratch, then another algorithm
    steps: list[tuple[str, dict[str, str]]] = [
        ("cold", {}),
        ("no-presolve", {"presolve": "off"})
        if _is_mip(h)
        else ("ipm", {"solver": "ipm", "run_crossover": "on"}),
    ]
    for name, options in steps:
        failed = status_name(h, status)
        previous = {option: h.getOptionValue(option)[1] for option in options}
        for option, wanted in options.items():
            h.setOptionValue(option, wanted)
        try:
            h.clearSolver()
            h.run()
        finally:
            for option, before in previous.items():
                h.setOptionValue(option, before)
        status = h.getModelStatus()
        result.status = status
        result.recoveries.append(f"{failed}→{name}")
        if _settled(h, status, recover_infeasible):
            logger.warning(
                "%s: HiGHS ended %s; recovered by a %s re-solve (%s)", what, failed, name, status_name(h)
            )
            return result
        logger.warning(
            "%s: HiGHS ended %s; a %s re-solve ended %s", what, failed, name, status_name(h, status)
        )
    return result


def repro_dir() -> Path:
    """Where failed instances are written: ``V2G_REPRO_DIR``, default ``./failed-solves``."""
    return Path(os.environ.get("V2G_REPRO_DIR", "failed-solves"))


def write_instance(h: highspy.Highs, what: str, context: dict[str, Any]) -> Path | None:
    """Write the model held by ``h`` as MPS (with its options and ``context`` as JSON beside it) so that
    ``highspy``/``highs`` reproduces the failure; returns the MPS path (None if it could not be written)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", what).strip("_")[:120] or "instance"
    directory = repro_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}.mps"
        h.writeModel(str(path))
        h.writeOptions(str(directory / f"{stem}.options"))
        (directory / f"{stem}.json").write_text(json.dumps({"what": what, **context}, indent=1, default=str))
    except OSError as exc:
        logger.error("could not write the failed instance %s to %s: %s", what, directory, exc)
        return None
    return path
