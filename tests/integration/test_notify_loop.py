"""The real loop's tick reports, read as events: each state commit announced once, as what it was.

The demo's Env repo in a real bare repository, a driven clock, the in-memory cluster; the
notifier's pure mapping (``events_of``) over every tick's report, across a weight drift and
a restarted process.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.metrics.profile import Profile
from reconciler.notify import Event, EventKind, events_of
from tests.integration.bookinfo import CANDIDATE, STABLE, BookinfoWorld

K = EventKind


def run(world: BookinfoWorld, *, restart_at: int = -1, drift_at: int = -1) -> list[Event]:
    events: list[Event] = []
    harness = world.harness
    for n in range(40):
        if n == restart_at:
            harness.restart()  # a new process: nothing in memory, the same Env repo
        if n == drift_at:  # someone puts all traffic back on the stable version
            harness.cluster.set_weights([(harness.refs[STABLE], 100), (harness.refs[CANDIDATE], 0)])
        report = world.tick()
        events += events_of(report.recorded, report.outcomes, report.errors)
        if not report.recorded and any(e.kind in {K.PROMOTED, K.ROLLED_BACK} for e in events):
            return events
    raise AssertionError("the experiment did not finish")


def test_a_promotion_is_announced_start_to_end_once_across_a_drift_and_a_restart(
    tmp_path: Path,
) -> None:
    world = BookinfoWorld(tmp_path)
    events = run(world, restart_at=3, drift_at=5)
    kinds = [e.kind for e in events]
    assert kinds[0] is K.STARTED
    assert kinds[-1] is K.PROMOTED
    assert kinds.count(K.STEP) == 6  # iterationsPerLoop
    assert kinds.count(K.DRIFT_CORRECTED) == 1
    assert set(kinds) == {K.STARTED, K.STEP, K.DRIFT_CORRECTED, K.PROMOTED}
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids)  # once each, the restart included
    on_branch = world.git("rev-list", "--reverse", "reconciler-state").split()
    assert set(ids) <= set(on_branch)
    assert [i for i in on_branch if i in set(ids)] == ids  # in the branch's order
    promoted = events[-1]
    assert promoted.winner == "productpage-candidate"
    assert promoted.outcome_commit is not None


def test_a_failing_candidate_is_announced_as_rolled_back(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile(error_rate=0.2))
    kinds = [e.kind for e in run(world)]
    assert kinds[0] is K.STARTED
    assert kinds[-1] is K.ROLLED_BACK
    assert kinds.count(K.ROLLED_BACK) == 1
    assert set(kinds) == {K.STARTED, K.STEP, K.ROLLED_BACK}
