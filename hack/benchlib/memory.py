"""``memory``: peak resident memory of one process holding N live experiments for a tick.

The Env repo (``world``: N running experiments, every one due) is built and served by
``git daemon`` from this process; a fresh Python process (``hack/bench.py memory
--child``) then does what a restarted reconciler does: open a new cache, fetch, and run
one full tick (discover every experiment file, load every state document, re-apply every
weight, observe, plan, record N transitions as N commits in one push, act). It reports
its resident memory after imports, after the tick, and at its peak (``ru_maxrss``, which
counts libgit2's allocations as well as Python's).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchlib import world
from benchlib.common import AUTHOR, HACK, emit, machine, table

_PAGE = resource.getpagesize()


def _rss_mib() -> float:
    """Resident memory now, MiB (from /proc/self/statm)."""
    resident = int(Path("/proc/self/statm").read_text().split()[1])
    return resident * _PAGE / 2**20


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM, RssAnon, RssFile...), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """The measured process: one tick with every experiment live."""
    from reconciler import logs  # noqa: PLC0415 - imports are part of what is measured
    from reconciler.collector import tune_collector  # noqa: PLC0415
    from reconciler.controller.loop import Reconciler  # noqa: PLC0415
    from reconciler.gitstore.repo import GitEnvStore  # noqa: PLC0415
    from reconciler.metrics.profile import ProfileMetrics  # noqa: PLC0415
    from reconciler.testing import DrivenClock  # noqa: PLC0415

    logs.configure(json=False, level="error")
    imported = _rss_mib()
    clock = DrivenClock(world.STARTED + world.INTERVAL)
    cluster = world.cluster(args.experiments, args.per_namespace)
    metrics = ProfileMetrics(world.PROFILES, lambda _version: 50, clock, requests_per_second=2000.0)
    store = GitEnvStore.open(args.url, Path(args.cache), author=AUTHOR)
    reconciler = Reconciler(store, cluster, metrics, clock=clock)
    tune_collector()  # as ``reconciler run`` does once it is set up
    started = time.perf_counter()
    report = reconciler.tick()
    seconds = time.perf_counter() - started
    peak = _peak_mib()
    store.wait_upkeep()  # the repack the tick set off runs in a process of its own
    print(
        json.dumps(
            {
                "imported_mib": imported,
                "after_tick_mib": _rss_mib(),
                "peak_mib": peak,
                "repack_peak_mib": store.cache_stats().repack_peak_mib,
                "anonymous_mib": _status_mib("RssAnon"),
                "file_mib": _status_mib("RssFile"),
                "tick_seconds": seconds,
                "live": sum(report.live.values()),
                "recorded": len(report.recorded),
                "pushes": len(report.pushes),
                "errors": report.errors[:3],
            }
        )
    )


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py memory``."""
    if args.child:
        child(args)
        return
    count = 200 if args.quick else args.experiments
    per_namespace = min(args.per_namespace, count)
    with world.served("memory", count, per_namespace) as env_repo:
        done = subprocess.run(
            [
                sys.executable,
                str(HACK / "bench.py"),
                "memory",
                "--child",
                "--url",
                env_repo.url,
                "--cache",
                str(env_repo.work / "cache.git"),
                "--experiments",
                str(count),
                "--per-namespace",
                str(per_namespace),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"bench: the measured process failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"] or result["live"] != count or result["recorded"] != count:
        raise SystemExit(f"bench: the tick did not hold {count} experiments: {result}")
    print(
        f"memory: one fresh process, {count} live experiments ({per_namespace} per namespace), "
        f"one tick recording {result['recorded']} transitions in {result['pushes']} push(es); "
        f"Env repo built in {env_repo.built:.1f} s"
    )
    rows = [
        ["after imports", result["imported_mib"]],
        ["after the tick", result["after_tick_mib"]],
        ["  of which anonymous (heap)", result["anonymous_mib"]],
        ["  of which file-backed (mapped packs, libraries)", result["file_mib"]],
        ["peak (ru_maxrss)", result["peak_mib"]],
        ["the repack it set off, its own process's peak", result["repack_peak_mib"]],
    ]
    print(table(("resident memory", "MiB"), rows))
    print(f"tick took {result['tick_seconds']:.1f} s; goal at 10,000: peak < 500 MiB")
    emit(
        {
            "bench": "memory",
            "experiments": count,
            "peak_mib": result["peak_mib"],
            "repack_peak_mib": result["repack_peak_mib"],
            "after_tick_mib": result["after_tick_mib"],
            "imported_mib": result["imported_mib"],
            "tick_seconds": result["tick_seconds"],
            "pushes": result["pushes"],
            "machine": machine(),
        }
    )
