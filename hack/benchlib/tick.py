"""``tick``: one full tick of the loop with N running experiments, every one of them due.

The Env repo (``world``) is served by ``git daemon``; the reconciler runs with the demo's
in-memory cluster and profile-driven metrics, so no Prometheus or API server round trip is
in the figure: it is the loop's own cost. The first tick is a fresh process's (full fetch,
every experiment file discovered, every weight re-applied); the next ones are a running
process's, each one interval later. Each tick must record one transition per experiment,
as one commit each (invariant 3), in one push. Every tick also reads every experiment's
weights (invariant 8): the cluster counts its requests, as a LIST per kind and namespace
would be one, and the table shows them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchlib import world
from benchlib.common import AUTHOR, emit, git, git_env, machine, spread, table
from benchlib.phases import Phases
from reconciler import logs
from reconciler.collector import tune_collector
from reconciler.controller import records
from reconciler.controller.loop import Reconciler
from reconciler.engine import planner
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.steps import Steps
from reconciler.metrics.profile import ProfileMetrics
from reconciler.testing import DrivenClock

PHASES = (
    "fetch", "discover", "load", "traffic", "observe", "plan", "state docs", "commits", "pack",
    "push", "weights", "other",
)  # fmt: skip
REQUESTS_PER_SECOND = 2000.0


def _targets(reconciler: Reconciler, store: GitEnvStore) -> list[tuple[object, str, str]]:
    # Instrumentation reaches into the loop's parts on purpose; it changes no behaviour.
    discovery = vars(reconciler)["_discovery"]
    traffic = vars(reconciler)["_traffic"]
    observer = vars(reconciler)["_observer"]
    remote = vars(store)["_remote"]
    staging = vars(store).get("_staging")  # absent before the staging area existed
    targets: list[tuple[object, str, str]] = [
        (store, "fetch", "fetch"),
        (discovery, "scan", "discover"),
        (reconciler, "_load", "load"),
        (traffic, "observe", "traffic"),
        (observer, "observe", "observe"),
        (planner, "plan", "plan"),
        (records, "to_json", "state docs"),
        (store, "update_branch", "commits"),
        (remote, "push", "push"),
        # A long push's steps go from a thread of their own while commits are built; what
        # the tick waits for them is the push's (``GitEnvStore._push``).
        (Steps, "finish", "push"),
        (remote, "drop_ahead", "push"),
        (traffic, "set", "weights"),
    ]
    if staging is not None:
        targets.append((staging, "pack", "pack"))
    return targets


def measure(
    url: str, repo: Path, work: Path, *, count: int, per_namespace: int, runs: int
) -> list[dict[str, Any]]:
    """The first tick of a fresh process, then ``runs`` ticks of the running process."""
    env = git_env(work / "home")
    clock = DrivenClock(world.STARTED)
    cluster = world.cluster(count, per_namespace)
    metrics = ProfileMetrics(
        world.PROFILES, lambda _version: 50, clock, requests_per_second=REQUESTS_PER_SECOND
    )
    store = GitEnvStore.open(url, work / "cache.git", author=AUTHOR)
    reconciler = Reconciler(store, cluster, metrics, clock=clock)
    tune_collector()  # as ``reconciler run`` does once it is set up
    ticks = []
    for run in range(1 + runs):
        clock.advance(world.INTERVAL)
        before = git(env, "--git-dir", repo, "rev-parse", world.STATE_BRANCH)
        phases = Phases()
        reads, writes = cluster.reads, cluster.requests
        with phases.timing(_targets(reconciler, store)):
            started = time.perf_counter()
            report = reconciler.tick()
            total = time.perf_counter() - started
        if report.errors or len(report.recorded) != count:
            raise SystemExit(
                f"bench: tick {run} recorded {len(report.recorded)} of {count} transitions; "
                f"errors: {report.errors[:3]}"
            )
        after = git(env, "--git-dir", repo, "rev-parse", world.STATE_BRANCH)
        commits = int(git(env, "--git-dir", repo, "rev-list", "--count", f"{before}..{after}"))
        if commits != count:
            raise SystemExit(f"bench: {count} transitions became {commits} commits")
        seconds = dict(phases.seconds)
        seconds["other"] = total - sum(seconds.values())
        ticks.append(
            {
                "kind": "first" if run == 0 else "running",
                "seconds": total,
                "phases": seconds,
                "pushes": len(report.pushes),
                "push_attempts": [attempts for _branch, attempts in report.pushes],
                "commits": commits,
                "cluster_reads": cluster.reads - reads,
                "cluster_writes": cluster.requests - writes,
            }
        )
    store.close()
    return ticks


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py tick``."""
    logs.configure(json=False, level="warning")
    count, runs = (40, 2) if args.quick else (args.experiments, args.runs)
    per_namespace = min(args.per_namespace, count)
    with world.served("tick", count, per_namespace) as env_repo:
        ticks = measure(
            env_repo.url,
            env_repo.repo,
            env_repo.work,
            count=count,
            per_namespace=per_namespace,
            runs=runs,
        )
    first, running = ticks[0], ticks[1:]
    print(
        f"tick: {count} running experiments ({per_namespace} per namespace), all due; "
        f"Env repo built in {env_repo.built:.1f} s; ms"
    )
    columns = ("tick", "total", *PHASES, "pushes", "cluster reads", "writes")
    rows: list[list[object]] = [
        [
            "first",
            first["seconds"] * 1000,
            *(first["phases"].get(p, 0.0) * 1000 for p in PHASES),
            first["pushes"],
            first["cluster_reads"],
            first["cluster_writes"],
        ]
    ]
    medians = {
        p: spread([t["phases"].get(p, 0.0) for t in running])["median"] * 1000 for p in PHASES
    }
    total = spread([t["seconds"] for t in running])
    rows.append(
        [
            f"running (median of {len(running)})",
            total["median"] * 1000,
            *medians.values(),
            max(t["pushes"] for t in running),
            max(t["cluster_reads"] for t in running),
            max(t["cluster_writes"] for t in running),
        ]
    )
    print(table(columns, rows))
    print(
        f"running tick: median {total['median']:.2f} s, min {total['min']:.2f} s, max "
        f"{total['max']:.2f} s (goal < 2 s at 1,000), pushes per tick "
        f"{sorted({t['pushes'] for t in ticks})}, commits per tick = transitions = {count}, "
        f"cluster reads per tick {sorted({t['cluster_reads'] for t in ticks})} "
        f"(one per kind and namespace: {-(-count // per_namespace)} namespaces)"
    )
    emit(
        {
            "bench": "tick",
            "experiments": count,
            "runs": len(running),
            "seconds": total["median"],
            "seconds_min": total["min"],
            "seconds_max": total["max"],
            "first_tick_seconds": first["seconds"],
            "pushes_per_tick": max(t["pushes"] for t in ticks),
            "commits_per_tick": count,
            "cluster_reads_per_tick": max(t["cluster_reads"] for t in ticks),
            "cluster_writes_per_tick": max(t["cluster_writes"] for t in running),
            "phases_ms": medians,
            "first_tick_phases_ms": {p: first["phases"].get(p, 0.0) * 1000 for p in PHASES},
            "machine": machine(),
        }
    )
