"""A blue/green rollout through ``reconciler run``: the winner serves until the baseline is ready.

The real parts of ``world.py`` (git daemon, kube-apiserver, Prometheus, the traffic
simulator following the VirtualService, here with a load generator aimed at each version
as blue/green needs) and the reconciler as its own process, without a GitOps operator
(``--sync-timeout`` stands for the time one has to apply the outcome). The test plays the
Deployment controller: it writes the baseline Deployment's status as a rollout would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from reconciler.cluster.resources import ObjectRef
from tests.e2e.envrepo import APP, BASELINE, CANDIDATE, ExperimentFile
from tests.e2e.outcomes import finished
from tests.e2e.world import World
from tests.fixtures.kube import apply, write_status

pytestmark = pytest.mark.e2e

SYNC_TIMEOUT = 2.0
LOAD = 400.0
"""Requests a second each version gets from the load generator, whatever the weights."""


def rolled_out(generation: int) -> dict[str, Any]:
    """The status the Deployment controller writes once ``generation`` has rolled out."""
    return {
        "observedGeneration": generation,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }


def test_a_blue_green_winner_serves_all_traffic_until_the_baseline_runs_it_then_is_cleaned_up(
    make_world: Callable[..., World],
) -> None:
    world = make_world(load_per_version=LOAD)
    stable = ObjectRef("apps/v1", "Deployment", "productpage-stable", world.namespace)
    write_status(world.admin, stable, rolled_out(1))
    experiment = ExperimentFile(
        pattern="BlueGreen", readiness=("productpage-stable",), iterations=3, no_data_limit=10
    )
    world.repo.add_candidate(experiment, world.namespace)
    world.start(extra=["--sync-timeout", f"{SYNC_TIMEOUT:g}"])

    outcome = world.wait("the promotion on main", lambda: next(iter(world.repo.outcomes()), None))
    world.wait(
        "all traffic on the winner", lambda: world.weights() == {BASELINE: 0, CANDIDATE: 100}
    )
    assert world.repo.show("main", f"{APP}/productpage-candidate.yaml") is not None
    # The outcome is applied (as an operator would): the baseline's Deployment gets the
    # winner's image, a new generation its controller has not rolled out yet.
    (promoted,) = [
        d for d in world.manifests() if d["kind"] == "Deployment" and d["metadata"]["name"]
        == "productpage-stable"
    ]  # fmt: skip
    assert promoted["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v2")
    generation = apply(world.admin, promoted)["metadata"]["generation"]
    assert generation == 2
    # Past the sync timeout and several ticks, the winner still serves every request.
    time.sleep(SYNC_TIMEOUT + 3)
    assert world.weights() == {BASELINE: 0, CANDIDATE: 100}
    assert world.repo.show("main", f"{APP}/productpage-candidate.yaml") is not None
    assert [c for c in world.repo.log("main") if c.get("Rollout-Cleanup")] == []

    write_status(world.admin, stable, rolled_out(generation))
    world.wait(
        "traffic back on the baseline", lambda: world.weights() == {BASELINE: 100, CANDIDATE: 0}
    )
    world.wait("the experiment archived", finished(world, experiment))
    (cleanup,) = [c for c in world.repo.log("main") if c.get("Rollout-Cleanup")]
    assert cleanup.get("Rollout-Cleanup") == outcome.id
    assert cleanup.get("Rollout-Id") == outcome.get("Rollout-Id")
    assert world.repo.show("main", f"{APP}/productpage-candidate.yaml") is None
    assert len(world.repo.outcomes()) == 1
