"""How each long-running process of the platform sets up its interpreter (the ``v2g`` command, a CSMS
process of the pool, the metering service)."""

from __future__ import annotations

import gc

#: CPython's cyclic garbage collector looks at its youngest generation every ``GC_THRESHOLDS[0]`` net new
#: container objects (700 by default), at the middle one every ``GC_THRESHOLDS[1]`` of those (10), at
#: everything every ``GC_THRESHOLDS[2]`` of those (10; and then only when the objects promoted since are a
#: quarter of the old ones).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """The garbage collector's thresholds for a service that makes many short-lived objects at once.

    A fleet re-plan makes a few million dicts, lists and tasks (a profile is some 30 containers) that live
    for a fraction of a second, until their station has answered. At CPython's default of a collection per
    700 new containers, most of them were traversed at two collections and promoted to the oldest
    generation, whose growth then set off a traversal of the whole heap several times per re-plan:
    measured with ``scripts/bench_operations.py`` at 10,000 stations, 1.0-1.4 s of the planner's 3.7-4.1 s
    of CPU in each re-plan, and in each CSMS process of a 2,000-station run 4.1 s of garbage collection
    over the run (0.09 s at these thresholds). Reference counting still frees every object that is not in
    a cycle at once; what waits longer is cyclic garbage: until the next young collection (50,000 net new
    containers), or, if it was still alive at one, until the middle generation's (a million), whose pass
    is correspondingly longer (tens of ms where CPython's were a few).
    """
    gc.set_threshold(*GC_THRESHOLDS)
