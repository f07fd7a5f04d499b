"""Memory a tick used goes back, and a big process pays little for what it holds for long.

Pages a tick's burst freed go back to the kernel after the tick, at most every few
seconds. The burst runs in a fresh process (so no other test's heap is measured), in a
thread as a tick does: 32 MiB in 16 KiB pieces, one piece kept above them, then the rest
freed. glibc keeps all of it resident until ``HeapTrimmer`` trims.

Python's collector walks a process's long-held objects less often once tuned
(``collector``), and still frees the cycles a tick drops.
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


COLLECTIONS = textwrap.dedent(
    """
    import gc, json, sys, weakref
    from reconciler.collector import tune_collector

    held = [[i] for i in range(300_000)]  # what a big process keeps for long
    if sys.argv[1] == "tuned":
        tune_collector()
    full = [0]
    gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                        and full.__setitem__(0, full[0] + 1))

    class Node:
        pass

    freed = []
    for round in range(20):
        tick = [[round, j] for j in range(200_000)]  # what a tick holds while it runs
        del tick
        a, b = Node(), Node()  # a cycle, dropped at once
        a.other, b.other = b, a
        weakref.finalize(a, freed.append, round)
        del a, b
    for _ in range(10_000):  # a few allocations later...
        [{}]
    print(json.dumps({"full": full[0], "cycles_freed": len(freed)}))
    """
)


def _collections(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", COLLECTIONS, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_the_tuned_collector_walks_everything_less_often_and_still_frees_cycles() -> None:
    default, tuned = _collections("default"), _collections("tuned")
    assert default["full"] >= 10, default  # Python's own thresholds: a full walk a round or so
    assert tuned["full"] * 4 <= default["full"], (default, tuned)
    # the young generations still free a dropped cycle soon after
    assert tuned["cycles_freed"] >= 19, tuned
