"""Pages a tick's burst freed go back to the kernel after the tick, at most every few seconds.

The burst runs in a fresh process (so no other test's heap is measured), in a thread as a
tick does: 32 MiB in 16 KiB pieces, one piece kept above them, then the rest freed. glibc
keeps all of it resident until ``HeapTrimmer`` trims.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from reconciler.gitstore.native_heap import HeapTrimmer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024

BURST = textwrap.dedent(
    """
    import json, threading
    from reconciler.gitstore.native_heap import HeapTrimmer

    def anon():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise SystemExit("no RssAnon")

    seen = {}

    def tick():
        pieces = [b"x" * 16384 for _ in range(2048)]
        kept = b"k" * 16384  # allocated above the burst: the arena's top cannot shrink
        seen["full"] = anon()
        del pieces
        seen["freed"] = anon()
        seen["trimmed"] = HeapTrimmer().after_tick()
        seen["after"] = anon()
        seen["kept"] = len(kept)

    worker = threading.Thread(target=tick)
    worker.start()
    worker.join()
    print(json.dumps(seen))
    """
)


def test_a_trim_after_a_tick_gives_back_what_its_burst_freed() -> None:
    assert HeapTrimmer().available, "the C library has no malloc_trim: not glibc?"
    done = subprocess.run(
        [sys.executable, "-c", BURST], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["trimmed"] is True
    # freeing alone gives nothing back: the piece kept above pins the whole burst
    assert seen["full"] - seen["freed"] < 4 * MIB, seen
    # the trim does, all but what is still in use
    assert seen["freed"] - seen["after"] > 28 * MIB, seen


def test_ticks_in_quick_succession_trim_once_per_interval() -> None:
    now = [100.0]
    trimmer = HeapTrimmer(every=5.0, clock=lambda: now[0])
    done = []
    for _ in range(30):  # thirty ticks, one every 0.5 s: fifteen seconds
        done.append(trimmer.after_tick())
        now[0] += 0.5
    assert done == ([True] + [False] * 9) * 3
    assert trimmer.trims == 3
