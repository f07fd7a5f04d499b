"""When the C library gives the memory libgit2 freed back to the system (glibc; else nothing).

A long-running process must not keep the high-water mark of its largest tick resident for
ever. glibc keeps freed pages in the arena that freed them, and raises its thresholds as
large blocks come and go; this module fixes them once (``fix_malloc_thresholds``, at store
start-up). On a C library without ``mallopt`` (musl, macOS) it does nothing. The largest
allocations, a repack's, are made in a process of their own (``repack``) since 2026-12-07.

glibc gives memory back only from the top of an arena, so a page freed below a chunk
still in use stays resident. A tick allocates in bursts in its worker thread's arena
(libgit2 building a pack for a push, inflating trees, the cache merging its packs), and
one small allocation left above a burst pins all of it: the soak saw the resident size
step up by as much as 2.6 MiB at a promotion and never come down. ``HeapTrimmer`` calls
``malloc_trim(0)`` after a tick, every ``TRIM_EVERY`` seconds at most; it releases each
whole free page wherever it lies, in every arena, in about 0.1 ms with this process's
heap, and frees nothing in use.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

__all__ = [
    "MMAP_THRESHOLD",
    "TRIM_EVERY",
    "TRIM_THRESHOLD",
    "HeapTrimmer",
    "fix_malloc_thresholds",
]

_LIBC = ctypes.CDLL(None)
"""The C library the process runs on (for ``mallopt``, where it has it)."""
TRIM_THRESHOLD = 1024 * 1024
"""Free memory at the top of a malloc arena above this is given back at once (glibc's
``M_TRIM_THRESHOLD``; ``fix_malloc_thresholds``)."""
MMAP_THRESHOLD = 4 * 1024 * 1024
"""Allocations from this size get pages of their own (glibc's ``M_MMAP_THRESHOLD``)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_EVERY = 5.0
"""Seconds between two trims at least: a tick a second would otherwise pay for each."""


def fix_malloc_thresholds() -> None:
    """Fix glibc's thresholds for giving memory back (process-wide; elsewhere nothing).

    glibc raises both thresholds each time a block that had pages of its own is freed (up
    to 32 and 64 MiB), so after a few repacks (when they ran in a thread of this process)
    the free top of the repack thread's arena was never trimmed, and ``malloc_trim`` does
    not trim the top of a thread's arena: over 50 repacks of a growing cache that arena
    kept 2.4 to 4.1 MiB more resident, 0.5 to 1.1 MiB with these (``in use`` flat either
    way). At glibc's own starting values (128 KiB each) a 1,000-experiment tick took
    1.19 s instead of 0.83 (``hack/bench.py tick``); at these, 0.76 s.
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


class HeapTrimmer:
    """Releases the heap's free pages after a tick, unless it did so less than ``every`` ago."""

    def __init__(
        self, every: float = TRIM_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Trim at most once per ``every`` seconds of ``clock``."""
        self.every = every
        self._clock = clock
        self._trim: Callable[[int], int] | None = getattr(_LIBC, "malloc_trim", None)
        if self._trim is not None:
            self._trim.argtypes = [ctypes.c_size_t]
        self._last: float | None = None
        self._lock = threading.Lock()
        self.trims = 0
        """Trims done."""

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
