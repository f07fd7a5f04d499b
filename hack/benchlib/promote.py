"""``promote``: one promotion, the reconciler's way, the shell way, and the floor.

Per server (``git daemon`` and ``git http-backend`` on loopback), three series alternate in
one process run, in a rotating order so that neither gains from going first:

- ours: what the loop does for a recorded decision (``outcomes.Finisher``, through
  ``controller.outcomes.push_outcomes``): fetch main afresh, look for the outcome by
  ``Rollout-Id``, read the files the edits need, apply the promotion transforms, build the
  commit in memory and push it compare-and-swap. The tick's own fetch before it is timed
  apart.
- shell: ``hack/shell-promote.sh``, Iter8's tutorial task done carefully (shallow clone,
  one line edited, commit, push, pull --rebase and retry).
- floor: a bare ``git push`` of a one-line commit from an up-to-date clone (the commit is
  made, and the clone brought up to date, outside the timing).

Every run's commit is checked to be a one-line change of the kustomization.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from benchlib import app
from benchlib.common import AUTHOR, HACK, emit, git, git_env, machine, median, spread, table
from benchlib.servers import Server, git_daemon, http_backend
from reconciler import logs
from reconciler.controller.outcomes import push_outcomes
from reconciler.gitstore.repo import GitEnvStore

SERIES = ("ours", "shell", "floor")
SERVERS: dict[str, Callable[[Path, Path], AbstractContextManager[Server]]] = {
    "git": git_daemon,
    "http": http_backend,
}


class _Series:
    """The three ways of promoting against one server, each run checked."""

    def __init__(self, server: Server, work: Path, env: Mapping[str, str]) -> None:
        self.url = server.url("env.git")
        self.repo = server.root / "env.git"
        self.work = work
        self.env = env
        self.store = GitEnvStore.open(self.url, work / "cache.git", author=AUTHOR)
        self.floor = work / "floor"
        git(env, "clone", "--quiet", self.url, self.floor)
        self.fetches: list[float] = []

    def ours(self, run: int) -> float:
        started = time.perf_counter()
        heads = self.store.fetch()
        self.fetches.append(time.perf_counter() - started)
        if heads.main is None:
            raise SystemExit("bench: main is missing")
        tag = f"2.{run}.0"
        state = app.promoting_state(f"r{run}", tag, heads.main)
        started = time.perf_counter()
        result = push_outcomes(self.store, [(state, None)]).result
        elapsed = time.perf_counter() - started
        if result.attempts != 1 or len(result.commits) != 1:
            raise SystemExit(f"bench: our promotion took {result.attempts} attempts")
        self._check(tag)
        return elapsed

    def shell(self, run: int) -> float:
        tag = f"3.{run}.0"
        command = ["bash", str(HACK / "shell-promote.sh"), self.url, app.KUSTOMIZATION, tag, "5"]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            env={**self.env, "TMPDIR": str(self.work)},
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or done.stdout.strip() != "attempts=1":
            raise SystemExit(f"bench: the shell way failed: {done.stdout}{done.stderr}")
        self._check(tag)
        return elapsed

    def floor_push(self, run: int) -> float:
        tag = f"4.{run}.0"
        git(self.env, "pull", "--quiet", "--ff-only", cwd=self.floor)
        path = self.floor / app.KUSTOMIZATION
        text = path.read_text()
        line = next(x for x in text.splitlines() if x.startswith(app.TAG_LINE))
        value = line.split('"')[1]
        path.write_text(text.replace(f'newTag: "{value}"', f'newTag: "{tag}"', 1))
        git(self.env, "commit", "--quiet", "--all", "--message", f"floor {tag}", cwd=self.floor)
        started = time.perf_counter()
        git(self.env, "push", "--quiet", "origin", "HEAD:main", cwd=self.floor)
        elapsed = time.perf_counter() - started
        self._check(tag)
        return elapsed

    def _check(self, tag: str) -> None:
        """Main's last commit changes one line of the kustomization, to ``tag``."""
        stat = git(self.env, "--git-dir", self.repo, "diff", "--numstat", "main~1", "main")
        if stat != f"1\t1\t{app.KUSTOMIZATION}":
            raise SystemExit(f"bench: the promotion is not a one-line diff: {stat!r}")
        shown = git(self.env, "--git-dir", self.repo, "show", f"main:{app.KUSTOMIZATION}")
        if f'newTag: "{tag}"' not in shown:
            raise SystemExit(f"bench: main does not name {tag}")

    def close(self) -> None:
        self.store.close()


def _rotations(runs: int) -> Iterator[tuple[int, str]]:
    for run in range(runs):
        for offset in range(len(SERIES)):
            yield run, SERIES[(run + offset) % len(SERIES)]


def measure(kind: str, runs: int, warmup: int, work: Path) -> dict[str, Any]:
    """Every series against one server: seconds per run, and the fetches before ours."""
    env = git_env(work / "home")
    root = work / kind / "repos"
    root.mkdir(parents=True)
    app.create_env_repo(env, root / "env.git")
    times: dict[str, list[float]] = {name: [] for name in SERIES}
    with SERVERS[kind](root, work / "home") as server:
        series = _Series(server, work / kind, env)
        try:
            run_of = {"ours": series.ours, "shell": series.shell, "floor": series.floor_push}
            for run, name in _rotations(warmup + runs):
                elapsed = run_of[name](run)
                if run >= warmup:
                    times[name].append(elapsed)
        finally:
            series.close()
    return {"times": times, "fetch": series.fetches[warmup:]}


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py promote``."""
    logs.configure(json=False, level="warning")
    runs, warmup = (3, 1) if args.quick else (args.runs, 2)
    servers = args.servers.split(",")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp:
        for kind in servers:
            results[kind] = measure(kind, runs, warmup, Path(tmp))
    print(f"promote: one promotion, {runs} runs per series (after {warmup} warm-up), ms")
    rows: list[list[object]] = []
    summary: dict[str, Any] = {}
    for kind, result in results.items():
        times = result["times"]
        for name in SERIES:
            s = {k: v * 1000 for k, v in spread(times[name]).items()}
            rows.append([kind, name, s["median"], s["min"], s["max"]])
        fetch = {k: v * 1000 for k, v in spread(result["fetch"]).items()}
        rows.append([kind, "(tick's fetch)", fetch["median"], fetch["min"], fetch["max"]])
        med = {name: median(times[name]) for name in SERIES}
        summary[kind] = {
            **{
                f"{name}_ms": {k: v * 1000 for k, v in spread(times[name]).items()}
                for name in SERIES
            },
            "fetch_ms": fetch,
            "ours_to_floor": med["ours"] / med["floor"],
            "shell_to_ours": med["shell"] / med["ours"],
        }
    print(table(("server", "series", "median", "min", "max"), rows))
    for kind, values in summary.items():
        print(
            f"{kind}: ours/floor {values['ours_to_floor']:.2f}x (goal <= 1.25x), "
            f"shell/ours {values['shell_to_ours']:.1f}x"
        )
    emit({"bench": "promote", "runs": runs, "servers": summary, "machine": machine()})
