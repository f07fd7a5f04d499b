"""Beside the real Flux and the real Argo CD: the operator, not the test, puts main on the cluster.

The Env repo is served over HTTPS; the operator fetches it with the credentials of a Secret
and applies ``apps/`` as ``manifests/flux`` or ``manifests/argocd`` sets it up (see
``gitops.py``). The reconciler runs beside it as the overlay's ServiceAccount. What a user
of either operator relies on, each story run against both:

- the operator creates the traffic objects and then leaves their weights to the reconciler,
  while it keeps reconciling and while CI commits to main; without the overlay's
  protection (Flux: the ``ssa: IfNotPresent`` patches; Argo CD:
  ``RespectIgnoreDifferences=true``) it puts Git's weights back, and ``doctor`` tells the
  two apart on the objects the operator made;
- experiment files never reach the cluster (``.sourceignore``, ``directory.exclude``);
- after the outcome commit the reconciler asks the operator to look, and archives only
  once the operator reports the commit applied; the operator rolls out the promoted image
  and prunes the candidate (or keeps the baseline, after a rollback);
- a cluster wiped under a running process gets the recorded weights back within a tick of
  the operator re-creating the objects.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.cluster.client import Kube
from reconciler.cluster.handoff import names_commit
from reconciler.cluster.resources import ObjectRef
from reconciler.gitstore.trailers import encode_mapping as encode
from tests.e2e.envrepo import APP, CANDIDATE, CANDIDATE_IMAGE, STABLE_IMAGE, ExperimentFile
from tests.e2e.gitops import ArgoCDWorld, FluxWorld, OperatorWorld, Sampler
from tests.e2e.outcomes import (
    BASELINE_ONLY,
    assert_promoted_once,
    assert_rolled_back_once,
    finished,
)
from tests.e2e.world import FAULTY, MAIN_SPLIT, one_world, virtual_service
from tests.fixtures.git import GitDaemon
from tests.fixtures.kube import ROOT
from tests.fixtures.prometheus import PrometheusServer
from tests.sim.server import MetricsServer

# one worker starts the operators' API server and the operators, not each
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("gitops-operators")]
log = logging.getLogger(__name__)

RECONCILIATIONS = 3
"""Times the operator must compare the cluster with Git while the weights stay."""
WORLDS: dict[str, type[OperatorWorld]] = {"flux": FluxWorld, "argocd": ArgoCDWorld}
"""The operators every story runs beside."""
CI_FILE = f"{APP}/ci-note.yaml"
CI_NOTE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ci-note\ndata:\n  note: {text}\n"


@pytest.fixture(params=sorted(WORLDS))
def make_operator_world(  # noqa: PLR0917 - pytest passes fixtures by name
    request: pytest.FixtureRequest,
    tmp_path: Path,
    git_daemon: GitDaemon,
    e2e_metrics: MetricsServer,
    e2e_prometheus: PrometheusServer,
    namespace: str,
) -> Iterator[Callable[..., OperatorWorld]]:
    """``make_operator_world(candidate=..., protect=...)``, beside Flux and beside Argo CD."""
    name: str = request.param
    with one_world(
        functools.partial(
            WORLDS[name],
            tmp_path,
            operator=request.getfixturevalue(f"{name}_cluster"),
            git_daemon=git_daemon,
            metrics=e2e_metrics,
            prometheus=e2e_prometheus,
            namespace=namespace,
        )
    ) as make:
        yield make


def deployment(namespace: str, name: str) -> ObjectRef:
    """A Deployment of the app."""
    return ObjectRef("apps/v1", "Deployment", name, namespace)


def image_of(kube: Kube, ref: ObjectRef) -> str | None:
    """The first container's image of a Deployment (None: it does not exist)."""
    obj = kube.get(ref)
    return None if obj is None else str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def doctor(world: OperatorWorld) -> subprocess.CompletedProcess[str]:
    """``reconciler doctor`` for this world's Kustomization or Application."""
    subject = (
        ["--flux-kustomization", f"{world.operator_namespace}/{world.namespace}"]
        if isinstance(world, FluxWorld)
        else ["--argocd-application", f"{world.operator_namespace}/{world.namespace}"]
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "doctor",
            *subject,
            "--kubeconfig",
            str(world.kube_server.kubeconfig),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )


def ci_commit(world: OperatorWorld, text: str) -> None:
    """CI pushes an unrelated change to main; wait until the operator applied it."""
    commit = world.repo.commit(
        {CI_FILE: CI_NOTE.format(text=text)},
        f"ci: {text}",
    )
    world.wait_applied(commit, f"CI's commit {text!r}")


def test_a_canary_is_promoted_and_archived_only_once_the_operator_applied_the_outcome(
    make_operator_world: Callable[..., OperatorWorld],
) -> None:
    world = make_operator_world()
    created = world.admin.get(virtual_service(world.namespace))
    assert created is not None, world.status()
    assert world.created_by_operator(created), created["metadata"]
    assert world.protected(), created["metadata"]
    assert world.weights() == MAIN_SPLIT

    experiment = ExperimentFile(iterations=10)
    with Sampler(world) as sampler:
        candidate = world.repo.add_candidate(experiment, world.namespace)
        world.wait_applied(candidate, "the candidate")
        # the candidate runs; the experiment file stayed out: the operator would otherwise
        # fail the whole sync on a kind the cluster does not serve
        assert image_of(world.admin, deployment(world.namespace, "productpage-candidate")) == (
            CANDIDATE_IMAGE
        )
        assert {"Deployment", "VirtualService"} <= world.deployed_kinds()
        assert "Experiment" not in world.deployed_kinds()

        world.start()
        stepped = world.wait(
            "the candidate to carry traffic",
            lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0 and time.monotonic(),
        )
        before = world.reconciliations()
        ci_commit(world, "a change CI made during the experiment")
        world.wait(
            f"the operator to compare with Git {RECONCILIATIONS} more times",
            lambda: world.reconciliations() >= before + RECONCILIATIONS,
        )
        survived = time.monotonic()
        assert world.repo.outcomes() == [], "the experiment outlived the reconciliations"
        # doctor, against the objects the operator made: the weights are the reconciler's
        checked = doctor(world)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "leaves the reconciler's fields alone" in checked.stdout

        world.wait("the experiment to finish", finished(world, experiment), timeout=90)
        sampler.catch_up()

    # while the operator reconciled and synced CI's commit, it never put Git's weights back
    assert sampler.reverts(MAIN_SPLIT, stepped, survived) == 0
    # Argo CD applies the fields it ignores from its cache of the live object: a sync that
    # races a weight change (here CI's commit, synced as the reconciler stepped) can write
    # back the weights the reconciler had just replaced, never Git's. The reconciler sets
    # the recorded ones again at its next tick and says so (a skip commit). Flux's
    # server-side apply with IfNotPresent never writes them.
    skips = [
        c for c in world.repo.state_log(experiment.key(world.namespace))
        if c.get("Rollout-Skipped") is not None
    ]  # fmt: skip
    assert len(skips) <= (1 if world.overlay_name == "argocd" else 0), world.describe()
    assert all(c.get("Rollout-Observed") != encode(MAIN_SPLIT) for c in skips), world.describe()
    outcome = assert_promoted_once(
        world,
        experiment,
        also_on_main=[*world.setup_files, CI_FILE],
        handed_off=True,
        skips=len(skips),
    )
    world.assert_handed_off(outcome.id)
    # the archive names the revision the operator reported, and came after it did
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    assert archived["sync"] == "synced"
    assert names_commit(archived["reason"].removeprefix("synced at "), outcome.id)
    on_main = sampler.first("the outcome on main", lambda s: s.main == outcome.id)
    applied = sampler.first(
        "the operator applying the outcome",
        lambda s: s.applied is not None and names_commit(s.applied, outcome.id),
    )
    archived_at = sampler.first("the archive", lambda s: not s.live, since=on_main.at)
    assert on_main.at <= applied.at <= archived_at.at
    log.info(  # figures for the notes: pytest --log-cli-level=INFO shows them
        "%s hand-off: outcome on main -> applied %.2f s -> archived %.2f s",
        type(world).__name__,
        applied.at - on_main.at,
        archived_at.at - on_main.at,
    )
    # the operator rolled out the winner as the baseline and pruned the candidate
    stable = deployment(world.namespace, "productpage-stable")
    assert image_of(world.admin, stable) == CANDIDATE_IMAGE
    assert world.admin.get(deployment(world.namespace, "productpage-candidate")) is None
    assert world.weights() == BASELINE_ONLY


def test_a_cluster_wiped_mid_experiment_gets_the_recorded_weights_back_then_rolls_back(
    make_operator_world: Callable[..., OperatorWorld],
) -> None:
    world = make_operator_world(candidate=FAULTY)
    experiment = ExperimentFile(iterations=30, failure_limit=6, max_weight=40, increment=10)
    candidate = world.repo.add_candidate(experiment, world.namespace)
    world.wait_applied(candidate, "the candidate")
    process = world.start()
    world.wait(
        "the candidate to carry traffic", lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0
    )
    assert world.repo.outcomes() == []
    # the cluster is rebuilt under the running process: the operator re-creates the objects
    # from main (100/0) and the reconciler's next tick puts back what the state records
    world.checking = False
    world.wipe_cluster()
    wiped = time.monotonic()
    world.wait("the operator to re-create the VirtualService", world.weights, timeout=60)
    recreated = time.monotonic()
    ticks = process.metric("reconciler_ticks_total", result="ok")
    world.wait(
        "the recorded weights back",
        lambda: world.weights() == world.recorded_weights(3)[0] != MAIN_SPLIT,
    )
    back = time.monotonic()
    # within a tick: the one running when the object came back, or the next
    assert process.metric("reconciler_ticks_total", result="ok") - ticks <= 2
    world.checking = True
    log.info(
        "%s wipe: re-created by the operator after %.2f s, recorded weights back %.2f s later",
        type(world).__name__,
        recreated - wiped,
        back - recreated,
    )
    last = world.wait("the experiment to finish", finished(world, experiment), timeout=90)
    assert last.phase == "RolledBack", world.describe()
    assert_rolled_back_once(world, experiment, also_on_main=world.setup_files, handed_off=True)
    world.wait(
        "the operator to prune the candidate",
        lambda: world.admin.get(deployment(world.namespace, "productpage-candidate")) is None,
    )
    stable = deployment(world.namespace, "productpage-stable")
    assert image_of(world.admin, stable) == STABLE_IMAGE


def test_without_the_overlays_protection_the_operator_puts_gits_weights_back_and_doctor_says_so(
    make_operator_world: Callable[..., OperatorWorld],
) -> None:
    world = make_operator_world(protect=False)
    assert not world.protected()
    checked = doctor(world)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "problem:" in checked.stdout
    assert world.unprotected_fix in checked.stdout

    experiment = ExperimentFile(iterations=30)
    candidate = world.repo.add_candidate(experiment, world.namespace)
    world.wait_applied(candidate, "the candidate")
    world.checking = False  # the operator fights the reconciler here: that is what is shown
    with Sampler(world) as sampler:
        world.start()
        stepped = world.wait(
            "the candidate to carry traffic",
            lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0 and time.monotonic(),
        )
        # Flux applies at every interval; Argo CD when it syncs, as after CI's next commit
        ci_commit(world, "a change CI made during the experiment")
        world.wait(
            "the operator to put Git's weights back",
            lambda: sampler.reverts(MAIN_SPLIT, stepped, time.monotonic()) >= 1,
        )
        reverted = time.monotonic()
        # and the reconciler, finding weights it did not record, puts its own back
        world.wait(
            "the reconciler to correct the weights",
            lambda: (world.weights() or MAIN_SPLIT) != MAIN_SPLIT and time.monotonic() > reverted,
        )
    assert world.repo.outcomes() == []


def test_a_ci_commit_on_top_of_the_outcome_counts_as_the_outcome_applied(
    make_operator_world: Callable[..., OperatorWorld],
) -> None:
    world = make_operator_world()
    experiment = ExperimentFile(iterations=3)
    candidate = world.repo.add_candidate(experiment, world.namespace)
    world.wait_applied(candidate, "the candidate")
    # the operator stops applying main (Flux: suspend; Argo CD: automated sync off), so
    # the outcome and CI's next commit land before it looks again
    world.suspend()
    world.start()
    live = f"experiments/{experiment.key(world.namespace)}.json"
    world.wait(
        "the outcome recorded, waiting for the operator",
        lambda: (world.repo.document(live) or {}).get("sync") == "waiting",
        timeout=60,
    )
    (outcome,) = world.repo.outcomes()
    later = world.repo.commit({CI_FILE: CI_NOTE.format(text="after the outcome")}, "ci: next")
    world.wait_fetched(later, "CI's commit")  # so that it never applies the outcome alone
    world.suspend(suspended=False)
    world.wait_applied(later, "CI's commit on top of the outcome")
    world.wait("the experiment to finish", finished(world, experiment), timeout=60)
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    # archived as synced, by the commit the operator applied, not by the sync timeout
    assert archived["sync"] == "synced", archived
    assert later in archived["reason"], (archived["reason"], outcome.id, later)
    assert outcome.id != later
    assert image_of(world.admin, deployment(world.namespace, "productpage-stable")) == (
        CANDIDATE_IMAGE
    )
