"""Python's cyclic garbage collector, set for a process that holds many objects for long.

A process with 10,000 live experiments holds about 800,000 objects that the collector
tracks, and a full collection (the oldest generation) walks every one: 0.7 s each. With
Python's thresholds (700, 10, 10) a tick recording 10,000 transitions set off 3 full
collections (2.2 s of an 18 s tick), the first tick of such a process 10 (2.7 s)
(``hack/bench.py tick``). ``tune_collector`` lets a full collection come only after 100
collections of the middle generation instead of 10: at most one per 700,000 tracked
objects allocated beyond those freed (70,000 before), which one tick seldom makes; the young
generations are collected as before, so short-lived cycles (an exception and its
traceback, say) are freed as soon as they were. And the objects alive once the process
is set up (modules, classes, the settings: about 70,000) are moved out of every later
collection's walk (``gc.freeze``): they live as long as the process, so walking them
found nothing to free (a cycle among them that a config reload drops is never freed:
a few objects a reload). It never turns collection off: cycles are freed, later.
"""

from __future__ import annotations

import gc

__all__ = ["FULL_AFTER", "tune_collector"]

FULL_AFTER = 100
"""Collections of the middle generation before a full one may run (Python's: 10)."""


def tune_collector() -> None:
    """Set the thresholds above and freeze what is alive now (process-wide; call once set up)."""
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_AFTER)
    gc.collect()
    gc.freeze()
