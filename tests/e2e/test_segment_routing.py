"""README's segment-routing recipe (docs/recipes/segment-routing), Istio and Gateway API.

The recipe's Env repo as it is (the experiment's interval shortened to 1 s and its loop to
4 iterations) behind the real git daemon, applied to the real kube-apiserver as Argo CD
would, the traffic simulator routing a fixed mix of requests by the routing objects it
finds on the cluster (``segments.shares``), a real Prometheus, and ``reconciler run``
handing the outcome to an Argo CD Application whose part the test plays: it syncs main
(apply, then prune) when the outcome lands and reports the sync.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.client import JSON_PATCH, MERGE_PATCH, KubeSettings, connect
from reconciler.cluster.resources import ObjectRef
from tests.e2e.envrepo import STATE
from tests.e2e.segments import (
    BASELINE,
    CANDIDATE,
    GATEWAY_API,
    ISTIO,
    ITERATIONS,
    NAMESPACE,
    RECIPES,
    SEGMENT,
    SegmentWorld,
    Variant,
    backends,
    recipe_files,
    shares,
)
from tests.e2e.test_recipes import validate_strictly
from tests.e2e.world import one_world
from tests.fixtures.kube import apply, ensure_namespace, load_yaml_text

pytestmark = pytest.mark.e2e

KEY = f"{NAMESPACE}/frontend-beta"
LIVE = f"experiments/{KEY}.json"
APPLICATION = ObjectRef("argoproj.io/v1alpha1", "Application", "env", "argocd")
DRIFT = {BASELINE: 70, CANDIDATE: 30}
"""What a person sets on the default route by hand while the experiment runs."""


@pytest.fixture
def make_segment_world(
    tmp_path: Path, world_options: dict[str, Any]
) -> Iterator[Callable[..., SegmentWorld]]:
    """``make(variant=...)``, once a test."""
    with one_world(
        functools.partial(SegmentWorld, tmp_path, namespace=NAMESPACE, **world_options)
    ) as make:
        yield make


def test_the_recipe_validates_strictly() -> None:
    files = sorted(str(p) for p in RECIPES.rglob("*.yaml"))
    printed = validate_strictly(files)
    # Both experiment files were read as experiments: nothing, not even a note, about them
    # (every other file gets a note saying what it is instead).
    experiments = [f for f in files if f.endswith("/experiment.yaml")]
    assert len(experiments) == 2
    assert not [f for f in experiments if f in printed], printed


def synced_application(world: SegmentWorld) -> None:
    """The Argo CD Application that syncs the Env repo, synced at main's tip."""
    ensure_namespace(world.admin, APPLICATION.namespace or "")
    apply(
        world.admin,
        {
            "apiVersion": APPLICATION.api_version,
            "kind": APPLICATION.kind,
            "metadata": {"name": APPLICATION.name, "namespace": APPLICATION.namespace},
            "spec": {
                "project": "default",
                "source": {"repoURL": world.repo.url, "path": "apps", "targetRevision": "main"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": NAMESPACE},
            },
            "status": {"sync": {"status": "Synced", "revision": world.repo.tip("main")}},
        },
    )
    world.own(APPLICATION)


def by_hand(world: SegmentWorld, weights: dict[str, int]) -> None:
    """A person sets the default route's weights with kubectl."""
    person = connect(
        KubeSettings(kubeconfig=str(world.kube_server.kubeconfig), field_manager="kubectl-edit")
    )
    try:
        ops = [
            {"op": "replace", "path": "".join(f"/{step}" for step in world.paths[v]), "value": w}
            for v, w in weights.items()
        ]
        ref = ObjectRef(*world.variant.routes, BASELINE, NAMESPACE)
        person.patch(ref, ops, content_type=JSON_PATCH)
    finally:
        person.close()


def waiting_for_sync(world: SegmentWorld) -> dict[str, Any] | None:
    """The live document once the outcome is on main and Argo CD is to apply it."""
    doc = world.repo.document(LIVE)
    return doc if doc is not None and doc.get("sync") == "waiting" else None


def archived(world: SegmentWorld) -> dict[str, Any] | None:
    """The archived document, once the experiment is over and nothing is live."""
    if LIVE in world.repo.files(STATE):
        return None
    found = world.repo.archived(NAMESPACE, "frontend-beta")
    return found[0] if found else None


@pytest.mark.parametrize(
    ("variant", "hand_off"),
    [
        pytest.param(ISTIO, False, id="istio"),
        # the outcome removes the route that held the weight fields: the finished run is
        # archived all the same (engine.traffic: fields an applied outcome removed)
        pytest.param(ISTIO, True, id="istio-beside-argocd"),
        pytest.param(GATEWAY_API, True, id="gateway-api-beside-argocd"),
    ],
)
def test_the_beta_segment_alone_reaches_the_candidate_until_the_promotion_removes_its_route(
    make_segment_world: Callable[..., SegmentWorld], variant: Variant, hand_off: bool
) -> None:
    world = make_segment_world(variant=variant)
    # The experiment's weight fields are the default route's: before anything runs, the
    # beta segment goes to the candidate and everyone else by those weights (100/0).
    assert world.beta_on_main is not None
    assert world.weights() == {BASELINE: 100, CANDIDATE: 0}
    assert shares(world.routes()) == pytest.approx({BASELINE: 1 - SEGMENT, CANDIDATE: SEGMENT})
    if hand_off:
        synced_application(world)
    process = world.start(extra=["--argocd-application", "argocd/env"] if hand_off else [])

    started = world.wait("the experiment to start", lambda: world.repo.latest(KEY))
    assert (started.phase, started.weights) == ("Progressing", {BASELINE: 100, CANDIDATE: 0})
    # (on a busy machine Prometheus may not have scraped the first second yet: that
    # iteration has no data; wait for one judged on the segment's requests)
    world.wait(
        "a first iteration judged on requests of both versions",
        lambda: judged_on_requests(world, f"{variant.library}/request-count"),
    )
    # Someone sends 30 % of everyone else to the candidate by hand: the reconciler sets the
    # default route back within a tick or two; the beta route stays as main has it (every
    # look of ``world.wait`` checks both, until Argo CD applies the outcome).
    by_hand(world, DRIFT)
    world.wait(
        "the default route corrected",
        lambda: process.metric("reconciler_weight_corrections_total", experiment=KEY) >= 1,
    )
    world.wait("the default route back at 100/0", lambda: world.weights() == started.weights)

    if hand_off:
        doc = world.wait("the outcome, waiting for Argo CD", lambda: waiting_for_sync(world))
    else:
        doc = world.wait("the experiment archived", lambda: archived(world))
    (outcome,) = world.repo.outcomes()
    assert (doc["phase"], doc["winner"], doc["outcomeCommit"]) == (
        "Promoted",
        CANDIDATE,
        outcome.id,
    )
    assert (outcome.get("Rollout-Outcome"), outcome.get("Rollout-Winner")) == (
        "promoted",
        CANDIDATE,
    )
    assert_judged_on_the_segment(doc, f"{variant.library}/request-count")
    # Until Argo CD applies the outcome, the cluster still routes the beta segment to the
    # candidate, and the default route is at 100/0.
    assert world.beta_route() == world.beta_on_main
    assert world.weights() == {BASELINE: 100, CANDIDATE: 0}

    # Argo CD syncs main: the outcome applied, the candidate's objects pruned.
    world.checking = False  # the routes change now: the beta route goes
    world.sync_cluster(prune=True)
    if hand_off:
        world.admin.patch(
            APPLICATION,
            {"status": {"sync": {"status": "Synced", "revision": outcome.id}}},
            content_type=MERGE_PATCH,
        )
        done = world.wait("the experiment archived", lambda: archived(world), timeout=15)
        assert (done["phase"], done["sync"]) == ("Promoted", "synced")

    # main: the beta route is gone from the file, the default route sends everyone to the
    # baseline, which runs the winner's tag; the candidate's files and the experiment are gone.
    after = variant.beta_file_after
    assert world.repo.show("main", variant.beta_file) == (
        None if after is None else (variant.root / after).read_text()
    )
    assert world.beta_route("main") is None
    assert backends(world.routes("main"), {}) == list(variant.default_after)
    recipe = recipe_files(variant)
    candidate = {p for p in recipe if p.startswith("apps/frontend-candidate/")}
    assert set(world.repo.files("main")) == set(recipe) - candidate
    (deployment,) = load_yaml_text(world.repo.show("main", "apps/frontend/deployment.yaml") or "")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/example/frontend:1.5.0"
    )
    # ... and the cluster, synced: the beta segment goes where everyone goes, the baseline
    assert world.beta_route() is None
    assert shares(world.routes()) == {BASELINE: 1.0}


def _both(metrics: dict[str, Any], request_count: str) -> bool:
    return all(metrics.get(v, {}).get(request_count) for v in (BASELINE, CANDIDATE))


def judged_on_requests(world: SegmentWorld, request_count: str) -> bool:
    """Whether the live run judged an iteration on requests of both versions."""
    doc = world.repo.document(LIVE)
    return doc is not None and any(_both(h["metrics"], request_count) for h in doc["history"])


def assert_judged_on_the_segment(doc: dict[str, Any], request_count: str) -> None:
    """Every iteration kept the candidate at 0 on the default route, yet it served requests:
    the beta segment's, through the beta route. Before the drift (iteration 1) it served
    the segment's share exactly: 20 % of the requests to 80 % for the baseline (the first
    iteration with data, which came before the drift: the test waited for it)."""
    history = doc["history"]
    assert [h["iteration"] for h in history] == list(range(1, ITERATIONS + 1))
    assert all(h["weights"] == {BASELINE: 100, CANDIDATE: 0} for h in history), history
    verdicts = [h["verdicts"][CANDIDATE] for h in history]
    assert verdicts[-1] == "pass", verdicts
    assert "fail" not in verdicts, verdicts
    served = [h["metrics"][CANDIDATE][request_count] for h in history]
    measured = [n for n in served if n is not None]
    assert measured, served
    assert served[len(served) - len(measured) :] == measured, served  # no data only at first
    assert all(n > 0 for n in measured), served
    first = next(h["metrics"] for h in history if _both(h["metrics"], request_count))
    ratio = first[CANDIDATE][request_count] / first[BASELINE][request_count]
    assert ratio == pytest.approx(SEGMENT / (1 - SEGMENT), rel=0.15)
    evidence = doc["evidence"]["versions"][CANDIDATE]
    assert evidence["verdict"] == "pass"
    assert evidence["requests"] >= doc["evidence"]["minRequestCount"]
