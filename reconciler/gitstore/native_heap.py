"""When the C library gives the memory libgit2 freed back to the system (glibc; else nothing).

A long-running process must not keep the high-water mark of its largest tick resident for
ever. glibc keeps freed pages in the arena that freed them, and raises its thresholds as
large blocks come and go; this module fixes them once (``fix_malloc_thresholds``, at store
start-up). On a C library without ``mallopt`` (musl, macOS) it does nothing. The largest
allocations, a repack's, are made in a process of their own (``repack``) since 2026-12-07.
"""

from __future__ import annotations

import ctypes

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "fix_malloc_thresholds"]

_LIBC = ctypes.CDLL(None)
"""The C library the process runs on (for ``mallopt``, where it has it)."""
TRIM_THRESHOLD = 1024 * 1024
"""Free memory at the top of a malloc arena above this is given back at once (glibc's
``M_TRIM_THRESHOLD``; ``fix_malloc_thresholds``)."""
MMAP_THRESHOLD = 4 * 1024 * 1024
"""Allocations from this size get pages of their own (glibc's ``M_MMAP_THRESHOLD``)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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
