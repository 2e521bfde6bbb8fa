"""The platform's clock: the wall clock, or a drill's.

A drill (``scripts/soak_service.py``, a rehearsal of days in minutes) sets ``V2G_DRILL_CLOCK`` to
``<simulated start, ISO 8601>@<real start, Unix seconds>x<speed>``: every process of the platform then
reads the same simulated time, ``start + (real now - real start) * speed``, so a process started again
mid-drill carries on at the drill's time, not at its own beginning. Unset, the clock is the wall clock
(speed 1). Only the live platform's time is simulated (the CSMS, the re-planning loop, the settler's
"has the day ended", the market clock); the chain keeps its own."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

#: Where interval boundaries are counted from (the simulator's 15-minute meter samples, OpenADR's
#: report intervals): a UTC midnight, so intervals of any length that divides a day start at midnight.
GRID_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class DrillClockError(ValueError):
    """``V2G_DRILL_CLOCK`` that is not ``<ISO start>@<unix seconds>x<speed>``."""


class Clock:
    """Callable UTC time; ``factor`` simulated seconds pass per real second."""

    def __init__(
        self, start: datetime | None = None, real_start: float | None = None, factor: float = 1.0
    ) -> None:
        self.start = start
        self.real_start = real_start
        self.factor = factor

    def __call__(self) -> datetime:
        if self.start is None or self.real_start is None:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=(time.time() - self.real_start) * self.factor)


def platform_clock() -> Clock:
    """The clock of this process: the drill's (``V2G_DRILL_CLOCK``) or the wall clock."""
    text = os.environ.get("V2G_DRILL_CLOCK")
    if not text:
        return Clock()
    try:
        start_text, rest = text.split("@", 1)
        real_text, speed_text = rest.split("x", 1)
        start = datetime.fromisoformat(start_text).astimezone(UTC)
        clock = Clock(start, float(real_text), float(speed_text))
    except ValueError as exc:
        raise DrillClockError(
            f"V2G_DRILL_CLOCK={text}: expected <ISO start>@<unix seconds>x<speed> ({exc})"
        ) from None
    if not clock.factor > 0:
        raise DrillClockError(f"V2G_DRILL_CLOCK={text}: the speed must be > 0")
    return clock
