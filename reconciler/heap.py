"""Giving the C heap's free pages back to the kernel, at most every few seconds.

glibc's malloc hands memory back to the kernel only from the top of an arena: a page freed
below a chunk still in use stays resident. A tick allocates in bursts in its worker
thread's arena (libgit2 building a pack for a push, inflating trees, the cache merging its
packs), and one small allocation left above a burst pins all of it. The soak saw the
resident size step up by as much as 2.6 MiB at a promotion and never come down.
``malloc_trim(0)`` walks every arena and releases each whole free page wherever it lies;
with this process's heap that takes about 0.1 ms. Where the C library has no
``malloc_trim`` (musl, macOS), ``HeapTrimmer`` does nothing. It frees nothing that is in
use: Python objects and libgit2's caches are left exactly as they are.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

TRIM_EVERY = 5.0
"""Seconds between two trims at least: a tick a second would otherwise pay for each."""


def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc), or None when it has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Releases the heap's free pages after a tick, unless it did so less than ``every`` ago."""

    def __init__(
        self, every: float = TRIM_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Trim at most once per ``every`` seconds of ``clock``."""
        self.every = every
        self._clock = clock
        self._trim = _malloc_trim()
        self._last: float | None = None
        self._lock = threading.Lock()
        self.trims = 0
        """Trims done (tests and the soak read it)."""

    @property
    def available(self) -> bool:
        """Whether the C library can trim (glibc)."""
        return self._trim is not None

    def after_tick(self) -> bool:
        """Trim if the last trim is ``every`` seconds old; whether it trimmed."""
        if self._trim is None:
            return False
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self.every:
                return False
            self._last = now
            self._trim(0)
            self.trims += 1
        return True
