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
