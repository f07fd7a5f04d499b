"""Faults around ``reconciler run``: crashes at every step, a rebuilt cluster, another writer,
Prometheus down, the Git remote unreachable. Each ends the way DESIGN.md section 2 says it
must: write-ahead, one decision one commit, nobody's commit lost, outcomes exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.runner import FAILPOINT_EXIT
from tests.e2e.envrepo import CANDIDATE, STATE, ExperimentFile
from tests.e2e.outcomes import (
    BASELINE_ONLY,
    assert_promoted_once,
    assert_rolled_back_once,
    finished,
)
from tests.e2e.world import ReconcilerProcess, World
from tests.fixtures.net import stop
from tests.gitutil import git, git_env

pytestmark = pytest.mark.e2e

WRITER_PAUSE = 0.2
"""Seconds the second writer waits between its pushes."""

CRASHES = {
    # failpoint: (the state tip's phase right after the crash, outcome commits on main)
    "after-fetch": ("Progressing", 0),
    "after-state-push": ("Promoting", 0),
    "after-weights": ("Promoting", 0),
    "after-main-push": ("Promoting", 1),
    "after-outcome-record": ("Promoted", 1),
}
"""Each failpoint is crossed on the tick that decides the experiment."""


@pytest.mark.parametrize("failpoint", list(CRASHES))
def test_a_crash_at_any_step_ends_the_experiment_as_an_uninterrupted_run_would(
    make_world: Callable[..., World], failpoint: str
) -> None:
    world = make_world()
    experiment = ExperimentFile(iterations=3)
    world.repo.add_candidate(experiment, world.namespace)
    key = experiment.key(world.namespace)
    last = experiment.iterations - 1
    # One process per tick (--once), so the crash lands on the deciding tick.
    world.once_until(
        f"iteration {last}, the one before the decision",
        lambda: (c := world.repo.latest(key)) is not None and c.iteration == last,
    )
    for _ in range(5):  # a tick that is not due yet crosses no boundary but after-fetch
        if world.once(failpoints=[failpoint]) == FAILPOINT_EXIT:
            break
    else:
        pytest.fail(f"the process never reached {failpoint}\n{world.describe()}")
    phase, outcomes = CRASHES[failpoint]
    crashed_at = world.repo.latest(key)
    assert crashed_at is not None
    assert crashed_at.phase == phase, world.describe()
    assert len(world.repo.outcomes()) == outcomes, world.describe()
    # A new process, without the failpoint, carries on from what Git says.
    world.start()
    world.wait("the experiment to finish", finished(world, experiment))
    assert_promoted_once(world, experiment)


def at_maximum_weight(
    make_world: Callable[..., World], iterations: int = 7
) -> tuple[World, ExperimentFile, ReconcilerProcess]:
    """A running process whose experiment has its candidate at its maximum weight."""
    world = make_world()
    experiment = ExperimentFile(iterations=iterations, max_weight=40, increment=20)
    world.repo.add_candidate(experiment, world.namespace)
    key = experiment.key(world.namespace)
    process = world.start()
    world.wait(
        "the candidate at its maximum weight, two iterations in",
        lambda: (
            (c := world.repo.latest(key)) is not None
            and (c.iteration or 0) >= 2
            and (c.weights or {}).get(CANDIDATE) == experiment.max_weight
        ),
    )
    return world, experiment, process


def test_a_rebuilt_cluster_gets_the_recorded_weights_back_and_the_experiment_carries_on(
    make_world: Callable[..., World],
) -> None:
    world, experiment, _process = at_maximum_weight(make_world)
    key = experiment.key(world.namespace)
    assert world.stop() == 0
    before = world.repo.latest(key)
    assert before is not None
    assert before.weights is not None
    # The cluster is rebuilt: nothing of the app is left, then the GitOps operator
    # applies main, whose VirtualService says 100/0.
    world.checking = False
    world.wipe_cluster()
    assert world.weights() is None
    world.sync_cluster()
    assert world.weights() == BASELINE_ONLY
    # One tick of a new process: the recorded weights are back, and the iteration that was
    # due is not judged on the 100/0 the cluster carried: it waits a full interval.
    world.checking = True
    assert world.once() == 0
    after = world.repo.latest(key)
    assert after is not None
    assert world.weights() == before.weights
    assert (after.phase, after.iteration) == ("Progressing", before.iteration), world.describe()
    assert after.get("Rollout-Skipped") == str((before.iteration or 0) + 1)
    assert after.get("Rollout-Observed") == "productpage-v1=100,productpage-v2=0"
    assert after.verdicts is None
    world.start()
    world.wait("the experiment to finish", finished(world, experiment))
    assert_promoted_once(world, experiment, skips=1)  # one start, every iteration once


def test_a_cluster_wiped_under_a_running_process_gets_its_weights_back_in_one_tick(
    make_world: Callable[..., World],
) -> None:
    # 12 iterations: the correction's series lives as long as the experiment, so it must
    # still run while the checks below look (7 left about 4 s under CI's load: too few)
    world, experiment, process = at_maximum_weight(make_world, iterations=12)
    key = experiment.key(world.namespace)
    before_wipe = world.repo.tip(STATE)
    assert before_wipe is not None
    world.checking = False
    world.wipe_cluster()
    # While nothing is there, nothing is judged: the process says so and records nothing.
    world.wait(
        "the process to find the VirtualService gone",
        lambda: "weights_unknown" in process.log.read_text(errors="replace"),
    )
    assert world.repo.tip(STATE) == before_wipe
    recorded = world.recorded_weights()[0]
    world.sync_cluster()  # the GitOps operator re-creates the app from main: 100/0
    synced = time.monotonic()
    world.wait("the recorded weights on the cluster", lambda: world.weights() == recorded)
    back = time.monotonic() - synced
    world.checking = True
    # /metrics takes the tick's report once the tick is over, a moment after its push
    world.wait(
        "the correction to be counted",
        lambda: process.metric("reconciler_weight_corrections_total", experiment=key) >= 1,
    )
    assert process.metric("reconciler_weight_corrections_total", experiment=key) == 1
    skip = world.wait(
        "the skip to be recorded",
        lambda: next((c for c in world.repo.state_log(key) if c.get("Rollout-Skipped")), None),
    )
    since = [c.id for c in world.repo.log(STATE)]
    new = since[: since.index(before_wipe)]
    assert new[-1] == skip.id, "the first commit after the wipe is the skip"
    assert skip.get("Rollout-Observed") == "productpage-v1=100,productpage-v2=0"
    assert skip.weights == recorded
    # within one tick of the process (interval 1 s): a bound for the log, not a benchmark
    print(f"weights back {back:.2f} s after the cluster was re-created")  # noqa: T201
    assert back < 5, f"{back:.1f} s"
    world.wait("the experiment to finish", finished(world, experiment))
    assert_promoted_once(world, experiment, skips=1)


def test_a_second_writer_pushing_to_main_throughout_loses_nothing(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world()
    experiment = ExperimentFile(iterations=3)
    world.repo.add_candidate(experiment, world.namespace)
    stop_file, progress = tmp_path / "writer.stop", tmp_path / "writer.progress"
    errors = tmp_path / "writer.err"
    with errors.open("wb") as stderr:
        writer = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("second_writer.py")),
                world.repo.url,
                str(tmp_path / "writer"),
                str(stop_file),
                str(progress),
                str(WRITER_PAUSE),
            ],
            env=git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def pushed() -> int:
        text = progress.read_text() if progress.exists() else ""
        return int(text.split()[0]) if text.strip() else 0

    try:
        world.wait("the second writer's first push", lambda: pushed() > 0)
        process = world.start()
        world.wait("the experiment to finish", finished(world, experiment))
        after_outcome = pushed()
        world.wait("three more pushes of the writer", lambda: pushed() >= after_outcome + 3)
        stop_file.touch()
        assert writer.wait(timeout=30) == 0, errors.read_text()
    finally:
        stop_file.touch()
        stop(writer)
    lines = pushed()
    # every line the writer pushed is on main, in order, each in its own commit
    log = world.repo.show("main", "writer.log") or ""
    assert log.splitlines() == [f"writer line {n}" for n in range(1, lines + 1)]
    subjects = git("--git-dir", world.repo.path, "log", "--format=%s", "main").splitlines()
    assert sorted(s for s in subjects if s.startswith("writer: ")) == sorted(
        f"writer: line {n}" for n in range(1, lines + 1)
    )
    # and the outcome landed once, its changes intact on main's tip
    assert_promoted_once(world, experiment, also_on_main=["writer.log"])
    # the two writers did meet: the writer had to rebase onto the outcome commit (and the
    # reconciler, most often, had to rebuild its outcome on a newer main)
    rejected = int(progress.read_text().split()[1])
    conflicts = process.metric("reconciler_git_pushes_total", branch="main", result="conflict")
    assert rejected >= 1, f"the writer was never rejected (reconciler conflicts: {conflicts})"


def test_without_prometheus_nothing_is_promoted_and_the_experiment_fails_safe(
    make_world: Callable[..., World],
) -> None:
    world = make_world(own_prometheus=True)
    experiment = ExperimentFile(iterations=8, no_data_limit=2)
    world.repo.add_candidate(experiment, world.namespace)
    key = experiment.key(world.namespace)
    world.start()
    passed = world.wait(
        "an iteration in which the candidate passed",
        lambda: (
            (c := world.repo.latest(key)) is not None
            and (c.verdicts or {}).get(CANDIDATE) == "pass"
            and c
        ),
    )
    assert world.prometheus is not None
    world.prometheus.stop()
    last = world.wait("the experiment to end", finished(world, experiment), timeout=60)
    assert last.phase == "RolledBack"
    runs = world.repo.state_log(key)
    assert (passed.iteration or 0) < (last.iteration or 0) < experiment.iterations
    # no iteration passed once Prometheus was gone: the last ones had no data at all
    down = [c for c in runs if (c.iteration or 0) > (passed.iteration or 0) and c.verdicts]
    assert len(down) >= experiment.no_data_limit, world.describe()
    assert all(set((c.verdicts or {}).values()) == {"no-data"} for c in down[-2:])
    assert_rolled_back_once(world, experiment)
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    assert "noDataLimit" in archived["reason"]


def test_while_the_git_remote_is_unreachable_nothing_unrecorded_is_acted_on(
    make_world: Callable[..., World],
) -> None:
    world = make_world(own_git_daemon=True)
    experiment = ExperimentFile(iterations=5)
    world.repo.add_candidate(experiment, world.namespace)
    key = experiment.key(world.namespace)
    process = world.start()
    world.wait(
        "the first iteration",
        lambda: (c := world.repo.latest(key)) is not None and (c.iteration or 0) >= 1,
    )
    # stop the server right after a tick pushed and acted, so that no push is in flight
    tip = world.repo.tip(STATE)
    world.wait(
        "the next state commit, acted on",
        lambda: world.repo.tip(STATE) != tip and world.weights() == world.recorded_weights()[0],
    )
    world.stop_git()
    tip = world.repo.tip(STATE)
    errors = process.metric("reconciler_ticks_total", result="error")

    def failed_ticks() -> bool:
        world.check_weights(strict=True)  # exactly what the tip records, every time we look
        assert world.repo.tip(STATE) == tip
        return process.metric("reconciler_ticks_total", result="error") >= errors + 3

    world.wait("three ticks to fail to reach the remote", failed_ticks)
    stalled = world.repo.latest(key)
    assert stalled is not None
    assert stalled.phase == "Progressing"
    # the remote is back: the loop resumes where the state branch says
    world.start_git()
    world.wait("the experiment to finish", finished(world, experiment))
    assert_promoted_once(world, experiment)
    assert process.request("/readyz")[0] == 200
