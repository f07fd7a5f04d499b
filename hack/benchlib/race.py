"""``race``: promotions while a CI process keeps pushing to main.

A separate process (``ci_writer.py``, with the git program) pushes RATE commits a second
to main for SECONDS, each appending a line to ``ci.log``, rebasing and retrying when
rejected. Meanwhile N promotions run at random moments of the same SECONDS (uniform and
seeded: a fixed cadence can lock into step with CI's and always win or always lose).
First ours, each a tick's fetch and then the outcome commit through
``GitEnvStore.update_branch`` (CAS push; on rejection fetch, recompute and push again; at
most 5 pushes, backoff with jitter); then, against a new CI run, the shell way
(``hack/shell-promote.sh``, at most 5 pushes). Afterwards the Env repo is checked with
plain git: every promotion that reported success is on main exactly once, every CI commit
is on main (by message and by its ``ci.log`` line), and main's reflog on the server shows
no update that was not a fast-forward.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pygit2

from benchlib import app
from benchlib.common import (
    AUTHOR,
    HACK,
    emit,
    git,
    git_env,
    machine,
    median,
    percentile,
    table,
)
from benchlib.promote import promotion_plan
from benchlib.servers import Server, git_daemon, http_backend
from reconciler import logs
from reconciler.errors import PushRejectedError
from reconciler.gitstore.repo import GitEnvStore

MAX_ATTEMPTS = 5
SEED = 9
SERVERS: dict[str, Callable[[Path, Path], AbstractContextManager[Server]]] = {
    "git": git_daemon,
    "http": http_backend,
}


class _Promoter:
    """One way of promoting; ``promote(i)`` returns (landed, attempts)."""

    def __init__(self, kind: str, url: str, work: Path, env: Mapping[str, str]) -> None:
        self.kind = kind
        self.url = url
        self.work = work
        self.env = env
        self.store: GitEnvStore | None = None
        if kind == "ours":
            self.store = GitEnvStore.open(
                url, work / "cache.git", author=AUTHOR, max_push_attempts=MAX_ATTEMPTS
            )

    def marker(self, run: int) -> str:
        """Text that only this promotion's commit on main carries in its subject."""
        if self.kind == "ours":
            return f"(bookinfo/productpage-canary-race-{run})"
        return f"promote 5.{run}.0"

    def promote(self, run: int) -> tuple[bool, int]:
        tag = f"5.{run}.0"
        if self.store is None:
            done = subprocess.run(
                [
                    "bash",
                    str(HACK / "shell-promote.sh"),
                    self.url,
                    app.KUSTOMIZATION,
                    tag,
                    str(MAX_ATTEMPTS),
                ],
                env={**self.env, "TMPDIR": str(self.work)},
                capture_output=True,
                text=True,
                check=False,
            )
            words = done.stdout.split()
            if not words or not words[0].startswith("attempts="):
                raise SystemExit(f"bench: the shell way failed: {done.stdout}{done.stderr}")
            return done.returncode == 0, int(words[0].removeprefix("attempts="))
        heads = self.store.fetch()  # the tick's fetch
        if heads.main is None:
            raise SystemExit("bench: main is missing")
        state = app.promoting_state(f"race-{run}", tag, heads.main)
        try:
            result = self.store.update_branch("main", promotion_plan(self.store, state, None))
        except PushRejectedError:
            return False, MAX_ATTEMPTS
        return bool(result.commits), result.attempts


def _series(
    kind: str, url: str, repo: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    work.mkdir(parents=True)
    env = git_env(work / "home")
    ci_out = work / "ci.json"
    ci = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("ci_writer.py")),
            url,
            str(work / "ci"),
            str(args.rate),
            str(args.seconds),
            str(ci_out),
        ],
        env=env,
    )
    promoter = _Promoter(kind, url, work, env)
    outcomes: list[tuple[bool, int, float]] = []
    schedule = random.Random(SEED)  # noqa: S311 - a reproducible schedule, not a secret
    moments = sorted(schedule.uniform(0, args.seconds) for _ in range(args.promotions))
    try:
        started = time.monotonic()
        for run, moment in enumerate(moments):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            begun = time.perf_counter()
            landed, attempts = promoter.promote(run)
            outcomes.append((landed, attempts, time.perf_counter() - begun))
    finally:
        if ci.wait() != 0:
            raise SystemExit("bench: the CI writer failed")
        if promoter.store is not None:
            promoter.store.close()
    written = json.loads(ci_out.read_text())
    subjects = git(env, "--git-dir", repo, "log", "--format=%s", "main").splitlines()
    ci_log = git(env, "--git-dir", repo, "show", "main:ci.log").splitlines()
    on_main = [sum(promoter.marker(run) in s for s in subjects) for run in range(args.promotions)]
    wrong = [
        run for run, (landed, _a, _t) in enumerate(outcomes) if on_main[run] != (1 if landed else 0)
    ]
    if wrong:
        raise SystemExit(f"bench: promotions {wrong} are on main a wrong number of times")
    lines, messages = set(ci_log), set(subjects)
    lost = [
        n for n in written["pushed"] if f"ci {n}" not in lines or f"ci: build {n}" not in messages
    ]
    tries = [a for _l, a, _t in outcomes]
    return {
        "promotions": args.promotions,
        "landed": sum(landed for landed, _a, _t in outcomes),
        "attempts_max": max(tries),
        "attempts_p95": percentile(tries, 0.95),
        "attempts_median": median(tries),
        "seconds_median": median([t for _l, _a, t in outcomes]),
        "seconds_p95": percentile([t for _l, _a, t in outcomes], 0.95),
        "ci_scheduled": round(args.rate * args.seconds),
        "ci_made": written["made"],
        "ci_pushed": len(written["pushed"]),
        "ci_rejections": written["rejections"],
        "ci_lost": len(lost) + written["made"] - len(written["pushed"]),
    }


def _force_pushes(repo: Path) -> int:
    """Updates of main on the server that were not fast-forwards (from its reflog)."""
    server = pygit2.Repository(str(repo))
    count = 0
    for line in (repo / "logs" / "refs" / "heads" / "main").read_text().splitlines():
        old, new = line.split()[:2]
        if set(old) != {"0"} and old != new and not server.descendant_of(new, old):
            count += 1
    server.free()
    return count


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py race``."""
    logs.configure(json=False, level="error")
    if args.quick:
        args.rate, args.seconds, args.promotions = 5.0, 2.0, 5
    kinds = ["ours"] if args.no_shell else ["ours", "shell"]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-race-") as tmp:
        work = Path(tmp)
        env = git_env(work / "home")
        root = work / "repos"
        root.mkdir()
        app.create_env_repo(env, root / "env.git")
        with SERVERS[args.server](root, work / "home") as server:
            for kind in kinds:
                results[kind] = _series(
                    kind, server.url("env.git"), root / "env.git", work / kind, args
                )
        forced = _force_pushes(root / "env.git")
    print(
        f"race: {args.promotions} promotions while CI pushes {args.rate:g} commits/s for "
        f"{args.seconds:g} s ({args.server} server), at most {MAX_ATTEMPTS} pushes each"
    )
    columns = ("way", "landed", "attempts max", "p95", "median", "promotion s p95",
               "CI made/scheduled", "CI pushed", "CI rejected", "CI lost")  # fmt: skip
    rows = [
        [
            kind,
            f"{r['landed']}/{r['promotions']}",
            r["attempts_max"],
            r["attempts_p95"],
            r["attempts_median"],
            f"{r['seconds_p95']:.2f}",
            f"{r['ci_made']}/{r['ci_scheduled']}",
            f"{r['ci_pushed']}/{r['ci_made']}",
            r["ci_rejections"],
            r["ci_lost"],
        ]
        for kind, r in results.items()
    ]
    print(table(columns, rows))
    print(f"force pushes on main (server reflog): {forced}")
    emit(
        {
            "bench": "race",
            "rate": args.rate,
            "seconds": args.seconds,
            "server": args.server,
            "force_pushes": forced,
            **results,
            "machine": machine(),
        }
    )
