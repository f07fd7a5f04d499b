"""Blue/green, safe by construction: the winner serves until the baseline runs its version.

Flagger's sequence, on the real Git store and the in-process cluster and operator: the
decision puts all traffic on the winner; the outcome commit makes the winner the baseline
and keeps the candidate's manifests; the winner keeps all traffic until the operator
reports that commit applied and the baseline's Deployment has rolled out (its status, set
here as the Deployment controller would); then traffic returns to the baseline (recorded,
then set), and one cleanup commit on main removes the candidate's manifests. A process
killed at any boundary of that sequence leaves a state from which the next one ends it the
same way: one outcome commit, one cleanup commit, traffic on the baseline.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.audit import recovery_plan
from reconciler.cluster.memory import MemoryOperator
from reconciler.engine.state import Phase, from_json
from reconciler.gitstore import load_live
from reconciler.testing import DrivenClock, Harness
from tests.integration.test_patterns import APP, HEALTHY, shop

SYNC_TIMEOUT = 600.0


class Crash(BaseException):
    """Raised at a failpoint: the process stops there, as exit 70 does in production."""


def deployment(*, generation: int, observed: int, ready: bool) -> dict[str, Any]:
    """The baseline's Deployment as the API server shows it during and after a rollout."""
    updated = 2 if ready else 1
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "shop", "generation": generation},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": observed,
            "replicas": 2,
            "updatedReplicas": updated,
            "availableReplicas": updated,
        },
    }


def git_log(harness: Harness, *args: str) -> list[str]:
    return subprocess.run(
        ["git", "--git-dir", harness.remote, "log", "main", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()


def on_main(harness: Harness, path: str) -> bool:
    done = subprocess.run(
        ["git", "--git-dir", harness.remote, "cat-file", "-e", f"main:{path}"], check=False
    )
    return done.returncode == 0


def start(tmp_path: Path) -> tuple[Harness, DrivenClock, MemoryOperator]:
    harness, clock = shop(
        tmp_path, "Canary", "BlueGreen", {"v1": HEALTHY, "v2": HEALTHY}, load=200.0
    )
    harness.cluster.apply(deployment(generation=1, observed=1, ready=True))
    operator = MemoryOperator()
    harness.restart(operator=operator, sync_timeout=SYNC_TIMEOUT)
    return harness, clock, operator


def until_promoted(harness: Harness, clock: DrivenClock) -> str:
    """Tick until the promotion is on main and recorded (by this process or one before)."""
    for _ in range(20):
        for document in live_documents(harness).values():
            state = from_json(document)
            if state.phase is Phase.PROMOTED and state.outcome_commit is not None:
                return state.outcome_commit
        clock.advance(5)
        harness.tick()
    pytest.fail("no promotion")


def ticks(harness: Harness, clock: DrivenClock, n: int) -> list[str]:
    """Tick ``n`` times; the cleanups recorded meanwhile."""
    cleanups = []
    for _ in range(n):
        clock.advance(5)
        for transition, _commit in harness.tick().recorded:
            if transition.state.archived and transition.state.cleanup is not None:
                cleanups.append(transition.state.cleanup)
    return cleanups


def apply_outcome(harness: Harness, operator: MemoryOperator, outcome: str) -> None:
    """The operator applies the outcome: the baseline's Deployment starts rolling out."""
    harness.sync()
    operator.applied = outcome
    harness.cluster.apply(deployment(generation=2, observed=1, ready=False))


def actions(harness: Harness) -> list[str]:
    """What a fresh process would do first (``reconciler recover --dry-run``)."""
    heads = harness.store.fetch()
    return [step.action for step in recovery_plan(harness.store, heads.main, heads.state)]


def live_documents(harness: Harness) -> dict[str, bytes]:
    tip = harness.store.fetch().state
    return {} if tip is None else load_live(harness.store, tip)


def test_the_winner_serves_until_the_baseline_runs_it_then_one_cleanup_removes_its_manifests(
    tmp_path: Path,
) -> None:
    harness, clock, operator = start(tmp_path)
    outcome = until_promoted(harness, clock)
    # The outcome made v2 the baseline and kept the candidate's manifests: v2 still serves.
    assert (harness.weight_of("v1"), harness.weight_of("v2")) == (0, 100)
    assert on_main(harness, f"{APP}/candidates.yaml")
    assert not on_main(harness, f"{APP}/experiment.yaml")
    assert "await-baseline" in actions(harness)  # what `reconciler recover --dry-run` says
    for _ in range(3):  # the operator has not applied it yet
        clock.advance(5)
        assert harness.tick().recorded == []
    assert harness.weight_of("v2") == 100

    apply_outcome(harness, operator, outcome)
    for _ in range(3):  # applied, but the baseline is still rolling out v2's version
        clock.advance(5)
        assert harness.tick().recorded == []
    assert harness.weight_of("v2") == 100

    harness.cluster.apply(deployment(generation=2, observed=2, ready=True))
    clock.advance(5)
    report = harness.tick()
    # traffic back on the baseline (recorded, then set), then the cleanup, then archived
    assert (harness.weight_of("v1"), harness.weight_of("v2")) == (100, 0)
    returned = report.recorded[0][0].state
    assert (returned.sync, returned.cleanup) == ("synced", "due")
    final = report.recorded[-1][0].state
    assert final.archived
    assert final.cleanup is not None
    assert final.cleanup != "due"
    assert not on_main(harness, f"{APP}/candidates.yaml")
    assert git_log(harness, "--format=%(trailers:key=Rollout-Cleanup,valueonly)") == [outcome]
    assert git_log(harness, "--format=%(trailers:key=Rollout-Outcome,valueonly)") == ["promoted"]
    assert operator.requested == [outcome, final.cleanup]
    assert live_documents(harness) == {}
    clock.advance(5)
    assert harness.tick().recorded == []  # nothing left to do


def test_without_an_operator_the_winner_serves_for_sync_timeout_then_until_the_baseline_is_ready(
    tmp_path: Path,
) -> None:
    harness, clock = shop(
        tmp_path, "Canary", "BlueGreen", {"v1": HEALTHY, "v2": HEALTHY}, load=200.0
    )
    harness.cluster.apply(deployment(generation=1, observed=1, ready=True))
    harness.restart(sync_timeout=60.0)
    until_promoted(harness, clock)
    harness.cluster.apply(deployment(generation=2, observed=1, ready=False))
    clock.advance(61)  # the time an operator had to apply it has passed, the rollout has not
    assert harness.tick().recorded == []
    assert harness.weight_of("v2") == 100
    harness.cluster.apply(deployment(generation=2, observed=2, ready=True))
    clock.advance(5)
    report = harness.tick()
    assert (harness.weight_of("v1"), harness.weight_of("v2")) == (100, 0)
    assert report.recorded[0][0].state.sync == "timeout"
    assert report.recorded[-1][0].state.archived
    assert len(git_log(harness, "--format=%(trailers:key=Rollout-Cleanup,valueonly)")) == 1


@pytest.mark.parametrize(
    "boundary",
    ["after-main-push", "after-outcome-record", "after-state-push", "after-weights",
     "after-cleanup-push"],
)  # fmt: skip
def test_a_crash_at_any_step_of_the_sequence_ends_it_as_an_uninterrupted_run_would(
    tmp_path: Path, boundary: str
) -> None:
    harness, clock, operator = start(tmp_path)
    early = boundary in {"after-main-push", "after-outcome-record"}

    def failpoint(name: str) -> None:
        if name == boundary:
            raise Crash(name)

    if early:
        harness.restart(failpoint=failpoint, operator=operator, sync_timeout=SYNC_TIMEOUT)
        with pytest.raises(Crash):
            ticks(harness, clock, 20)
        # the decision put all traffic on v2, and nothing has taken it away
        assert harness.weight_of("v2") == 100
        harness.restart(operator=operator, sync_timeout=SYNC_TIMEOUT)
        outcome = until_promoted(harness, clock)
    else:
        outcome = until_promoted(harness, clock)
    apply_outcome(harness, operator, outcome)
    harness.cluster.apply(deployment(generation=2, observed=2, ready=True))
    if not early:
        harness.restart(failpoint=failpoint, operator=operator, sync_timeout=SYNC_TIMEOUT)
        with pytest.raises(Crash):
            ticks(harness, clock, 1)
        assert "push-cleanup" in actions(harness)
        harness.restart(operator=operator, sync_timeout=SYNC_TIMEOUT)
    recorded = ticks(harness, clock, 3)

    assert (harness.weight_of("v1"), harness.weight_of("v2")) == (100, 0)
    # the document names the cleanup commit on main, found again after a crash
    assert recorded == git_log(harness, "--format=%H", "--grep=Rollout-Cleanup")
    assert live_documents(harness) == {}
    assert git_log(harness, "--format=%(trailers:key=Rollout-Outcome,valueonly)") == ["promoted"]
    assert git_log(harness, "--format=%(trailers:key=Rollout-Cleanup,valueonly)") == [outcome]
    assert not on_main(harness, f"{APP}/candidates.yaml")
