"""history and recover --dry-run, reading only Git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reconciler.metrics.profile import Profile
from tests.integration.bookinfo import BookinfoWorld


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def run_to_decision(tmp: Path, candidate: Profile) -> BookinfoWorld:
    world = BookinfoWorld(tmp, candidate)
    world.run_until_final(limit=20)
    return world


def test_history_lists_every_transition_with_weights_verdicts_and_metrics(tmp_path: Path) -> None:
    world = run_to_decision(tmp_path, Profile(error_rate=0.3))
    result = cli(
        "history", "bookinfo/productpage-canary", "--repo", world.harness.remote, "-o", "json"
    )
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
    commits = world.git("rev-list", "--reverse", "reconciler-state").split()
    assert [r["commit"] for r in rows] == commits


def test_recover_dry_run_says_what_a_fresh_process_would_do(tmp_path: Path) -> None:
    world = run_to_decision(tmp_path, Profile())
    promoting = world.git("rev-parse", "reconciler-state~1").strip()
    main = world.git("rev-parse", "main").strip()
    # The process died after pushing the promotion, before recording it.
    world.git("update-ref", "refs/heads/reconciler-state", promoting)
    result = cli("recover", "--dry-run", "--repo", world.harness.remote, "-o", "json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    assert [s["action"] for s in steps] == ["set-weights", "confirm-outcome"]
    assert steps[0]["weights"] == {"productpage-stable": 100, "productpage-candidate": 0}
    assert steps[1]["commit"] == main
    # ... and had it died before pushing, the promotion would be pushed.
    world.git("update-ref", "refs/heads/main", "main~1")
    steps = json.loads(
        cli("recover", "--dry-run", "--repo", world.harness.remote, "-o", "json").stdout
    )
    assert steps[1] == {
        "experiment": steps[0]["experiment"],
        "action": "push-outcome",
        "outcome": "promoted",
        "winner": "productpage-candidate",
    }


def test_status_and_history_say_how_many_more_requests_a_version_needs(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile(error_rate=0.005))
    for _ in range(2):  # started, then one iteration: 0.5 % errors in 800 requests
        world.tick()
    harness = world.harness

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
