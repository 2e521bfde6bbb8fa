"""Named errors of the scheduler package.

Every error says what is wrong and where: a data file error names the file, the
line (1-based, as an editor shows it, header included) and the problem; an
input error names the vehicle, session or interval; an infeasibility names the
vehicle or limit that cannot be met.
"""

from __future__ import annotations

from pathlib import Path


class SchedulerError(Exception):
    """Base class of every error the scheduler raises on purpose."""


# --- data files -------------------------------------------------------------


class DataFileError(SchedulerError, ValueError):
    """A data file is malformed. ``path`` and ``line`` say where, ``reason`` what."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}")


class MissingColumnError(DataFileError):
    """A required column is absent from the header."""


class MalformedTimestampError(DataFileError):
    """A timestamp does not parse in the file's documented format."""


class NonNumericValueError(DataFileError):
    """A value that must be a finite number is not."""


class DuplicateTimestampError(DataFileError):
    """The same interval appears twice."""


class UnsortedTimestampError(DataFileError):
    """Timestamps go backwards."""


class PriceGapError(DataFileError):
    """Hours are missing and the caller asked for gaps to be an error."""


class DistributionError(DataFileError):
    """A probability or quantile table is inconsistent (negative, not monotone, wrong shape)."""


class SpecError(DataFileError):
    """An EV specification entry is missing a field or has an impossible value."""


# --- scheduling inputs ----------------------------------------------------------


class InputError(SchedulerError, ValueError):
    """The scheduling inputs are inconsistent; the message names the element."""


class DepartureBeforeArrivalError(InputError):
    """A session departs at or before it arrives."""


class TargetAboveCapacityError(InputError):
    """A session asks for more energy than the vehicle's usable capacity."""


class UnknownVehicleError(InputError):
    """A session names a vehicle that is not in the fleet."""


class DuplicateIdError(InputError):
    """Two vehicles or two sessions share an id."""


class OverlappingSessionsError(InputError):
    """One vehicle is plugged in twice at the same time."""


class NonFiniteValueError(InputError):
    """A price, limit or load is NaN or infinite."""


class MisalignedIntervalError(InputError):
    """A series or event does not line up with the horizon's intervals."""


class InvalidParameterError(InputError):
    """A vehicle, site or cost parameter is out of its physical range."""


class InvalidDateError(InputError):
    """A date or time does not parse as ISO 8601 (``YYYY-MM-DD``) or is not a calendar date."""


class DateOutOfRangeError(InputError):
    """A date lies outside the data it needs (the price series, or the history a forecaster trains on)."""


class OutputConflictError(InputError):
    """An output directory holds results of another configuration, which a re-run would mix in."""


# --- solving --------------------------------------------------------------------


class InfeasibleScheduleError(SchedulerError):
    """No schedule meets every hard constraint. Subclasses say which one."""


class TargetUnreachableError(InfeasibleScheduleError):
    """A session's departure target exceeds what its charger can deliver while plugged in."""

    def __init__(self, session_id: str, vehicle_id: str, target_kwh: float, reachable_kwh: float) -> None:
        self.session_id = session_id
        self.vehicle_id = vehicle_id
        self.target_kwh = target_kwh
        self.reachable_kwh = reachable_kwh
        super().__init__(
            f"session {session_id} (vehicle {vehicle_id}): target {target_kwh:.3f} kWh at departure, "
            f"at most {reachable_kwh:.3f} kWh reachable at full power"
        )


class SiteLimitInfeasibleError(InfeasibleScheduleError):
    """The site's import or export limit cannot be met in some intervals (with every target met)."""

    def __init__(self, limit: str, intervals: list[str], excess_kw: list[float]) -> None:
        self.limit = limit
        self.intervals = intervals
        self.excess_kw = excess_kw
        shown = ", ".join(f"{t} (+{x:.3f} kW)" for t, x in list(zip(intervals, excess_kw, strict=True))[:5])
        more = f" and {len(intervals) - 5} more" if len(intervals) > 5 else ""
        super().__init__(f"site {limit} limit cannot be met in {len(intervals)} interval(s): {shown}{more}")


class ClusterUnreachableError(SchedulerError):
    """The Dask scheduler at the given address cannot be reached."""


class SolverFailedError(SchedulerError):
    """The solver stopped without a usable solution (time limit with no incumbent, numerical error)."""
