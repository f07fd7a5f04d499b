#!/usr/bin/env python3
"""Benchmarks that print a table and a final JSON line. Not tests: nothing is asserted.

    python hack/bench.py recovery --experiments 1000 --history 100000
    python hack/bench.py promote --runs 15           # ours vs the shell way vs a bare push
    python hack/bench.py race --rate 5 --seconds 20 --promotions 100 --transport https
    python hack/bench.py tick --experiments 1000     # one full tick, time per phase
    python hack/bench.py memory --experiments 10000  # peak RSS of a process holding them
    python hack/bench.py soak --minutes 60            # reconciler run sampled for growth
    python hack/bench.py stats --runs 1000            # the engine's decisions, calibrated?
    python hack/bench.py load --qps 1000 --runs 100   # the built-in load: rate, added latency
    python hack/bench.py fleet --repos 100            # one process, many Env repos; take-over

Each builds what it needs in a temporary directory (Env repo, ``git daemon`` and ``git
http-backend`` on 127.0.0.1) and stops what it started; ``--quick`` runs a small version
in seconds (the test suite runs those). ``promote``, ``race``, ``tick`` and ``memory``
live in ``hack/benchlib/`` (their docstrings say exactly what is timed); the shell way
they compare with is ``hack/shell-promote.sh``.

``recovery`` builds a state branch with N live experiments and H commits of history
(with ``git fast-import``, so building is quick), then, in a fresh Python process, times
what recovery does: open the Env repo's cache, read the tip's ``experiments/`` and parse
every state document into ``ExperimentState`` values. It runs the same measurement at a
short history (1,000 commits) for comparison: the cost must not grow with history.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

from reconciler.engine import experiment
from reconciler.engine.state import to_json
from reconciler.gitstore.state_branch import live_path
from reconciler.spec.loader import load_experiments

# ``python hack/bench.py`` puts hack/ on sys.path, for benchlib; benchlib imports what the
# tests already have from ``tests``, at the repository's root.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from benchlib import fleet, load, memory, promote, race, soak, stats, tick

BRANCH = "reconciler-state"

FETCHER = """
import sys, pathlib
from reconciler import logs
logs.configure(json=False, level="warning")
from reconciler.gitstore.repo import GitEnvStore
GitEnvStore.open(sys.argv[1], pathlib.Path(sys.argv[2]), author=("b", "b@b")).fetch()
"""

LOADER = """
import json, sys, time
t0 = time.perf_counter()
from reconciler import logs
logs.configure(json=False, level="warning")
from reconciler.engine.state import from_json
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.state_branch import load_live
t1 = time.perf_counter()
store = GitEnvStore.open(sys.argv[1], __import__('pathlib').Path(sys.argv[2]), author=("b", "b@b"))
tip = store.tip(store.state_branch)
t2 = time.perf_counter()
raw = load_live(store, tip)
t3 = time.perf_counter()
states = [from_json(b) for b in raw.values()]
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "read": t3 - t2, "parse": t4 - t3,
                  "load": t4 - t1, "experiments": len(states)}))
"""


def _documents(count: int) -> list[tuple[str, bytes]]:
    data = resources.files("reconciler.demo").joinpath(
        "data", "apps", "bookinfo", "experiment.yaml"
    )
    spec = load_experiments("apps/bookinfo/experiment.yaml", data.read_bytes()).experiments[0]
    docs = []
    for i in range(count):
        one = replace(spec, name=f"exp-{i:05d}", namespace=f"team-{i % 10}")
        state = experiment.start(
            one, spec_blob=f"{i:040x}", source_commit="a" * 40, now=1.7e9
        ).state
        docs.append((live_path(one.namespace, one.name), to_json(state)))
    return docs


def build(repo: Path, experiments: int, history: int) -> None:
    """A bare repo whose state branch has ``experiments`` live docs and ``history`` commits."""
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    docs = _documents(experiments)
    proc = subprocess.Popen(
        ["git", "--git-dir", str(repo), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    if proc.stdin is None:
        raise SystemExit("git fast-import has no stdin")
    out = proc.stdin

    def commit(mark: int, message: str, files: list[tuple[str, bytes]], parent: int | None) -> None:
        out.write(f"commit refs/heads/{BRANCH}\nmark :{mark}\n".encode())
        out.write(
            f"committer bench <bench@example.invalid> {1_700_000_000 + mark} +0000\n".encode()
        )
        out.write(f"data {len(message)}\n{message}\n".encode())
        if parent is not None:
            out.write(f"from :{parent}\n".encode())
        for path, content in files:
            out.write(f"M 100644 inline {path}\ndata {len(content)}\n".encode() + content + b"\n")

    commit(1, "initial state", docs, None)
    for n in range(2, history + 1):
        path, content = docs[n % len(docs)]
        bumped = content.replace(b'"iteration": 0', f'"iteration": {n % 7}'.encode(), 1)
        commit(n, f"iteration {n}\n\nRollout-Iteration: {n % 7}", [(path, bumped)], n - 1)
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")


def measure(repo: Path, work: Path, runs: int) -> list[dict[str, float]]:
    results = []
    for run in range(runs):
        cache = work / f"cache-{repo.name}-{run}"
        # Fill the cache first (a fetch grows with history; recovery's read must not).
        subprocess.run(
            [
                sys.executable,
                "-c",
                FETCHER,
                str(repo),
                str(cache),
            ],
            check=True,
        )
        out = subprocess.run(
            [sys.executable, "-c", LOADER, str(repo), str(cache)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out))
    return results


def recovery(args: argparse.Namespace) -> None:
    if args.quick:
        args.experiments, args.history, args.runs = 20, 50, 1
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        work = Path(tmp)
        rows = []
        for history in sorted({min(1000, args.history), args.history}):
            repo = work / f"state-{history}.git"
            started = time.perf_counter()
            build(repo, args.experiments, history)
            built = time.perf_counter() - started
            runs = measure(repo, work, args.runs)
            rows.append((history, built, runs))
    print(
        f"recovery: {args.experiments} live experiments, median of {args.runs} fresh processes each"
    )
    columns = ("history", "build s", "open ms", "read ms", "parse ms", "load ms")
    print(" ".join(f"{c:>9}" for c in columns))
    for history, built, runs in rows:
        med = {
            k: statistics.median(r[k] for r in runs) * 1000
            for k in ("open", "read", "parse", "load")
        }
        cells = (built, med["open"], med["read"], med["parse"], med["load"])
        print(f"{history:>9} " + " ".join(f"{c:>9.1f}" for c in cells))
    history, _, runs = rows[-1]
    print(
        json.dumps(
            {
                "bench": "recovery",
                "experiments": args.experiments,
                "history": history,
                "seconds": round(statistics.median(r["load"] for r in runs), 4),
                "seconds_at_history_1000": round(
                    statistics.median(r["load"] for r in rows[0][2]), 4
                ),
            }
        )
    )


def _stop(signum: int, _frame: object) -> None:
    """End the bench as Ctrl-C would: its ``finally`` blocks stop the servers it started."""
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="bench", required=True)
    rec = sub.add_parser("recovery", help="load all live state from a fresh process")
    rec.add_argument("--experiments", type=int, default=1000)
    rec.add_argument("--history", type=int, default=100_000)
    rec.add_argument("--runs", type=int, default=3)
    rec.add_argument("--quick", action="store_true", help="a few experiments, for the test suite")
    pro = sub.add_parser("promote", help="one promotion: ours, the shell way, a bare push")
    pro.add_argument("--runs", type=int, default=15)
    pro.add_argument("--servers", default="git,http", help="git (git daemon), http, or both")
    pro.add_argument("--quick", action="store_true", help="a few runs, for the test suite")
    rac = sub.add_parser("race", help="promotions while a CI process keeps pushing to main")
    rac.add_argument("--rate", type=float, default=5.0, help="CI commits per second")
    rac.add_argument("--seconds", type=float, default=20.0)
    rac.add_argument("--promotions", type=int, default=100)
    rac.add_argument("--transport", choices=("git", "http", "https"), default="git")
    rac.add_argument(
        "--interval", type=float, default=2.0, help="seconds between two ticks of ours"
    )
    rac.add_argument("--no-shell", action="store_true", help="skip the shell way's series")
    rac.add_argument("--quick", action="store_true", help="a few seconds, for the test suite")
    tic = sub.add_parser("tick", help="one tick of the loop with N running experiments")
    tic.add_argument("--experiments", type=int, default=1000)
    tic.add_argument("--per-namespace", type=int, default=100)
    tic.add_argument("--runs", type=int, default=5, help="ticks of the running process")
    tic.add_argument("--quick", action="store_true", help="a few experiments, for the test suite")
    mem = sub.add_parser("memory", help="peak memory of a process holding N live experiments")
    mem.add_argument("--experiments", type=int, default=10_000)
    mem.add_argument("--per-namespace", type=int, default=100)
    mem.add_argument("--quick", action="store_true", help="a few experiments, for the test suite")
    mem.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    mem.add_argument("--url", help=argparse.SUPPRESS)
    mem.add_argument("--cache", help=argparse.SUPPRESS)
    sok = sub.add_parser("soak", help="reconciler run for N minutes, sampled for growth")
    sok.add_argument("--minutes", type=float, default=60.0)
    sok.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    sok.add_argument("--rate", type=float, default=1.0, help="CI commits per second on main")
    sok.add_argument("--canary-every", type=float, default=90.0, help="seconds between canaries")
    sok.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    sok.add_argument(
        "--warmup",
        type=float,
        help="seconds left out of the slopes (default: a fifth of the run, at most 300)",
    )
    sok.add_argument("--samples", help="write every sample to this file, one JSON line each")
    sok.add_argument("--profile", help="heap snapshots and tick profiles into this directory")
    sok.add_argument("--quick", action="store_true", help="one minute, for the test suite")
    sta = sub.add_parser("stats", help="the engine's decisions simulated: error rates and power")
    sta.add_argument("--runs", type=int, default=1000, help="simulated experiments a row")
    sta.add_argument("--seed", type=int, default=1)
    sta.add_argument("--quick", action="store_true", help="a few runs, for the test suite")
    load.add_parser(sub)
    fleet.add_parser(sub)
    args = parser.parse_args()
    run = {
        "recovery": recovery,
        "promote": promote.run,
        "race": race.run,
        "tick": tick.run,
        "memory": memory.run,
        "soak": soak.run,
        "stats": stats.run,
        "load": load.run,
        "fleet": fleet.run,
    }
    run[args.bench](args)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)  # a bare SIGTERM left git daemon, Prometheus running
    main()
