"""Readiness before the first iteration, waiting for the GitOps operator, leadership."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.memory import MemoryOperator
from reconciler.controller.loop import LeadershipLostError, Reconciler
from reconciler.demo import scenario
from reconciler.engine.state import Phase
from reconciler.metrics.profile import Profile
from reconciler.testing import DrivenClock, Harness

APP = "apps/bookinfo"
GATE = b"""  readiness:
    timeoutSeconds: 5
    objects:
    - {apiVersion: apps/v1, kind: Deployment, name: productpage-candidate}
  gitops:
"""


def world(tmp: Path, experiment: bytes | None = None) -> tuple[Harness, DrivenClock]:
    clock = DrivenClock()
    commits = scenario.app_commits()
    if experiment is not None:
        message, files = commits[-1]
        commits[-1] = (message, {**files, f"{APP}/experiment.yaml": experiment})
    harness = Harness.create(
        tmp,
        commits,
        {"productpage-stable": Profile(), "productpage-candidate": Profile()},
        namespace="bookinfo",
        clock=clock,
    )
    return harness, clock


def reconciler(harness: Harness, clock: DrivenClock, **options: Any) -> Reconciler:
    del clock  # the harness was made with it
    return harness.restart(**options)


def state_doc(harness: Harness, path: str) -> dict[str, object]:
    raw = subprocess.run(
        ["git", "--git-dir", harness.remote, "show", f"reconciler-state:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    loaded: dict[str, object] = json.loads(raw)
    return loaded


def gated() -> bytes:
    return scenario.demo_file("experiment.yaml").replace(b"  gitops:\n", GATE, 1)


def test_iterations_wait_until_the_readiness_objects_are_ready(tmp_path: Path) -> None:
    harness, clock = world(tmp_path, gated())
    loop = reconciler(harness, clock)
    clock.advance(1)
    assert [t.state.iteration for t, _ in loop.tick().recorded] == [0]
    for _ in range(3):  # the candidate Deployment reports no ready replicas yet
        clock.advance(1)
        assert loop.tick().recorded == []
    deployment = harness.cluster.get("apps/v1", "Deployment", "bookinfo", "productpage-candidate")
    assert deployment is not None
    deployment["status"] = {
        "observedGeneration": 0,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    harness.cluster.apply(deployment)
    clock.advance(1)
    ((stepped, _),) = loop.tick().recorded
    assert stepped.state.iteration == 1


def test_versions_never_ready_end_the_experiment_with_no_winner(tmp_path: Path) -> None:
    harness, clock = world(tmp_path, gated())
    loop = reconciler(harness, clock)
    phases = []
    for _ in range(8):
        clock.advance(1)
        phases += [t.state.phase for t, _ in loop.tick().recorded]
    assert phases[-2:] == [Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    log = subprocess.run(
        ["git", "--git-dir", harness.remote, "log", "-1", "--format=%B", "reconciler-state~1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "not ready" in log


def tick_until_the_outcome(loop: Reconciler, clock: DrivenClock) -> str:
    """Tick a second apart until the loop pushes the outcome commit; its id."""
    for _ in range(12):
        clock.advance(1)
        report = loop.tick()
        if report.outcomes:
            return report.outcomes[0][1]
    raise AssertionError("no outcome within 12 ticks")


def test_the_experiment_stays_live_until_the_operator_applied_the_outcome(tmp_path: Path) -> None:
    harness, clock = world(tmp_path)
    operator = MemoryOperator()
    loop = reconciler(harness, clock, operator=operator, sync_timeout=60.0)
    outcome = tick_until_the_outcome(loop, clock)
    assert operator.requested == [outcome]
    doc = state_doc(harness, "experiments/bookinfo/productpage-canary.json")
    assert (doc["phase"], doc["sync"]) == ("Promoted", "waiting")
    clock.advance(1)
    assert loop.tick().recorded == []  # not applied yet: nothing to record
    harness.sync()
    operator.applied = outcome
    clock.advance(1)
    ((settled, _),) = loop.tick().recorded
    assert settled.state.sync == "synced"
    files = subprocess.run(
        ["git", "--git-dir", harness.remote, "ls-tree", "-r", "--name-only", "reconciler-state"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not any(f.startswith("experiments/") for f in files)
    assert any(f.startswith("archive/bookinfo/productpage-canary/") for f in files)


def test_an_operator_that_never_syncs_times_out_and_the_experiment_is_archived(
    tmp_path: Path,
) -> None:
    harness, clock = world(tmp_path)
    loop = reconciler(harness, clock, operator=MemoryOperator(), sync_timeout=3.0)
    settled = []
    for _ in range(15):
        clock.advance(1)
        settled += [t.state for t, _ in loop.tick().recorded if t.state.sync == "timeout"]
    assert len(settled) == 1
    assert settled[0].archived


def test_a_replica_that_lost_its_lease_acts_on_nothing(tmp_path: Path) -> None:
    harness, clock = world(tmp_path)
    leader = {"holds": True}
    loop = reconciler(harness, clock, may_act=lambda: leader["holds"])
    for _ in range(2):
        clock.advance(1)
        loop.tick()
    before = (harness.weight_of("productpage-stable"), harness.weight_of("productpage-candidate"))
    tip = subprocess.run(
        ["git", "--git-dir", harness.remote, "rev-parse", "reconciler-state"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    leader["holds"] = False
    clock.advance(1)
    with pytest.raises(LeadershipLostError, match="no longer holds"):
        loop.tick()
    after_tip = subprocess.run(
        ["git", "--git-dir", harness.remote, "rev-parse", "reconciler-state"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert after_tip == tip
    assert (
        harness.weight_of("productpage-stable"),
        harness.weight_of("productpage-candidate"),
    ) == before
    leader["holds"] = True
    clock.advance(1)
    assert loop.tick().recorded  # the next holder carries on from the state branch


def test_a_later_commit_that_contains_the_outcome_counts_as_the_outcome_applied(
    tmp_path: Path,
) -> None:
    harness, clock = world(tmp_path)
    operator = MemoryOperator()
    loop = reconciler(harness, clock, operator=operator, sync_timeout=600.0)
    outcome = tick_until_the_outcome(loop, clock)
    before_outcome = subprocess.run(
        ["git", "--git-dir", harness.remote, "rev-parse", f"{outcome}~1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the operator is still at a commit from before the outcome: not applied
    operator.applied = before_outcome
    clock.advance(1)
    assert loop.tick().recorded == []
    # CI pushed on top of the outcome, and the operator applied that: the outcome is in it
    later = harness.push_main("ci: bump an unrelated file", {"apps/notes.txt": b"hi\n"})
    operator.applied = later
    clock.advance(1)
    ((settled, _),) = loop.tick().recorded
    assert settled.state.sync == "synced"
    assert settled.state.archived
    assert later in settled.state.reason
