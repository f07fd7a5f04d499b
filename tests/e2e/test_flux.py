"""Beside the real Flux: source-controller and kustomize-controller put main on the cluster.

The Env repo is served over HTTPS; Flux fetches it every second with the credentials of a
Secret and applies ``apps/`` with the Kustomization of ``manifests/flux/env.example.yaml``.
The reconciler runs beside it with the Flux hand-off settings. What a Flux user relies on:
Flux creates the traffic objects and then leaves their weights to the reconciler (with the
``ssa: IfNotPresent`` patches, and not without them, which ``doctor`` tells apart);
``.sourceignore`` keeps experiment files off the cluster; after the outcome commit the
reconciler requests a reconcile and archives only once ``lastAppliedRevision`` names it;
Flux rolls out the promoted image and prunes the candidate; a cluster wiped under a running
process gets the recorded weights back as soon as Flux re-created the objects.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.client import Kube
from reconciler.cluster.handoff import FLUX_REQUESTED_AT, names_commit
from reconciler.cluster.resources import ObjectRef
from tests.e2e.envrepo import (
    CANDIDATE,
    CANDIDATE_IMAGE,
    STABLE_IMAGE,
    ExperimentFile,
)
from tests.e2e.flux import SSA_ANNOTATION, FluxWorld, Sampler
from tests.e2e.outcomes import (
    BASELINE_ONLY,
    assert_promoted_once,
    assert_rolled_back_once,
    finished,
)
from tests.e2e.world import FAULTY, MAIN_SPLIT, virtual_service
from tests.fixtures.git import GitDaemon
from tests.fixtures.kube import ROOT
from tests.fixtures.operators import FLUX_NAMESPACE, FluxCluster
from tests.fixtures.prometheus import PrometheusServer
from tests.sim.server import MetricsServer

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

RECONCILIATIONS = 3
"""Flux reconciliations the weights must survive while the experiment runs."""


@pytest.fixture
def make_flux_world(  # noqa: PLR0917 - pytest passes fixtures by name
    tmp_path: Path,
    flux_cluster: FluxCluster,
    git_daemon: GitDaemon,
    e2e_metrics: MetricsServer,
    e2e_prometheus: PrometheusServer,
    namespace: str,
) -> Iterator[Callable[..., FluxWorld]]:
    """``make_flux_world(candidate=..., annotate=...)``, once a test."""
    made: list[FluxWorld] = []

    def make(**options: Any) -> FluxWorld:
        assert not made, "one world per test"
        world = FluxWorld(
            tmp_path,
            flux=flux_cluster,
            git_daemon=git_daemon,
            metrics=e2e_metrics,
            prometheus=e2e_prometheus,
            namespace=namespace,
            **options,
        )
        made.append(world)
        world.setup()
        return world

    try:
        yield make
    finally:
        for world in made:
            world.close()


def deployment(namespace: str, name: str) -> ObjectRef:
    """A Deployment of the app."""
    return ObjectRef("apps/v1", "Deployment", name, namespace)


def image_of(kube: Kube, ref: ObjectRef) -> str | None:
    """The first container's image of a Deployment (None: it does not exist)."""
    obj = kube.get(ref)
    return None if obj is None else str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def doctor(world: FluxWorld) -> subprocess.CompletedProcess[str]:
    """``reconciler doctor --flux-kustomization`` for this world's Kustomization."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "doctor",
            "--flux-kustomization",
            f"{FLUX_NAMESPACE}/{world.namespace}",
            "--kubeconfig",
            str(world.kube_server.kubeconfig),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )


def inventory_kinds(world: FluxWorld) -> set[str]:
    """The kinds in the Kustomization's inventory (ids end in ``_<group>_<kind>``)."""
    entries = world.kustomization_status().get("inventory", {}).get("entries", [])
    return {entry["id"].rsplit("_", 1)[-1] for entry in entries}


def test_beside_flux_a_canary_is_promoted_and_archived_only_once_flux_applied_the_outcome(
    make_flux_world: Callable[..., FluxWorld],
) -> None:
    world = make_flux_world()
    vs = virtual_service(world.namespace)
    created = world.admin.get(vs)
    assert created is not None, world.kustomization_status()
    # Flux created the VirtualService, with the annotation the Kustomization's patches add
    assert created["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == world.namespace
    assert created["metadata"]["annotations"][SSA_ANNOTATION] == "IfNotPresent"
    assert world.weights() == MAIN_SPLIT

    experiment = ExperimentFile(iterations=8)
    with Sampler(world) as sampler:
        candidate = world.repo.add_candidate(experiment, world.namespace)
        world.wait_applied(candidate, "the candidate")
        # the candidate runs; the experiment file stayed out (.sourceignore): Flux would
        # otherwise fail the whole apply on a kind the cluster does not serve
        assert image_of(world.admin, deployment(world.namespace, "productpage-candidate")) == (
            CANDIDATE_IMAGE
        )
        assert "Experiment" not in inventory_kinds(world)
        assert {"Deployment", "VirtualService"} <= inventory_kinds(world)

        world.start()
        stepped = world.wait(
            "the candidate to carry traffic",
            lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0 and time.monotonic(),
        )
        before = world.reconciliations()
        world.wait(
            f"Flux to reconcile {RECONCILIATIONS} more times",
            lambda: world.reconciliations() >= before + RECONCILIATIONS,
        )
        survived = time.monotonic()
        assert world.repo.outcomes() == [], "the experiment outlived the reconciliations"
        # doctor, against the objects Flux made: the weights are left to the reconciler
        checked = doctor(world)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "leaves the reconciler's fields alone" in checked.stdout

        world.wait("the experiment to finish", finished(world, experiment), timeout=90)
        sampler.catch_up()

    # while Flux reconciled, the weights changed only by the reconciler's hand
    assert sampler.reverts(MAIN_SPLIT, stepped, survived) == 0
    outcome = assert_promoted_once(
        world, experiment, also_on_main=[".sourceignore"], handed_off=True
    )

    # the reconciler asked Flux to look at once, and Flux handled that request
    kustomization = world.admin.get(world.kustomization) or {}
    requested = kustomization["metadata"]["annotations"][FLUX_REQUESTED_AT]
    assert kustomization["status"]["lastHandledReconcileAt"] == requested
    source = world.admin.get(world.source) or {}
    assert source["metadata"]["annotations"][FLUX_REQUESTED_AT] == requested
    # the archive names the revision Flux reported, and came after Flux applied it
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    assert archived["sync"] == "synced"
    assert names_commit(archived["reason"].removeprefix("synced at "), outcome.id)
    on_main = sampler.first("the outcome on main", lambda s: s.main == outcome.id)
    applied = sampler.first(
        "Flux applying the outcome",
        lambda s: s.applied is not None and names_commit(s.applied, outcome.id),
    )
    archived_at = sampler.first("the archive", lambda s: not s.live, since=on_main.at)
    assert on_main.at <= applied.at <= archived_at.at
    log.info(  # figures for the notes: pytest --log-cli-level=INFO shows them
        "flux hand-off: outcome on main -> applied %.2f s -> archived %.2f s",
        applied.at - on_main.at,
        archived_at.at - on_main.at,
    )

    # Flux rolled out the winner as the baseline and pruned the candidate
    stable = deployment(world.namespace, "productpage-stable")
    assert image_of(world.admin, stable) == CANDIDATE_IMAGE
    assert world.admin.get(deployment(world.namespace, "productpage-candidate")) is None
    assert world.weights() == BASELINE_ONLY


def test_beside_flux_a_cluster_wiped_mid_experiment_gets_the_recorded_weights_back(
    make_flux_world: Callable[..., FluxWorld],
) -> None:
    world = make_flux_world(candidate=FAULTY)
    experiment = ExperimentFile(iterations=30, failure_limit=6, max_weight=40, increment=10)
    candidate = world.repo.add_candidate(experiment, world.namespace)
    world.wait_applied(candidate, "the candidate")
    process = world.start()
    world.wait(
        "the candidate to carry traffic", lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0
    )
    assert world.repo.outcomes() == []
    # the cluster is rebuilt under the running process: Flux re-creates the objects from
    # main (100/0) and the reconciler's next tick puts back what the state branch records
    world.checking = False
    world.wipe_cluster()
    wiped = time.monotonic()
    world.wait("Flux to re-create the VirtualService", world.weights)
    recreated = time.monotonic()
    ticks = process.metric("reconciler_ticks_total", result="ok")
    world.wait(
        "the recorded weights back",
        lambda: world.weights() == world.recorded_weights(3)[0] != MAIN_SPLIT,
    )
    back = time.monotonic()
    # within one tick: the one running when Flux re-created the object, or the next
    assert process.metric("reconciler_ticks_total", result="ok") - ticks <= 2
    world.checking = True
    log.info(
        "flux wipe: re-created by Flux after %.2f s, recorded weights back %.2f s later",
        recreated - wiped,
        back - recreated,
    )
    last = world.wait("the experiment to finish", finished(world, experiment), timeout=90)
    assert last.phase == "RolledBack", world.describe()
    assert_rolled_back_once(world, experiment, also_on_main=[".sourceignore"], handed_off=True)
    world.wait(
        "Flux to prune the candidate",
        lambda: world.admin.get(deployment(world.namespace, "productpage-candidate")) is None,
    )
    stable = deployment(world.namespace, "productpage-stable")
    assert image_of(world.admin, stable) == STABLE_IMAGE


def test_beside_flux_without_the_annotation_flux_puts_gits_weights_back_and_doctor_says_so(
    make_flux_world: Callable[..., FluxWorld],
) -> None:
    world = make_flux_world(annotate=False)
    created = world.admin.get(virtual_service(world.namespace)) or {}
    assert SSA_ANNOTATION not in (created["metadata"].get("annotations") or {})
    checked = doctor(world)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "productpage" in checked.stdout
    assert "problem:" in checked.stdout

    experiment = ExperimentFile(iterations=30)
    candidate = world.repo.add_candidate(experiment, world.namespace)
    world.wait_applied(candidate, "the candidate")
    world.checking = False  # Flux fights the reconciler here: that is what this test shows
    with Sampler(world) as sampler:
        world.start()
        stepped = world.wait(
            "the candidate to carry traffic",
            lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0 and time.monotonic(),
        )
        world.wait(
            "Flux to put Git's weights back",
            lambda: sampler.reverts(MAIN_SPLIT, stepped, time.monotonic()) >= 1,
        )
        reverted = time.monotonic()
        # and the reconciler, seeing weights it did not record, puts its own back
        world.wait(
            "the reconciler to correct the weights",
            lambda: (world.weights() or MAIN_SPLIT) != MAIN_SPLIT and time.monotonic() > reverted,
        )
    assert world.repo.outcomes() == []
