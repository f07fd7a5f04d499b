"""Invariant 8 against a real API server: every tick brings the cluster back to the record.

The loop runs in-process with a driven clock, on a real bare Env repo (the demo's app, in
the test's namespace) and a real ``kube-apiserver``; traffic metrics follow the weights the
real VirtualService carries. Someone else changes those weights the ways users do: the
cluster is wiped and re-created from main (as Argo CD or Flux would), a person patches
them with another field manager, an operator server-side-applies Git's weights again and
again, an API server cannot be reached, RBAC refuses the patch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.cluster.client import JSON_PATCH, Kube, KubeSettings, RetryPolicy, connect
from reconciler.cluster.errors import Target
from reconciler.cluster.kube import KubeCluster
from reconciler.cluster.resources import ObjectRef
from reconciler.controller.loop import Reconciler, TickReport
from reconciler.demo import scenario
from reconciler.engine import experiment as engine
from reconciler.engine.state import ExperimentState, Phase, from_json
from reconciler.gitstore.admin import init_bare_repository
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.state_branch import live_path
from reconciler.metrics.profile import Profile, ProfileMetrics
from reconciler.ports import CommitSpec, WeightReading
from reconciler.spec.model import WeightObjRef
from reconciler.testing import DrivenClock, constant
from tests.fixtures.kube import (
    APPLY_PATCH,
    KubeServer,
    apply,
    delete,
    load_yaml_text,
    plain_kubeconfig,
    wait_until,
)

pytestmark = pytest.mark.integration

AUTHOR = ("tests", "tests@example.invalid")
STABLE, CANDIDATE = "productpage-stable", "productpage-candidate"
PROFILES = {
    STABLE: Profile(error_rate=0.004, mean_latency_ms=95.0),
    CANDIDATE: Profile(error_rate=0.002, mean_latency_ms=80.0),
}
INTERVAL = 1.0
"""The demo experiment's ``intervalSeconds``."""


class Loop:
    """The demo's Env repo in ``namespace``, its VirtualService on the API server, a loop."""

    def __init__(self, tmp: Path, admin: Kube, kube: Kube, namespace: str) -> None:
        self.admin = admin
        self.namespace = namespace
        self.clock = DrivenClock()
        remote = init_bare_repository(tmp / "env.git")
        self.remote = str(remote)
        ci = GitEnvStore.open(self.remote, tmp / "ci.git", author=AUTHOR)
        ci.fetch()
        for message, files in scenario.app_commits():
            changes = {p: d.replace(b"bookinfo", namespace.encode()) for p, d in files.items()}
            ci.update_branch("main", constant([CommitSpec(message, dict(changes))]))
        self.main_vs = next(
            d
            for d in load_yaml_text(scenario.demo_file("routing.yaml").decode())
            if d["kind"] == "VirtualService"
        )
        self.sync()
        self.metrics = ProfileMetrics(
            PROFILES, self.weight_of, self.clock, requests_per_second=2000
        )
        self.tmp = tmp
        self.processes = 0
        self.loop = self.restart(KubeCluster(kube))

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(
            "networking.istio.io/v1beta1", "VirtualService", "productpage", self.namespace
        )

    def restart(self, cluster: KubeCluster) -> Reconciler:
        """A fresh process (a new cache) on ``cluster``."""
        self.processes += 1
        store = GitEnvStore.open(
            self.remote, self.tmp / f"cache-{self.processes}.git", author=AUTHOR
        )
        self.loop = Reconciler(store, cluster, self.metrics, clock=self.clock)
        return self.loop

    def sync(self, manager: str = "argocd-controller") -> None:
        """Apply main's VirtualService (100/0), as the GitOps operator does: server-side, forced."""
        body = json.loads(json.dumps(self.main_vs))
        body["metadata"]["namespace"] = self.namespace
        resource, namespace = self.admin.locate(self.ref)
        self.admin.request(
            "apply",
            "PATCH",
            resource.path(namespace, self.ref.name),
            target=resource.target(namespace, self.ref.name),
            body=body,
            content_type=APPLY_PATCH,
            query={"fieldManager": manager, "force": "true"},
        )

    def patch_weights(self, stable: int, candidate: int, manager: str) -> None:
        """Set both weights with a JSON patch, as ``kubectl patch --type=json`` would."""
        resource, namespace = self.admin.locate(self.ref)
        self.admin.request(
            "patch",
            "PATCH",
            resource.path(namespace, self.ref.name),
            target=resource.target(namespace, self.ref.name),
            body=[
                {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": stable},
                {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": candidate},
            ],
            content_type=JSON_PATCH,
            query={"fieldManager": manager},
        )

    def weights(self) -> dict[str, int] | None:
        obj = self.admin.get(self.ref)
        if obj is None:
            return None
        routes = obj["spec"]["http"][0]["route"]
        return {STABLE: int(routes[0].get("weight", 0)), CANDIDATE: int(routes[1].get("weight", 0))}

    def weight_of(self, version: str) -> int:
        return (self.weights() or {}).get(version, 0)

    def tick(self, advance: float = INTERVAL) -> TickReport:
        self.clock.advance(advance)
        return self.loop.tick()

    def state(self) -> ExperimentState:
        store = GitEnvStore.open(self.remote, self.tmp / "reader.git", author=AUTHOR)
        tip = store.fetch().state
        assert tip is not None
        raw = store.read_file(tip, live_path(self.namespace, "productpage-canary"))
        assert raw is not None, "the experiment is not live"
        return from_json(raw)


@pytest.fixture
def world(tmp_path: Path, admin: Kube, kube_server: KubeServer, namespace: str) -> Iterator[Loop]:
    kube = kube_server.connect()
    try:
        yield Loop(tmp_path, admin, kube, namespace)
    finally:
        kube.close()


def recorded(report: TickReport) -> list[tuple[Phase, int, str]]:
    return [(t.state.phase, t.state.iteration, t.summary) for t, _ in report.recorded]


def test_a_cluster_wiped_under_a_running_process_gets_the_recorded_weights_in_its_next_tick(
    world: Loop,
) -> None:
    for _ in range(3):
        world.tick()
    before = world.state()
    assert before.weights == ((STABLE, 40), (CANDIDATE, 60)), before.reason
    assert world.weights() == dict(before.weights)

    delete(world.admin, world.ref)  # the cluster is gone: nothing to read, nothing judged
    report = world.tick()
    assert report.recorded == []
    assert any("does not exist" in e for e in report.errors), report.errors
    assert world.weights() is None
    assert world.tick().recorded == []  # and still nothing while it is gone

    world.sync()  # the GitOps operator re-creates it from main: 100/0
    assert world.weights() == {STABLE: 100, CANDIDATE: 0}
    report = world.tick()
    # back within this one tick of the same process, and the iteration due is not judged
    assert world.weights() == dict(before.weights)
    ((transition, _),) = report.recorded
    assert transition.state.iteration == before.iteration
    assert transition.state.history == before.history
    skip = transition.state.skipped[-1]
    assert (skip.iteration, dict(skip.seen)) == (before.iteration + 1, {STABLE: 100, CANDIDATE: 0})
    assert "argocd-controller" in skip.reason
    assert [key for key, _ in report.corrections] == [f"{world.namespace}/productpage-canary"]

    assert world.tick(advance=INTERVAL / 2).recorded == []  # the interval starts again
    report = world.tick()
    ((transition, _),) = report.recorded
    assert transition.state.iteration == before.iteration + 1
    # the iteration was judged on the split the cluster carried: the recorded one
    assert dict(transition.state.history[-1].weights) == dict(before.weights)


def test_a_person_patching_the_weights_is_corrected_in_the_next_tick_and_named(
    world: Loop,
) -> None:
    world.tick()
    world.tick()
    recorded_weights = dict(world.state().weights)
    world.patch_weights(100, 0, manager="kubectl-patch")

    with capture_logs() as logs:
        report = world.tick()

    assert world.weights() == recorded_weights
    ((key, what),) = report.corrections
    assert key == f"{world.namespace}/productpage-canary"
    assert "route[1].weight is 0" in what
    assert "kubectl-patch" in what
    corrected = [e for e in logs if e["event"] == "weights_corrected"]
    assert len(corrected) == 1
    assert corrected[0]["writers"] == ["kubectl-patch"]
    state = world.state()
    assert "kubectl-patch" in state.skipped[-1].reason
    assert state.corrections == 1


def test_a_writer_that_keeps_putting_back_gits_weights_holds_the_experiment_until_it_stops(
    world: Loop,
) -> None:
    world.tick()
    world.tick()
    iteration = world.state().iteration
    summaries = []
    for _ in range(engine.HOLD_AFTER):
        world.sync(manager="kustomize-controller")  # Flux, without the ssa annotation
        summaries += [s for _, _, s in recorded(world.tick())]
    assert summaries[-1] == "productpage: held: kustomize-controller keeps setting other weights"
    assert all("weights set again" in s for s in summaries[:-1])
    held = world.state()
    assert held.held is not None
    assert "VirtualService" in held.held
    assert ".spec.http[0].route[1].weight is 0" in held.held
    assert "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent" in held.held
    # held: it stops fighting (the writer's weights stay) and judges nothing
    assert world.weights() == {STABLE: 100, CANDIDATE: 0}
    assert world.tick(advance=INTERVAL / 4).recorded == []
    assert world.weights() == {STABLE: 100, CANDIDATE: 0}

    # While the writer goes on, probes set the recorded weights at growing pauses; each
    # is undone, and nothing is recorded.
    probes = 0
    for _ in range(12):
        world.sync(manager="kustomize-controller")
        report = world.tick(advance=INTERVAL / 2)
        assert report.recorded == []
        probes += len(report.corrections)
    assert 1 <= probes <= 3, probes  # pauses of 1, 2, 4 s over 6 s

    # The writer stops (the annotation was added in Git): the next probe sticks, and once
    # the weights stayed for a full interval the experiment carries on where it was.
    phases: list[tuple[Phase, int, str]] = []
    for _ in range(20):
        phases += recorded(world.tick())
        if phases and phases[-1][0] is not Phase.PROGRESSING:
            break
    resumed = [p for p in phases if "resumed" in p[2]]
    assert len(resumed) == 1, phases
    assert resumed[0][1] == iteration
    assert [p for p, _, _ in phases][-2:] == [Phase.PROMOTING, Phase.PROMOTED], phases


def test_a_state_never_says_applied_for_weights_an_unreachable_api_server_never_got(
    world: Loop, tmp_path: Path
) -> None:
    kubeconfig = plain_kubeconfig(tmp_path / "unreachable")
    down = connect(KubeSettings(kubeconfig=str(kubeconfig), retry=RetryPolicy(attempts=1)))
    try:
        world.restart(KubeCluster(down))
        report = world.tick()
    finally:
        down.close()
    ((transition, _),) = report.recorded
    assert transition.summary.startswith("productpage: started Canary Progressive")
    assert any("setting weights failed" in e for e in report.errors)
    started = world.state()
    assert (started.weights, started.applied, started.applied_at) == (
        ((STABLE, 80), (CANDIDATE, 20)),
        False,
        None,
    )
    assert world.weights() == {STABLE: 100, CANDIDATE: 0}

    # The API server is reachable again (a new process): the weights are set, and only
    # then confirmed; the first iteration waits a full interval from then.
    world.restart(KubeCluster(world.admin))
    report = world.tick()
    assert world.weights() == {STABLE: 80, CANDIDATE: 20}
    ((transition, _),) = report.recorded
    state = transition.state
    assert (state.iteration, state.applied, state.applied_at) == (0, True, world.clock.now)
    assert "not confirmed on the cluster" in state.skipped[-1].reason
    assert report.corrections == []  # our own write, late: not someone else's change
    report = world.tick()
    ((transition, _),) = report.recorded
    assert transition.state.iteration == 1
    assert dict(transition.state.history[-1].weights) == {STABLE: 80, CANDIDATE: 20}


def _role(namespace: str, verbs: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "weights", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["networking.istio.io"],
                "resources": ["virtualservices"],
                "verbs": verbs,
            }
        ],
    }


def _binding(namespace: str, account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"weights-{account}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "weights"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def _patch_allowed(admin: Kube, user: str, namespace: str) -> bool:
    """Whether the API server's authorizer, which learns a Role's change from a watch,
    lets ``user`` patch VirtualServices (a SubjectAccessReview asks that same authorizer)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "patch",
                "group": "networking.istio.io",
                "resource": "virtualservices",
            },
        },
    }
    target = Target("subjectaccessreviews.authorization.k8s.io")
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    answer = admin.request("create", "POST", path, target=target, body=review)
    return answer["status"].get("allowed", False) is True


def test_a_refused_correction_is_retried_every_tick_until_it_is_allowed(
    world: Loop, kube_server: KubeServer
) -> None:
    namespace = world.namespace
    user = f"system:serviceaccount:{namespace}:reconciler"
    apply(world.admin, _role(namespace, ["get", "list", "patch"]))
    apply(world.admin, _binding(namespace, "reconciler"))
    kube = kube_server.connect(impersonate=user)
    try:
        world.restart(KubeCluster(kube))
        world.tick()
        world.tick()
        recorded_weights = dict(world.state().weights)
        apply(world.admin, _role(namespace, ["get", "list"]))  # patch taken away
        wait_until(lambda: not _patch_allowed(world.admin, user, namespace), "patch to be denied")
        world.patch_weights(100, 0, manager="kubectl-patch")
        for _ in range(2):
            report = world.tick()
            assert any("forbidden" in e.lower() for e in report.errors), report.errors
            assert world.weights() == {STABLE: 100, CANDIDATE: 0}
        apply(world.admin, _role(namespace, ["get", "list", "patch"]))
        wait_until(lambda: _patch_allowed(world.admin, user, namespace), "patch to be allowed")
        report = world.tick()
        assert world.weights() == recorded_weights
        assert not report.errors
    finally:
        kube.close()


def _vs(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "http": [
                {
                    "route": [
                        {"destination": {"host": "v1"}, "weight": 70},
                        {"destination": {"host": "v2"}, "weight": 30},
                    ]
                }
            ]
        },
    }


def test_weights_are_read_with_one_list_per_namespace_or_one_get_each_where_list_is_denied(
    admin: Kube, kube_server: KubeServer, namespace: str
) -> None:
    for name in ("a", "b", "c"):
        apply(admin, _vs(name, namespace))
    refs = [
        WeightObjRef(
            "networking.istio.io/v1",
            "VirtualService",
            name,
            f".spec.http[0].route[{i}].weight",
            namespace,
        )
        for name in ("a", "b", "c", "gone")
        for i in (0, 1)
    ]
    cluster = KubeCluster(admin)
    sent = admin.requests_sent
    readings = cluster.read_weights(refs)
    assert (admin.requests_sent - sent, cluster.reads) == (1, 1)
    assert [readings[r].value for r in refs[:6]] == [70, 30] * 3
    assert readings[refs[6]] == WeightReading(None, exists=False)
    assert readings[refs[0]].writers[0].startswith("tests (Apply, ")  # the field manager

    user = f"system:serviceaccount:{namespace}:reader"
    apply(admin, _role(namespace, ["get"]))
    apply(admin, _binding(namespace, "reader"))
    kube = kube_server.connect(impersonate=user)
    try:
        limited = KubeCluster(kube)
        with capture_logs() as logs:
            first = limited.read_weights(refs)
            second = limited.read_weights(refs)
    finally:
        kube.close()
    assert first == second
    assert [first[r].value for r in refs] == [readings[r].value for r in refs]
    # the denied LIST once, then one GET per object (4) in each of the two reads
    assert limited.reads == 1 + 4 + 4
    denied = [e for e in logs if e["event"] == "weights_list_denied"]
    assert len(denied) == 1
    assert "grant 'list' on VirtualService" in denied[0]["fix"]


def _cli(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_shows_recorded_and_observed_weights_and_history_the_skipped_iteration(
    world: Loop, kube_server: KubeServer
) -> None:
    world.tick()
    world.tick()
    (row,) = _cli("status", "--repo", world.remote)  # Git alone: what is recorded
    assert (row["weights"], row["applied"], row["observed"]) == (
        {STABLE: 60, CANDIDATE: 40},
        False,  # recorded, then set: confirmed by the next commit that reads it back
        None,
    )
    kubeconfig = str(kube_server.kubeconfig)
    (row,) = _cli("status", "--repo", world.remote, "--kubeconfig", kubeconfig)
    assert row["observed"] == {"status": "converged", "weights": row["weights"], "detail": None}

    world.patch_weights(90, 10, manager="kubectl-edit")
    (row,) = _cli("status", "--repo", world.remote, "--kubeconfig", kubeconfig)
    assert row["observed"]["status"] == "drifted"
    assert row["observed"]["weights"] == {STABLE: 90, CANDIDATE: 10}
    assert "kubectl-edit" in row["observed"]["detail"]

    world.tick()
    (row,) = _cli("status", "--repo", world.remote, "--kubeconfig", kubeconfig)
    assert row["observed"]["status"] == "converged"
    assert (row["applied"], row["applied_at"] is not None) == (True, True)
    rows = _cli("history", f"{world.namespace}/productpage-canary", "--repo", world.remote)
    skipped = [r for r in rows if r["skipped"] is not None]
    assert [(r["skipped"], r["observed"], r["verdicts"]) for r in skipped] == [
        (2, {STABLE: 90, CANDIDATE: 10}, {})
    ]
