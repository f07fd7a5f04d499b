"""``load``: the built-in load generator's achieved rate and the latency it adds.

A fast local server (``sink``, a child process pinned to the second core) answers ``ok``
at once and times itself per request (from the request read to the answer written). This
process runs ``HttpLoad`` pinned to the first core, so the generator has one core to itself
and the server the other. Two series:

- **one run**: one version at ``--qps`` (default 1,000) with Iter8's 4 connections;
- **many runs**: ``--runs`` runs (default 100) of two versions each, loading at once,
  sharing ``--qps`` between them (5 requests a second to each version by default).

Each series loads for a second of warm-up, then ``--seconds`` of measurement. Measured over
that window only (the stats' histograms are read at both ends and subtracted): the achieved
rate (requests finished a second; the target is what was asked), the generator process's CPU
share (process time over wall time: 1.0 is one core), the client-observed latency
percentiles (what ``observe`` reports), the server-side time's, and their difference at the
median: the latency the generator adds (target: under 1 ms at 1,000 requests a second). For
the many runs it also times what the loop will do each tick: one ``converge`` of every plan
(none changed) and ``observe`` of all nine metrics of every version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib.common import emit, machine, median, table
from reconciler import logs
from reconciler.config import LoadSettings
from reconciler.load.generator import HttpLoad
from reconciler.load.stats import BUILTIN_METRICS, Histogram, VersionStats
from reconciler.ports import LoadPlan
from reconciler.spec.model import Load, VersionLoad

SINK = Path(__file__).resolve().parent / "sink.py"
WARMUP = 1.0
CONNECTIONS = 4


@contextmanager
def sink(cpu: int) -> Iterator[int]:
    """The sink server's port, for as long as the block runs."""
    process = subprocess.Popen(
        [sys.executable, str(SINK), str(cpu)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline() if process.stdout is not None else ""
        if not line.strip().isdigit():
            raise SystemExit(f"bench: the sink server did not start ({line!r})")
        yield int(line)
    finally:
        process.terminate()
        process.wait(10)


def ask(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        body = answer.read()
    return json.loads(body) if body.startswith(b"{") else {}


def plans_for(runs: int, versions: int, qps: float) -> dict[str, LoadPlan]:
    plans = {}
    for r in range(runs):
        run_id = f"bench-{r % 10}/exp-{r:03d}@{r:012x}"
        namespace = run_id.split("/", maxsplit=1)[0]
        load = Load(
            versions=tuple(
                VersionLoad(f"v{v}", f"http://sink.{namespace}.svc/") for v in range(versions)
            ),
            qps=qps,
            connections=CONNECTIONS,
            timeout_seconds=5.0,
        )
        plans[run_id] = LoadPlan(run_id, namespace, load, interval_seconds=10.0)
    return plans


def snapshot(load: HttpLoad, plans: dict[str, LoadPlan]) -> dict[tuple[str, str], VersionStats]:
    out = {}
    for run_id, plan in plans.items():
        for version in plan.load.versions:
            got = load.stats(run_id, version.version)
            out[run_id, version.version] = got if got is not None else VersionStats()
    return out


def window(
    before: dict[tuple[str, str], VersionStats], after: dict[tuple[str, str], VersionStats]
) -> tuple[Histogram, int]:
    """The latencies and the errors of the requests finished between two snapshots."""
    merged = Histogram()
    errors = 0
    for key, late in after.items():
        early = before.get(key, VersionStats())
        errors += late.errors - early.errors
        for bucket, n in late.latency.counts.items():
            delta = n - early.latency.counts.get(bucket, 0)
            if delta:
                merged.counts[bucket] = merged.counts.get(bucket, 0) + delta
                merged.total += delta
        merged.sum_micros += late.latency.sum_micros - early.latency.sum_micros
    return merged, errors


def measure(port: int, *, runs: int, versions: int, qps: float, seconds: float) -> dict[str, Any]:
    """One series: load, warm up, measure a window, stop."""
    plans = plans_for(runs, versions, qps)
    resolve = tuple(f"sink.bench-{n}.svc=127.0.0.1:{port}" for n in range(10))
    settings = LoadSettings(
        resolve=resolve, max_qps_per_experiment=1e6, max_qps_total=1e6, max_connections=64
    )
    with HttpLoad.from_settings(settings) as load:
        refused = load.converge(plans)
        if refused:
            raise SystemExit(f"bench: plans refused: {list(refused.items())[:3]}")
        time.sleep(WARMUP)
        ask(port, "/__reset")
        before, cpu0, t0 = snapshot(load, plans), time.process_time(), time.monotonic()
        time.sleep(seconds)
        after, cpu1, t1 = snapshot(load, plans), time.process_time(), time.monotonic()
        server = ask(port, "/__stats")
        converge_ms, observe_ms = [], []
        for _ in range(5):
            started = time.perf_counter()
            load.converge(plans)
            converge_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            for run_id, plan in plans.items():
                for version in plan.load.versions:
                    for metric in BUILTIN_METRICS:
                        load.observe(run_id, version.version, metric)
            observe_ms.append((time.perf_counter() - started) * 1000)
    latency, errors = window(before, after)
    wall = t1 - t0
    client = {p: latency.percentile(p) / 1000 for p in (50, 90, 99)} if latency.total else {}
    return {
        "runs": runs,
        "versions": runs * versions,
        "target_qps": runs * versions * qps,
        "achieved_qps": latency.total / wall,
        "errors": errors,
        "requests": latency.total,
        "cpu": (cpu1 - cpu0) / wall,
        "client_ms": client,
        "client_mean_ms": latency.sum_micros / latency.total / 1000 if latency.total else 0.0,
        "server_ms": {p: server.get(f"p{p}_us", 0.0) / 1000 for p in (50, 90, 99)},
        "server_requests": server.get("count", 0),
        "added_p50_ms": client.get(50, 0.0) - server.get("p50_us", 0.0) / 1000,
        "converge_ms": median(converge_ms),
        "observe_ms": median(observe_ms),
    }


def add_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's subparsers action
    """``load``'s options, under ``hack/bench.py``'s subcommands."""
    lod = sub.add_parser("load", help="the built-in load generator: achieved rate, added latency")
    lod.add_argument("--qps", type=float, default=1000.0, help="requests a second of one run")
    lod.add_argument("--runs", type=int, default=100, help="runs loading at once (2 versions)")
    lod.add_argument("--run-qps", type=float, default=5.0, help="to each version of those runs")
    lod.add_argument("--seconds", type=float, default=10.0, help="measured, after warming up")
    lod.add_argument("--quick", action="store_true", help="a few seconds, for the test suite")


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py load``."""
    logs.configure(json=False, level="warning")
    if args.quick:
        args.qps, args.seconds, args.runs, args.run_qps = 200.0, 2.0, 10, 5.0
    pinned = (os.cpu_count() or 1) > 1
    if pinned:
        os.sched_setaffinity(0, {0})  # before HttpLoad starts its thread: it inherits this
    with sink(cpu=1) as port:
        one = measure(port, runs=1, versions=1, qps=args.qps, seconds=args.seconds)
        many = measure(port, runs=args.runs, versions=2, qps=args.run_qps, seconds=args.seconds)
    print(
        f"load: generator pinned to core 0, sink server to core 1 ({'yes' if pinned else 'no'}: "
        f"{os.cpu_count()} cores); {args.seconds:g} s measured after {WARMUP:g} s of warm-up; "
        f"{CONNECTIONS} connections a version; ms"
    )
    columns = (
        "series", "target qps", "achieved", "cpu", "client p50", "p90", "p99", "server p50",
        "added p50", "converge", "observe all",
    )  # fmt: skip
    rows = []
    for name, series in (("one run", one), (f"{args.runs} runs x 2 versions", many)):
        rows.append(
            [
                name,
                series["target_qps"],
                series["achieved_qps"],
                f"{series['cpu']:.2f}",
                f"{series['client_ms'].get(50, 0):.3f}",
                f"{series['client_ms'].get(90, 0):.3f}",
                f"{series['client_ms'].get(99, 0):.3f}",
                f"{series['server_ms'][50]:.3f}",
                f"{series['added_p50_ms']:.3f}",
                f"{series['converge_ms']:.2f}",
                f"{series['observe_ms']:.2f}",
            ]
        )
    print(table(columns, rows))
    for name, series in (("one run", one), ("many runs", many)):
        if series["errors"]:
            print(f"{name}: {series['errors']} errors in the window")
    emit({"bench": "load", "one": one, "many": many, "pinned": pinned, "machine": machine()})
