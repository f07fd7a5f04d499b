"""The real loop's tick reports, read as events: each state commit announced once, as what it was.

The demo's Env repo in a real bare repository, a driven clock, the in-memory cluster; the
notifier's pure mapping (``events_of``) over every tick's report, across a weight drift and
a restarted process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.demo import scenario
from reconciler.metrics.profile import Profile
from reconciler.notify import Event, EventKind, events_of
from reconciler.testing import DrivenClock, Harness

K = EventKind


def world(tmp: Path, candidate: Profile) -> tuple[Harness, DrivenClock]:
    clock = DrivenClock()
    harness = Harness.create(
        tmp,
        scenario.app_commits(),
        {"productpage-stable": Profile(), "productpage-candidate": candidate},
        namespace="bookinfo",
        clock=clock,
    )
    return harness, clock


def state_commits(harness: Harness) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", harness.remote, "rev-list", "--reverse", "reconciler-state"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def run(
    harness: Harness, clock: DrivenClock, *, restart_at: int = -1, drift_at: int = -1
) -> list[Event]:
    events: list[Event] = []
    for n in range(40):
        if n == restart_at:
            harness.restart()  # a new process: nothing in memory, the same Env repo
        if n == drift_at:  # someone puts all traffic back on the stable version
            harness.cluster.set_weights(
                [
                    (harness.refs["productpage-stable"], 100),
                    (harness.refs["productpage-candidate"], 0),
                ]
            )
        clock.advance(1.0)
        report = harness.tick()
        events += events_of(report.recorded, report.outcomes, report.errors)
        if not report.recorded and any(e.kind in {K.PROMOTED, K.ROLLED_BACK} for e in events):
            return events
    raise AssertionError("the experiment did not finish")


def test_a_promotion_is_announced_start_to_end_once_across_a_drift_and_a_restart(
    tmp_path: Path,
) -> None:
    harness, clock = world(tmp_path, Profile())
    events = run(harness, clock, restart_at=3, drift_at=5)
    kinds = [e.kind for e in events]
    assert kinds[0] is K.STARTED
    assert kinds[-1] is K.PROMOTED
    assert kinds.count(K.STEP) == 6  # iterationsPerLoop
    assert kinds.count(K.DRIFT_CORRECTED) == 1
    assert set(kinds) == {K.STARTED, K.STEP, K.DRIFT_CORRECTED, K.PROMOTED}
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids)  # once each, the restart included
    on_branch = state_commits(harness)
    assert set(ids) <= set(on_branch)
    assert [i for i in on_branch if i in set(ids)] == ids  # in the branch's order
    promoted = events[-1]
    assert promoted.winner == "productpage-candidate"
    assert promoted.outcome_commit is not None


def test_a_failing_candidate_is_announced_as_rolled_back(tmp_path: Path) -> None:
    harness, clock = world(tmp_path, Profile(error_rate=0.2))
    kinds = [e.kind for e in run(harness, clock)]
    assert kinds[0] is K.STARTED
    assert kinds[-1] is K.ROLLED_BACK
    assert kinds.count(K.ROLLED_BACK) == 1
    assert set(kinds) == {K.STARTED, K.STEP, K.ROLLED_BACK}
