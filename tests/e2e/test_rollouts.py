"""Whole rollouts through ``reconciler run``: promoted, rolled back, preempted, handed to Argo CD.

Every real part runs on 127.0.0.1 (see ``world.py``): the Env repo behind ``git daemon``,
the Kubernetes test server, the simulator whose traffic follows the VirtualService, a real
Prometheus, and the reconciler as a separate process.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler.cluster.client import MERGE_PATCH
from reconciler.cluster.resources import ObjectRef
from tests.e2e.envrepo import (
    APP,
    BASELINE,
    CANDIDATE,
    STATE,
    ExperimentFile,
)
from tests.e2e.outcomes import (
    BASELINE_ONLY,
    assert_promoted_once,
    assert_rolled_back_once,
    finished,
)
from tests.e2e.world import FAULTY, World
from tests.fixtures.kube import apply, ensure_namespace

pytestmark = pytest.mark.e2e


def test_a_canary_that_passes_is_promoted_in_one_commit_and_its_state_archived(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    experiment = ExperimentFile(iterations=3)
    world.repo.add_candidate(experiment, world.namespace)
    process = world.start()
    world.wait("the first successful tick", lambda: process.request("/readyz")[0] == 200)
    assert process.request("/healthz") == (200, b"ok\n")
    # the candidate gets traffic as the experiment goes (the simulator follows the cluster)
    world.wait(
        "the candidate to carry traffic",
        lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0,
    )
    world.wait("the experiment to finish", finished(world, experiment))
    outcome = assert_promoted_once(world, experiment)
    # the process says so on /metrics
    repo = world.repo.url
    assert process.metric("reconciler_outcomes_total", repo=repo, outcome="promoted") == 1
    assert (
        process.metric("reconciler_git_pushes_total", repo=repo, branch="main", result="accepted")
        == 1
    )
    assert (
        process.metric("reconciler_git_pushes_total", repo=repo, branch=STATE, result="accepted")
        >= experiment.iterations + 2
    )
    status, body = process.request("/readyz")
    assert status == 200, body
    assert outcome.subject.startswith(f"productpage: promote {CANDIDATE}")


def test_a_canary_that_fails_is_rolled_back_and_never_promoted_later(
    make_world: Callable[..., World],
) -> None:
    world = make_world(candidate=FAULTY)
    experiment = ExperimentFile(iterations=10, failure_limit=2)
    world.repo.add_candidate(experiment, world.namespace)
    process = world.start()
    last = world.wait("the experiment to finish", finished(world, experiment))
    assert last.phase == "RolledBack"
    assert_rolled_back_once(world, experiment)
    verdicts = [c.verdicts for c in world.repo.state_log(experiment.key(world.namespace))]
    assert [v[CANDIDATE] for v in verdicts if v][-2:] == ["fail", "fail"]
    # Someone restores the very experiment file on main: the run it names is over.
    state_tip, main_tip = world.repo.tip(STATE), world.repo.tip("main")
    world.repo.commit(
        {experiment.path: experiment.render(world.namespace)}, "restore the experiment file"
    )
    ticks = process.metric("reconciler_ticks_total", result="ok")
    world.wait(
        "three more ticks",
        lambda: process.metric("reconciler_ticks_total", result="ok") >= ticks + 3,
    )
    assert world.repo.tip(STATE) == state_tip, world.describe()
    assert [c.get("Rollout-Outcome") for c in world.repo.outcomes()] == ["rolled-back"]
    assert world.repo.log("main", limit=2)[1].id == main_tip
    assert world.weights() == BASELINE_ONLY
    assert process.metric("reconciler_outcomes_total", outcome="rolled-back") == 1
    assert process.metric("reconciler_outcomes_total", outcome="promoted") == 0


def test_a_newer_experiment_for_the_same_target_preempts_the_running_one(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    older = ExperimentFile(iterations=30)
    world.repo.add_candidate(older, world.namespace)
    world.start()
    older_key = older.key(world.namespace)
    world.wait(
        "the first experiment to iterate",
        lambda: (c := world.repo.latest(older_key)) is not None and (c.iteration or 0) >= 1,
    )
    newer = ExperimentFile(
        name="productpage-canary-2",
        file="experiment-2.yaml",
        iterations=3,
        cleanup=("productpage-candidate.yaml", older.file),
    )
    world.repo.commit(
        {newer.path: newer.render(world.namespace)}, "ci: productpage v2 build 2, a new experiment"
    )
    world.wait("the newer experiment to finish", finished(world, newer))
    # the older run was preempted, by the newer run, and never reached a decision
    older_runs = world.repo.state_log(older_key)
    assert [c.phase for c in older_runs][-1] == "Preempted", world.describe()
    assert not {"Promoting", "RollingBack"} & {c.phase for c in older_runs}
    newer_id = world.repo.state_log(newer.key(world.namespace))[0].get("Rollout-Id")
    (preempted,) = world.repo.archived(world.namespace, older.name)
    assert preempted["phase"] == "Preempted"
    assert preempted["preemptedBy"] == newer_id
    # the newer one is promoted, in the only outcome commit on main
    outcome = assert_promoted_once(world, newer)
    assert outcome.get("Rollout-Id") == newer_id


def test_a_signed_push_webhook_triggers_a_tick_and_an_unsigned_one_is_refused(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    secret = b"e2e webhook secret"
    secret_file = world.tmp / "webhook-secret"
    secret_file.write_bytes(secret + b"\n")
    # An hour between timer ticks: only the webhook can make this process tick again.
    process = world.start(interval=3600, extra=["--webhook-secret-file", str(secret_file)])
    world.wait("the first tick", lambda: process.request("/readyz")[0] == 200)
    assert process.metric("reconciler_ticks_total", result="ok") == 1
    experiment = ExperimentFile(iterations=3)
    world.repo.add_candidate(experiment, world.namespace)

    body, headers = world.github_push(secret=None)
    assert process.request("/webhook", body=body, headers=headers)[0] == 401
    body, forged = world.github_push(secret=b"not the secret")
    assert process.request("/webhook", body=body, headers=forged)[0] == 401
    assert world.repo.tip(STATE) is None

    body, signed = world.github_push(secret=secret)
    assert process.request("/webhook", body=body, headers=signed) == (202, b"push accepted\n")
    key = experiment.key(world.namespace)
    started = world.wait("the experiment to start", lambda: world.repo.latest(key))
    assert (started.phase, started.iteration) == ("Progressing", 0)
    world.wait(
        "the tick the webhook asked for to be counted",
        lambda: process.metric("reconciler_ticks_total", result="ok") >= 2,
    )
    # the refused requests asked for nothing: two ticks, the first one and the webhook's
    assert process.metric("reconciler_ticks_total", result="ok") == 2
    assert world.weights() == {BASELINE: 80, CANDIDATE: 20}


def test_with_argo_cd_the_experiment_waits_for_the_outcome_to_be_synced_then_is_archived(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    ensure_namespace(world.admin, "argocd")
    application = ObjectRef("argoproj.io/v1alpha1", "Application", "env", "argocd")
    main_before = world.repo.tip("main")
    apply(
        world.admin,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "env", "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {"repoURL": world.repo.url, "path": APP, "targetRevision": "main"},
                "destination": {
                    "server": "https://kubernetes.default.svc",
                    "namespace": world.namespace,
                },
            },
            "status": {"sync": {"status": "Synced", "revision": main_before}},
        },
    )
    world.own(application)
    experiment = ExperimentFile(iterations=3)
    world.repo.add_candidate(experiment, world.namespace)
    process = world.start(extra=["--argocd-application", "argocd/env"])
    key = experiment.key(world.namespace)
    live = f"experiments/{key}.json"

    def waiting_for_sync() -> dict[str, object] | None:
        doc = world.repo.document(live)
        return doc if doc is not None and doc["phase"] == "Promoted" else None

    doc = world.wait("the outcome commit to be recorded", waiting_for_sync)
    assert doc["sync"] == "waiting"
    (outcome,) = world.repo.outcomes()
    assert doc["outcomeCommit"] == outcome.id
    annotations = (world.admin.get(application) or {})["metadata"].get("annotations", {})
    assert annotations.get("argocd.argoproj.io/refresh") == "normal"
    # Argo CD has not synced it yet: the experiment stays live, tick after tick
    ticks = process.metric("reconciler_ticks_total", result="ok")
    world.wait(
        "two more ticks",
        lambda: process.metric("reconciler_ticks_total", result="ok") >= ticks + 2,
    )
    assert (world.repo.document(live) or {}).get("sync") == "waiting"
    assert world.repo.archived(world.namespace, experiment.name) == []

    # Argo CD syncs the outcome commit
    world.admin.patch(
        application,
        {"status": {"sync": {"status": "Synced", "revision": outcome.id}}},
        content_type=MERGE_PATCH,
    )
    world.wait("the experiment to be archived", finished(world, experiment))
    (archived,) = world.repo.archived(world.namespace, experiment.name)
    assert archived["sync"] == "synced"
    assert archived["phase"] == "Promoted"
    assert archived["outcomeCommit"] == outcome.id
    assert [c.id for c in world.repo.outcomes()] == [outcome.id]
    assert world.weights() == BASELINE_ONLY
