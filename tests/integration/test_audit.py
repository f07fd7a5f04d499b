"""history and recover --dry-run, reading only Git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reconciler.demo import scenario
from reconciler.metrics.profile import Profile
from reconciler.testing import DrivenClock, Harness


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def run_to_decision(tmp: Path, candidate: Profile) -> Harness:
    clock = DrivenClock()
    harness = Harness.create(
        tmp,
        scenario.app_commits(),
        {"productpage-stable": Profile(), "productpage-candidate": candidate},
        namespace="bookinfo",
        clock=clock,
    )
    for _ in range(20):
        clock.advance(1)
        if any(t.state.phase.final for t, _ in harness.tick().recorded):
            return harness
    raise AssertionError("no outcome")


def test_history_lists_every_transition_with_weights_verdicts_and_metrics(tmp_path: Path) -> None:
    harness = run_to_decision(tmp_path, Profile(error_rate=0.3))
    result = cli("history", "bookinfo/productpage-canary", "--repo", harness.remote, "-o", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["phase"] for r in rows] == [
        "Progressing",
        "Progressing",
        "Progressing",
        "RollingBack",
        "RolledBack",
    ]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 3]
    assert rows[0]["weights"] == {"productpage-stable": 80, "productpage-candidate": 20}
    assert rows[1]["verdicts"] == {"productpage-stable": "pass", "productpage-candidate": "fail"}
    assert rows[1]["metrics"]["productpage-candidate"]["istio/error-rate"] == 0.3
    commits = subprocess.run(
        ["git", "--git-dir", harness.remote, "rev-list", "--reverse", "reconciler-state"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert [r["commit"] for r in rows] == commits


def test_recover_dry_run_says_what_a_fresh_process_would_do(tmp_path: Path) -> None:
    harness = run_to_decision(tmp_path, Profile())
    git = ["git", "--git-dir", harness.remote]
    promoting = subprocess.run(
        [*git, "rev-parse", "reconciler-state~1"], check=True, capture_output=True, text=True
    ).stdout.strip()
    main = subprocess.run([*git, "rev-parse", "main"], check=True, capture_output=True, text=True)
    # The process died after pushing the promotion, before recording it.
    subprocess.run([*git, "update-ref", "refs/heads/reconciler-state", promoting], check=True)
    result = cli("recover", "--dry-run", "--repo", harness.remote, "-o", "json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    assert [s["action"] for s in steps] == ["set-weights", "confirm-outcome"]
    assert steps[0]["weights"] == {"productpage-stable": 100, "productpage-candidate": 0}
    assert steps[1]["commit"] == main.stdout.strip()
    # ... and had it died before pushing, the promotion would be pushed.
    subprocess.run([*git, "update-ref", "refs/heads/main", "main~1"], check=True)
    steps = json.loads(cli("recover", "--dry-run", "--repo", harness.remote, "-o", "json").stdout)
    assert steps[1] == {
        "experiment": steps[0]["experiment"],
        "action": "push-outcome",
        "outcome": "promoted",
        "winner": "productpage-candidate",
    }


def test_status_and_history_say_how_many_more_requests_a_version_needs(tmp_path: Path) -> None:
    clock = DrivenClock()
    harness = Harness.create(
        tmp_path,
        scenario.app_commits(),
        {"productpage-stable": Profile(), "productpage-candidate": Profile(error_rate=0.005)},
        namespace="bookinfo",
        clock=clock,
    )
    for _ in range(2):  # started, then one iteration: 0.5 % errors in 800 requests
        clock.advance(1)
        harness.tick()

    status = cli("status", "--repo", harness.remote)
    assert status.returncode == 0, status.stderr
    (line,) = [x for x in status.stdout.splitlines() if "needs ~" in x]
    assert "not enough data yet: productpage-candidate needs ~" in line
    # the repo as `run` takes it from the environment: the same variable for every command
    from_env = cli("status", "-o", "json", env={"RECONCILER_REPO": harness.remote})
    assert from_env.returncode == 0, from_env.stderr
    rows = json.loads(from_env.stdout)
    (live,) = [r for r in rows if r.get("kind") == "experiment"]
    assert live["needs"]["productpage-candidate"] > 0
    history = json.loads(
        cli("history", "bookinfo/productpage-canary", "--repo", harness.remote, "-o", "json").stdout
    )
    assert "more requests" in history[-1]["summary"]
    # the candidate is on track (0.5 % against a 1 % limit), so it gained traffic meanwhile
    assert (
        history[-1]["weights"]["productpage-candidate"]
        > history[0]["weights"]["productpage-candidate"]
    )
