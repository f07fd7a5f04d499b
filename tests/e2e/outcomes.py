"""What the end-to-end tests check about a finished experiment, as plain git shows it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from reconciler.controller.actor import ACTOR, LEASE_TERM
from tests.e2e.envrepo import (
    APP,
    APP_FILES,
    CANDIDATE,
    PROMOTED_STABLE,
    STATE,
    Commit,
    ExperimentFile,
)
from tests.e2e.world import MAIN_SPLIT, World

BASELINE_ONLY = MAIN_SPLIT


def finished(world: World, experiment: ExperimentFile) -> Callable[[], Commit | None]:
    """A condition: the run's last state commit, once it archived the experiment."""
    key = experiment.key(world.namespace)

    def check() -> Commit | None:
        last = world.repo.latest(key)
        done = last is not None and last.phase in {"Promoted", "RolledBack", "Preempted"}
        live = f"experiments/{key}.json"
        return last if done and live not in world.repo.files(STATE) else None

    return check


def without_actor(commit: Commit) -> Mapping[str, str]:
    """A commit's trailers but who wrote it (``Rollout-Actor``, ``Rollout-Lease-Term``).

    Every commit the loop writes names its actor; it must, and the rest is compared as is.
    """
    assert commit.get(ACTOR), f"{commit.id[:12]} {commit.subject!r} names no {ACTOR}"
    return {k: v for k, v in commit.trailers.items() if k not in {ACTOR, LEASE_TERM}}


def assert_promoted_once(
    world: World,
    experiment: ExperimentFile,
    *,
    also_on_main: Sequence[str] = (),
    skips: int = 0,
    handed_off: bool = False,
) -> Commit:
    """The run ended as an uninterrupted canary that passes does; the outcome commit.

    ``also_on_main``: files others wrote to main meanwhile. ``skips``: commits that say an
    iteration was not judged because the cluster did not carry the recorded weights.
    ``handed_off``: a GitOps operator applied the outcome, which one more state commit says.
    """
    key = experiment.key(world.namespace)
    runs = world.repo.state_log(key)
    skipped = [c for c in runs if c.get("Rollout-Skipped") is not None]
    assert len(skipped) == skips, world.describe()
    assert not [c for c in skipped if c.verdicts], "a skip judged nothing"
    runs = [c for c in runs if c not in skipped]
    expected = [("Progressing", i) for i in range(experiment.iterations)]
    expected += [("Promoting", experiment.iterations), ("Promoted", experiment.iterations)]
    expected += [("Promoted", experiment.iterations)] * handed_off
    assert [(c.phase, c.iteration) for c in runs] == expected, world.describe()
    decision = runs[experiment.iterations]
    (outcome,) = world.repo.outcomes()
    run_id = runs[0].get("Rollout-Id")
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    assert without_actor(outcome) == {
        "Rollout-Id": run_id,
        "Rollout-Experiment": key,
        "Rollout-Outcome": "promoted",
        "Rollout-Winner": CANDIDATE,
        "Rollout-Candidate-Commit": archived["sourceCommit"],
        "Rollout-State": decision.id,
    }
    assert runs[experiment.iterations + 1].get("Rollout-Outcome-Commit") == outcome.id
    # main: the winner is the baseline now, the candidate and the experiment are gone
    assert world.repo.files("main") == sorted([*APP_FILES, *also_on_main])
    assert world.repo.show("main", f"{APP}/productpage.yaml") == PROMOTED_STABLE
    assert world.repo.show("main", f"{APP}/routing.yaml") == APP_FILES[f"{APP}/routing.yaml"]
    # the state is archived under the run's id, and nothing is live
    assert run_id is not None
    assert archived["id"] == run_id
    assert archived["phase"] == "Promoted"
    assert archived["outcomeCommit"] == outcome.id
    assert archived["winner"] == CANDIDATE
    path = f"archive/{key}/{run_id.rsplit('@', 1)[1]}.json"
    assert path in world.repo.files(STATE)
    assert not [p for p in world.repo.files(STATE) if p.startswith("experiments/")]
    # and all traffic is on the baseline again, on the real VirtualService
    assert world.weights() == BASELINE_ONLY
    world.check_weights(strict=True)
    return outcome


def assert_rolled_back_once(
    world: World,
    experiment: ExperimentFile,
    *,
    also_on_main: Sequence[str] = (),
    handed_off: bool = False,
) -> Commit:
    """The run ended in one rollback commit: candidate and experiment gone, baseline kept.

    ``also_on_main``: files others wrote to main. ``handed_off``: a GitOps operator applied
    the outcome, which one more state commit says.
    """
    key = experiment.key(world.namespace)
    runs = world.repo.state_log(key)
    if handed_off:
        assert runs[-1].phase == "RolledBack", world.describe()
        runs = runs[:-1]
    phases = [c.phase for c in runs]
    assert "Promoting" not in phases, world.describe()
    assert phases[-2:] == ["RollingBack", "RolledBack"], world.describe()
    (outcome,) = world.repo.outcomes()
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    assert without_actor(outcome) == {
        "Rollout-Id": runs[0].get("Rollout-Id"),
        "Rollout-Experiment": key,
        "Rollout-Outcome": "rolled-back",
        "Rollout-Candidate-Commit": archived["sourceCommit"],
        "Rollout-State": runs[-2].id,
    }
    assert world.repo.files("main") == sorted([*APP_FILES, *also_on_main])
    assert (
        world.repo.show("main", f"{APP}/productpage.yaml") == APP_FILES[f"{APP}/productpage.yaml"]
    )
    assert archived["phase"] == "RolledBack"
    assert archived["winner"] is None
    assert world.weights() == BASELINE_ONLY
    world.check_weights(strict=True)
    return outcome
