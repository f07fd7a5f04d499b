"""``race``: outcomes while a CI process keeps pushing to main, counted in the loop's ticks.

A separate process (``ci_writer.py``, with the git program) pushes RATE commits a second
to main, each appending a line to ``ci.log``, rebasing and retrying when rejected, for
SECONDS and then until every outcome has been dealt with. Meanwhile N decisions are taken
at random moments of the same SECONDS (uniform and seeded: a fixed cadence can lock into
step with CI's and always win or always lose).

Ours runs as the loop does: a tick every INTERVAL seconds fetches both branches, records
the tick's transitions on the state branch (one commit, as a fleet's tick nearly always
has one), then pushes every outcome decided and not yet on main with the loop's own
``controller.outcomes.push_outcomes``: main fetched afresh, one commit per outcome, all
in one CAS push (on rejection fetch, recompute and push again; at most 5 pushes, backoff
with jitter). An outcome not landed stays due and is pushed again the next tick: the
figure is the number of ticks from its decision (tick 1 is the tick that took it) to its
landing. The shell way (``hack/shell-promote.sh``, at most 5 pushes, no later tick) runs
against a new CI run. Afterwards the Env repo is checked with plain git: every outcome
that reported success is on main exactly once, every CI commit is on main (by message and
by its ``ci.log`` line), and main's reflog on the server shows no update that was not a
fast-forward. ``--transport`` is ``git`` (``git daemon``), ``http`` or ``https`` (``git
http-backend``, plain or TLS).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from benchlib import app
from benchlib.common import AUTHOR, HACK, emit, git, machine, median, percentile, table
from benchlib.servers import Server, git_daemon, http_backend, https_backend
from reconciler import logs
from reconciler.controller.outcomes import push_outcomes
from reconciler.errors import PushRejectedError
from reconciler.gitstore.credentials import Credentials
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import CommitSpec

MAX_ATTEMPTS = 5
MAX_TICKS = 20
"""Ticks after its decision an outcome may take before the benchmark calls it starved."""
SEED = 9
SERVERS: dict[str, Callable[[Path, Path], AbstractContextManager[Server]]] = {
    "git": git_daemon,
    "http": http_backend,
    "https": https_backend,
}


@dataclass
class _Due:
    """An outcome decided and not yet on main."""

    run: int
    decided_tick: int
    decided_at: float
    decided_on: str
    attempts: int = 0


@dataclass(frozen=True)
class _Landed:
    run: int
    landed: bool
    ticks: int
    attempts: int
    seconds: float
    """From the decision to the landing (or to giving up)."""


class _CI:
    """The CI writer process, running until ``stop`` (and at least its SECONDS)."""

    def __init__(
        self, url: str, work: Path, env: Mapping[str, str], args: argparse.Namespace
    ) -> None:
        self.out = work / "ci.json"
        self.stop_file = work / "ci.stop"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("ci_writer.py")),
                url,
                str(work / "ci"),
                str(args.rate),
                str(args.seconds),
                str(self.out),
                str(self.stop_file),
            ],
            env=dict(env),
        )

    def stop(self) -> dict[str, Any]:
        self.stop_file.touch()
        if self.process.wait() != 0:
            raise SystemExit("bench: the CI writer failed")
        written: dict[str, Any] = json.loads(self.out.read_text())
        return written


def _moments(args: argparse.Namespace) -> list[float]:
    schedule = random.Random(SEED)  # noqa: S311 - a reproducible schedule, not a secret
    return sorted(schedule.uniform(0, args.seconds) for _ in range(args.promotions))


def _ours(
    server: Server, work: Path, moments: list[float], interval: float
) -> tuple[list[_Landed], int]:
    """The loop's ticks against the CI writer; each outcome's result, and the ticks run."""
    credentials = Credentials(ca_file=server.ca_file) if server.ca_file else None
    store = GitEnvStore.open(
        server.url("env.git"),
        work / "cache.git",
        author=AUTHOR,
        credentials=credentials,
        max_push_attempts=MAX_ATTEMPTS,
    )
    due: list[_Due] = []
    results: list[_Landed] = []
    started = time.monotonic()
    tick = decided = 0
    try:
        while len(results) < len(moments):
            tick += 1
            time.sleep(max(0.0, started + (tick - 1) * interval - time.monotonic()))
            heads = store.fetch()
            if heads.main is None:
                raise SystemExit("bench: main is missing")
            now = time.monotonic()
            while decided < len(moments) and started + moments[decided] <= now:
                due.append(_Due(decided, tick, started + moments[decided], heads.main))
                decided += 1
            # the tick's record: one state commit, pushed before any outcome (write-ahead)
            message = f"bench: tick {tick}"
            store.update_branch(
                store.state_branch,
                lambda _tip, m=message: [CommitSpec(m, {"ticks.txt": m.encode()})],
            )
            if not due:
                continue
            # as outcomes.Finisher does: every due outcome, one commit each, one push
            batch = [
                (app.promoting_state(f"race-{d.run}", f"5.{d.run}.0", d.decided_on), None)
                for d in due
            ]
            try:
                pushed = push_outcomes(store, batch)
            except PushRejectedError:
                for outcome in list(due):
                    outcome.attempts += MAX_ATTEMPTS
                    if tick - outcome.decided_tick + 1 >= MAX_TICKS:
                        due.remove(outcome)
                        results.append(_landing(outcome, tick, landed=False))
                continue
            for outcome, (state, _decision) in zip(list(due), batch, strict=True):
                outcome.attempts += pushed.result.attempts
                due.remove(outcome)
                results.append(_landing(outcome, tick, landed=state.id in pushed.commits))
    finally:
        store.close()
    return sorted(results, key=lambda r: r.run), tick


def _landing(outcome: _Due, tick: int, *, landed: bool) -> _Landed:
    return _Landed(
        run=outcome.run,
        landed=landed,
        ticks=tick - outcome.decided_tick + 1,
        attempts=outcome.attempts,
        seconds=time.monotonic() - outcome.decided_at,
    )


SHELL_TAGS = 6
"""The shell way's tags are 6.N.0, ours 5.N.0: both run on the same Env repo, so a shell
run that set the tag ours left on main (5.0.0, when ours landed run 0 last) would change
nothing, and shell-promote.sh refuses an edit that changes nothing."""


def _shell(url: str, work: Path, env: Mapping[str, str], moments: list[float]) -> list[_Landed]:
    """The shell way: each promotion at its moment, at most 5 pushes, no later tick."""
    results = []
    started = time.monotonic()
    for run, moment in enumerate(moments):
        time.sleep(max(0.0, started + moment - time.monotonic()))
        begun = time.monotonic()
        done = subprocess.run(
            [
                "bash",
                str(HACK / "shell-promote.sh"),
                url,
                app.KUSTOMIZATION,
                f"{SHELL_TAGS}.{run}.0",
                str(MAX_ATTEMPTS),
            ],
            env={**env, "TMPDIR": str(work)},
            capture_output=True,
            text=True,
            check=False,
        )
        words = done.stdout.split()
        if not words or not words[0].startswith("attempts="):
            raise SystemExit(f"bench: the shell way failed: {done.stdout}{done.stderr}")
        attempts = int(words[0].removeprefix("attempts="))
        results.append(_Landed(run, done.returncode == 0, 1, attempts, time.monotonic() - begun))
    return results


def _marker(kind: str, run: int) -> str:
    """Text that only this promotion's commit on main carries in its subject."""
    if kind == "ours":
        return f"(bookinfo/productpage-canary-race-{run})"
    return f"promote {SHELL_TAGS}.{run}.0"


def _series(
    kind: str, server: Server, repo: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    work.mkdir(parents=True)
    env = server.git_env(work / "home")
    url = server.url("env.git")
    moments = _moments(args)
    ci = _CI(url, work, env, args)
    ticks_run = 0
    try:
        if kind == "ours":
            results, ticks_run = _ours(server, work, moments, args.interval)
        else:
            results = _shell(url, work, env, moments)
    finally:
        written = ci.stop()
    subjects = git(env, "--git-dir", repo, "log", "--format=%s", "main").splitlines()
    ci_log = git(env, "--git-dir", repo, "show", "main:ci.log").splitlines()
    wrong = [
        r.run
        for r in results
        if sum(_marker(kind, r.run) in s for s in subjects) != (1 if r.landed else 0)
    ]
    if wrong:
        raise SystemExit(f"bench: outcomes {wrong} are on main a wrong number of times")
    lines, messages = set(ci_log), set(subjects)
    lost = [
        n for n in written["pushed"] if f"ci {n}" not in lines or f"ci: build {n}" not in messages
    ]
    landed = [r for r in results if r.landed]
    ticks = Counter(r.ticks for r in landed)
    return {
        "promotions": args.promotions,
        "landed": len(landed),
        "landed_within_3_ticks": sum(1 for r in landed if r.ticks <= 3),
        "ticks_to_land": {str(t): ticks[t] for t in sorted(ticks)},
        "ticks_max": max((r.ticks for r in landed), default=0),
        "ticks_run": ticks_run,
        "attempts_max": max(r.attempts for r in results),
        "attempts_p95": percentile([r.attempts for r in results], 0.95),
        "attempts_median": median([r.attempts for r in results]),
        "seconds_median": median([r.seconds for r in results]),
        "seconds_p95": percentile([r.seconds for r in results], 0.95),
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
        args.rate, args.seconds, args.promotions, args.interval = 5.0, 2.0, 5, 0.5
    kinds = ["ours"] if args.no_shell else ["ours", "shell"]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-race-") as tmp:
        work = Path(tmp)
        root = work / "repos"
        root.mkdir()
        with SERVERS[args.transport](root, work / "home") as server:
            app.create_env_repo(server.git_env(work / "home"), root / "env.git")
            for kind in kinds:
                results[kind] = _series(kind, server, root / "env.git", work / kind, args)
        forced = _force_pushes(root / "env.git")
    print(
        f"race: {args.promotions} outcomes decided while CI pushes {args.rate:g} commits/s for "
        f"{args.seconds:g} s ({args.transport}); ours ticks every {args.interval:g} s, at most "
        f"{MAX_ATTEMPTS} pushes an outcome a tick; the shell way at most {MAX_ATTEMPTS} pushes"
    )
    columns = ("way", "landed", "in ≤3 ticks", "ticks to land", "attempts max", "p95",
               "s to land p95", "CI pushed/made", "CI rejected", "CI lost")  # fmt: skip
    rows = [
        [
            kind,
            f"{r['landed']}/{r['promotions']}",
            r["landed_within_3_ticks"] if kind == "ours" else "-",
            " ".join(f"{t}:{n}" for t, n in r["ticks_to_land"].items()) if kind == "ours" else "-",
            r["attempts_max"],
            r["attempts_p95"],
            f"{r['seconds_p95']:.2f}",
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
            "transport": args.transport,
            "interval": args.interval,
            "force_pushes": forced,
            **results,
            "machine": machine(),
        }
    )
