"""When each Env repo ticks: its interval, wake-ups, and backoff while it keeps failing.

Pure (the clock is passed in) and not thread-safe: the runner calls it under its lock.
Each repo has a due time. A repo is handed to one worker at a time; a wake-up while it
runs (a push during its tick) makes it tick again right after, so no push is missed. The
next tick is an interval after a tick's end, not its start: an experiment records its
iteration's time during the tick, so a tick an interval after the last one's start often
found it a moment short of due and judged nothing (tried: 27 iterations in 25 ticks of 2
experiments each, ``hack/bench.py fleet --quick``). Iterations are thus an interval plus a
tick's wall time apart. A
tick that fails is retried at the repo's interval; from ``TRIP_AFTER`` failures in a row
the repo's circuit is open: the wait doubles each time, up to ``MAX_BACKOFF`` seconds, and
a wake-up does not shorten it (a Git server that is down is not asked again because of a
webhook). One success closes the circuit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TRIP_AFTER = 3
"""Failures in a row that open a repo's circuit."""
MAX_BACKOFF = 300.0
"""The longest wait between two tries of a failing repo (never shorter than its interval)."""


@dataclass
class _Slot:
    interval: float
    due: float
    failures: int = 0
    running: bool = False
    again: bool = False


class Schedule:
    """Due times of the repos served (bounded by them: a removed repo is forgotten)."""

    def __init__(self) -> None:
        """No repo yet."""
        self._slots: dict[str, _Slot] = {}
        self._leaving: set[str] = set()
        """Repos removed while a worker still ticks them (forgotten when that tick ends)."""

    def __contains__(self, repo: object) -> bool:
        """Whether ``repo`` is scheduled."""
        return repo in self._slots

    def add(self, repo: str, interval: float, now: float) -> None:
        """Schedule ``repo`` every ``interval`` seconds, its first tick now (kept if known)."""
        slot = self._slots.get(repo)
        if repo in self._leaving:
            # Served again while its last tick runs: not handed out twice, due right after.
            self._leaving.discard(repo)
            self._slots[repo] = _Slot(interval, now, running=True, again=True)
        elif slot is None:
            self._slots[repo] = _Slot(interval, now)
        else:
            slot.interval = interval

    def remove(self, repo: str) -> None:
        """Forget ``repo`` (a tick of it that still runs is awaited, not repeated)."""
        slot = self._slots.pop(repo, None)
        if slot is not None and slot.running:
            self._leaving.add(repo)

    def wake(self, repo: str, now: float) -> bool:
        """Tick ``repo`` as soon as a worker is free; False while its circuit is open."""
        slot = self._slots.get(repo)
        if slot is None or self.circuit_open(repo):
            return False
        if slot.running:
            slot.again = True
        else:
            slot.due = min(slot.due, now)
        return True

    def running(self, repo: str) -> bool:
        """Whether ``repo`` is with a worker now."""
        slot = self._slots.get(repo)
        return slot is not None and slot.running

    def due(self, now: float) -> list[str]:
        """The repos to tick now, the longest overdue first."""
        ready = [(s.due, r) for r, s in self._slots.items() if not s.running and s.due <= now]
        return [repo for _, repo in sorted(ready)]

    def start(self, repo: str) -> None:
        """``repo`` is handed to a worker."""
        slot = self._slots[repo]
        slot.running, slot.again = True, False

    def finish(self, repo: str, now: float, *, ok: bool) -> None:
        """``repo``'s tick ended (``ok``: it went well); when it is due next follows."""
        if repo in self._leaving:
            self._leaving.discard(repo)
            return
        slot = self._slots.get(repo)
        if slot is None:
            return
        slot.running = False
        slot.failures = 0 if ok else slot.failures + 1
        wait = self.wait_after(slot.interval, slot.failures)
        slot.due = now if slot.again and slot.failures < TRIP_AFTER else now + wait
        slot.again = False

    def postpone(self, repo: str, now: float) -> None:
        """``repo`` is not ours to tick now (a follower): look again after its interval."""
        slot = self._slots.get(repo)
        if slot is not None and not slot.running:
            slot.due = now + slot.interval

    @staticmethod
    def wait_after(interval: float, failures: int) -> float:
        """Seconds before the next tick after ``failures`` failed ticks in a row."""
        if failures < TRIP_AFTER:
            return interval
        doubled = interval * 2.0 ** min(failures - TRIP_AFTER + 1, 30)
        return max(interval, min(MAX_BACKOFF, doubled))

    def failures(self, repo: str) -> int:
        """Ticks of ``repo`` in a row that failed."""
        slot = self._slots.get(repo)
        return 0 if slot is None else slot.failures

    def circuit_open(self, repo: str) -> bool:
        """Whether ``repo`` failed often enough to wait out its backoff."""
        return self.failures(repo) >= TRIP_AFTER

    def retry_in(self, repo: str, now: float) -> float | None:
        """Seconds until ``repo`` is tried again while its circuit is open (None: closed)."""
        slot = self._slots.get(repo)
        if slot is None or slot.failures < TRIP_AFTER:
            return None
        return round(max(0.0, slot.due - now), 3)

    def next_wait(self, now: float) -> float:
        """Seconds until some repo is due (``inf``: none is)."""
        waits = [s.due - now for s in self._slots.values() if not s.running]
        return max(0.0, min(waits, default=math.inf))
