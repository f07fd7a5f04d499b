"""RBAC for real: manifests/' Roles applied, every operation done as its ServiceAccount.

Both layouts: by default the traffic ClusterRole is bound per namespace (the API server
forbids a weight anywhere else, and the reconciler's own policy refuses it before asking);
the cluster-wide layout (manifests/cluster-wide) allows every namespace.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from reconciler.cluster.client import JSON_PATCH, Kube
from reconciler.cluster.errors import ForbiddenError, WeightPolicyError
from reconciler.cluster.events import KubeEvents
from reconciler.cluster.handoff import ArgoCDApp, FluxSync, GitOpsHandoff
from reconciler.cluster.kube import KubeCluster
from reconciler.cluster.lease import MEMBER_ANNOTATION, LeaseSettings, RepoLeases
from reconciler.cluster.patches import weight_field
from reconciler.cluster.resources import ObjectRef
from reconciler.cluster.scope import weight_policy
from reconciler.spec.model import WeightObjRef
from reconciler.spec.weightpolicy import NAMESPACES_SETTING, WeightPolicy, policy_from_settings
from tests.fixtures.kube import (
    KubeServer,
    apply,
    delete,
    deployment,
    ensure_namespace,
    write_status,
)
from tests.integration.kube.manifests import RBAC_KINDS, render

pytestmark = pytest.mark.integration

COMMIT = "9e1f00c3d2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7"


def _install_rbac(
    admin: Kube, overlay: str, namespace: str, app_namespaces: tuple[str, ...] = ()
) -> str:
    """Apply the overlay's RBAC; the per-namespace traffic RoleBinding in ``app_namespaces``.

    As a user lists their namespaces in manifests/core/traffic-namespaces.yaml: one copy of
    its RoleBinding per namespace (the example's ``bookinfo`` is not one of the tests').
    """
    ensure_namespace(admin, namespace)
    for obj in render(overlay):
        if obj["kind"] not in RBAC_KINDS:
            continue
        labels = obj["metadata"].get("labels") or {}
        if labels.get("gitops-reconciler/binding") == "traffic-namespace":
            for app in app_namespaces:
                apply(admin, {**obj, "metadata": {**obj["metadata"], "namespace": app}})
            continue
        apply(admin, obj)
    return f"system:serviceaccount:{namespace}:gitops-reconciler"


def _other_namespace(admin: Kube, namespace: str) -> str:
    other = f"{namespace}-unlisted"
    ensure_namespace(admin, other)
    return other


def _traffic_objects(admin: Kube, app: str) -> list[tuple[WeightObjRef, int]]:
    """One object of each weighted kind in ``app``; the weights to set on them."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": app},
            "spec": {
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "a"}, "weight": 100},
                            {"destination": {"host": "b"}, "weight": 0},
                        ]
                    }
                ]
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "route", "namespace": app},
            "spec": {
                "rules": [
                    {"backendRefs": [{"name": "a", "weight": 100}, {"name": "b", "weight": 0}]}
                ]
            },
        },
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "ksvc", "namespace": app},
            "spec": {
                "traffic": [
                    {"revisionName": "r1", "percent": 100},
                    {"revisionName": "r2", "percent": 0},
                ]
            },
        },
        {
            "apiVersion": "split.smi-spec.io/v1alpha4",
            "kind": "TrafficSplit",
            "metadata": {"name": "split", "namespace": app},
            "spec": {
                "service": "s",
                "backends": [{"service": "a", "weight": 100}, {"service": "b", "weight": 0}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "canary",
                "namespace": app,
                "annotations": {"nginx.ingress.kubernetes.io/canary": "true"},
            },
            "spec": {"defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}},
        },
    ]
    for obj in objects:
        apply(admin, obj)
    pairs = []
    for obj, (first, second) in zip(
        objects,
        [
            (".spec.http[0].route[0].weight", ".spec.http[0].route[1].weight"),
            (".spec.rules[0].backendRefs[0].weight", ".spec.rules[0].backendRefs[1].weight"),
            (".spec.traffic[0].percent", ".spec.traffic[1].percent"),
            (".spec.backends[0].weight", ".spec.backends[1].weight"),
            (".metadata.annotations.canary-weight", None),
        ],
        strict=True,
    ):
        name = obj["metadata"]["name"]
        pairs.append((WeightObjRef(obj["apiVersion"], obj["kind"], name, first, app), 80))
        if second:
            pairs.append((WeightObjRef(obj["apiVersion"], obj["kind"], name, second, app), 20))
    return pairs


def _refused_before_any_request(
    kube: Kube, cluster: KubeCluster, elsewhere: list[tuple[WeightObjRef, int]], allowed: str
) -> None:
    """A weight outside the allowed namespaces: refused, named, and nothing is sent."""
    before = kube.requests_sent
    with pytest.raises(WeightPolicyError) as refused:
        cluster.set_weights(elsewhere)
    assert kube.requests_sent == before
    ref = elsewhere[0][0]
    message = str(refused.value)
    assert f"{ref.kind} {ref.namespace}/{ref.name}" in message
    assert ref.field_path in message
    assert NAMESPACES_SETTING in message
    assert f"allowed: {allowed}" in message
    readings = cluster.read_weights([r for r, _ in elsewhere])
    assert kube.requests_sent == before
    assert all(NAMESPACES_SETTING in (r.error or "") for r in readings.values())


def _weights_are_listed(cluster: KubeCluster, weights: list[tuple[WeightObjRef, int]]) -> None:
    """Every tick's read: one LIST per kind and namespace, allowed by the ClusterRole."""
    readings = cluster.read_weights([ref for ref, _ in weights])
    assert [readings[ref].value for ref, _ in weights] == [w for _, w in weights]
    assert not [r.error for r in readings.values() if r.error]
    assert cluster.reads == len({(ref.api_version, ref.kind) for ref, _ in weights})


def _events_work(kube: Kube, admin: Kube, ref: WeightObjRef) -> None:
    about = ObjectRef(ref.api_version, ref.kind, ref.name, ref.namespace)
    events = KubeEvents(kube)
    events.record(about, "RolloutProgressing", "productpage: iteration 1/6, candidate at 20%")
    assert events.enabled
    resource = admin.resource("v1", "Event")
    listed = admin.request(
        "list", "GET", resource.path(ref.namespace), target=resource.target(ref.namespace)
    )
    assert any(
        e["reason"] == "RolloutProgressing" and e["involvedObject"]["name"] == ref.name
        for e in listed["items"]
    )


def _leases_work(kube: Kube, namespace: str) -> None:
    settings = LeaseSettings(
        lease_duration=2, renew_deadline=1.5, retry_period=0.1, namespace=namespace
    )
    repos = ("https://git.example/rbac/env.git", "https://git.example/rbac/other.git")
    leases = RepoLeases(kube, repos, "rbac-check", settings)
    # create (one Lease per tick) and the shared heartbeat Lease; then get + update
    assert len(leases.tick()) == 1
    assert leases.tick() == set(repos)
    assert leases.tick() == set(repos)
    members = kube.get(leases.members_ref())
    assert members is not None
    assert any(key.startswith(MEMBER_ANNOTATION) for key in members["metadata"]["annotations"])
    leases.release()  # update (the repos' Leases, and the heartbeat taken off)


def test_every_operation_of_the_reconciler_is_allowed_to_its_service_account_argocd(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    user = _install_rbac(admin, "argocd", "argocd", (namespace,))
    weights = _traffic_objects(admin, namespace)
    elsewhere = _traffic_objects(admin, _other_namespace(admin, namespace))
    apply(admin, deployment("v2", namespace))
    write_status(
        admin,
        ObjectRef("apps/v1", "Deployment", "v2", namespace),
        {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        },
    )
    app = ArgoCDApp(f"env-{namespace}", "argocd")
    apply(
        admin,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": app.name, "namespace": "argocd"},
            "spec": {"project": "default", "destination": {"namespace": namespace}},
            "status": {"sync": {"status": "Synced", "revision": COMMIT}},
        },
    )

    kube = kube_server.connect(impersonate=user, namespace="argocd")
    try:
        # as `reconciler run` wires it: the namespaces are the Application's destination
        policy = weight_policy(kube, namespaces=(), rules=(), target=app)
        cluster = KubeCluster(kube, policy=policy)
        cluster.set_weights(weights)
        _refused_before_any_request(kube, cluster, elsewhere, namespace)
        assert [cluster.get_weight(ref) for ref, _ in weights] == [w for _, w in weights]
        _weights_are_listed(cluster, weights)
        _events_work(kube, admin, weights[0][0])
        assert cluster.is_ready(ObjectRef("apps/v1", "Deployment", "v2", namespace)).ready
        assert not cluster.is_ready(
            ObjectRef("serving.knative.dev/v1", "Service", "ksvc", namespace)
        ).ready
        GitOpsHandoff(kube).hand_off(app, COMMIT, timeout=5)
        _leases_work(kube, "argocd")
    finally:
        kube.close()


def test_every_operation_of_the_reconciler_is_allowed_to_its_service_account_flux(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    user = _install_rbac(admin, "flux", "flux-system", (namespace,))
    weights = _traffic_objects(admin, namespace)
    elsewhere = _traffic_objects(admin, _other_namespace(admin, namespace))
    sync = FluxSync(f"env-{namespace}", f"apps-{namespace}", "flux-system")
    apply(
        admin,
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": sync.git_repository, "namespace": "flux-system"},
            "spec": {"url": "https://git.example/env.git", "interval": "1m"},
        },
    )
    apply(
        admin,
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": sync.kustomization, "namespace": "flux-system"},
            "spec": {
                "interval": "1m",
                "prune": True,
                "targetNamespace": namespace,
                "sourceRef": {"kind": "GitRepository", "name": sync.git_repository},
            },
        },
    )
    write_status(admin, sync.applier, {"lastAppliedRevision": f"main@sha1:{COMMIT}"})

    kube = kube_server.connect(impersonate=user, namespace="flux-system")
    try:
        cluster = KubeCluster(
            kube, policy=weight_policy(kube, namespaces=(), rules=(), target=sync)
        )
        cluster.set_weights(weights)
        _refused_before_any_request(kube, cluster, elsewhere, namespace)
        GitOpsHandoff(kube).hand_off(sync, COMMIT, timeout=5)
        _leases_work(kube, "flux-system")
    finally:
        kube.close()


def test_operations_outside_the_role_are_denied_once_and_named(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    user = _install_rbac(admin, "argocd", "argocd")
    apply(admin, deployment("v1", namespace))
    kube = kube_server.connect(impersonate=user)
    try:
        resource = kube.resource("apps/v1", "Deployment")
        before = kube.requests_sent
        with pytest.raises(ForbiddenError) as denied:
            kube.request(
                "delete",
                "DELETE",
                resource.path(namespace, "v1"),
                target=resource.target(namespace, "v1"),
            )
        assert kube.requests_sent == before + 1  # no retry
        message = str(denied.value)
        assert message.startswith(
            f'RBAC denies delete on deployments.apps "v1" in {namespace} to {user}'
        ), message
        assert denied.value.verb == "delete"
        assert denied.value.user == user

        kube.resource("v1", "Secret")  # discovery first: count only the denied request
        before = kube.requests_sent
        with pytest.raises(
            ForbiddenError,
            match=f'RBAC denies get on secrets "gitops-reconciler-git" in argocd to {user}',
        ):
            kube.get(ObjectRef("v1", "Secret", "gitops-reconciler-git", "argocd"))
        assert kube.requests_sent == before + 1

        # a weight on a kind outside the list: denied, named, not retried
        apply(
            admin,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "w", "namespace": namespace},
                "data": {"w": "1"},
            },
        )
        config_map = WeightObjRef("v1", "ConfigMap", "w", ".data.w", namespace)
        before = kube.requests_sent
        suggested = re.escape("add the rule '*/ConfigMap:.data.w'")  # core group, any version
        with pytest.raises(WeightPolicyError, match=suggested):
            KubeCluster(kube).set_weights([(config_map, 5)])  # not a weight field: not asked
        assert kube.requests_sent == before
        # allowed by the reconciler's configuration, the API server still says no
        cluster = KubeCluster(kube, policy=policy_from_settings(("*",), ("v1/ConfigMap:.data.w",)))
        with pytest.raises(ForbiddenError, match=f'get on configmaps "w" in {namespace}'):
            cluster.set_weights([(config_map, 5)])
        assert kube.requests_sent == before + 1
    finally:
        kube.close()


def test_events_turn_themselves_off_when_rbac_denies_them(
    kube_server: KubeServer, namespace: str
) -> None:
    kube = kube_server.connect(impersonate="system:serviceaccount:nowhere:nobody")
    try:
        events = KubeEvents(kube)
        about = ObjectRef("networking.istio.io/v1", "VirtualService", "vs", namespace)
        events.record(about, "RolloutProgressing", "iteration 1")
        assert events.enabled is False
        sent = kube.requests_sent
        events.record(about, "RolloutProgressing", "iteration 2")
        assert kube.requests_sent == sent  # not asked again
    finally:
        kube.close()


def _patch_directly(kube: Kube, ref: WeightObjRef, weight: int) -> None:
    """The JSON Patch the reconciler would send, sent without its own policy's check."""
    target = ObjectRef(ref.api_version, ref.kind, ref.name, ref.namespace)
    pointer = weight_field(ref).pointer
    kube.patch(
        target, [{"op": "replace", "path": pointer, "value": weight}], content_type=JSON_PATCH
    )


def test_default_layout_the_api_server_forbids_weights_outside_the_listed_namespaces(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    user = _install_rbac(admin, "argocd", "argocd", (namespace,))
    listed = _traffic_objects(admin, namespace)
    other = _other_namespace(admin, namespace)
    unlisted = _traffic_objects(admin, other)
    kube = kube_server.connect(impersonate=user, namespace="argocd")
    try:
        # The reconciler's own check opened to every namespace: RBAC alone decides here.
        cluster = KubeCluster(kube, policy=WeightPolicy())
        cluster.set_weights(listed)
        assert [cluster.get_weight(ref) for ref, _ in listed] == [w for _, w in listed]
        vs = unlisted[0][0]
        with pytest.raises(
            ForbiddenError, match=f'patch on virtualservices.networking.istio.io "vs" in {other}'
        ):
            _patch_directly(kube, vs, 30)
        with pytest.raises(ForbiddenError, match=f"in {other} to {user}"):
            cluster.set_weights(unlisted)
        readings = cluster.read_weights([ref for ref, _ in unlisted])
        assert all("RBAC denies" in (r.error or "") for r in readings.values())
    finally:
        kube.close()
    untouched = admin.get(ObjectRef(vs.api_version, vs.kind, vs.name, other))
    assert untouched is not None
    assert untouched["spec"]["http"][0]["route"][0]["weight"] == 100


def test_cluster_wide_layout_allows_weights_in_every_namespace(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    user = _install_rbac(admin, "cluster-wide", "gitops-reconciler")
    weights = _traffic_objects(admin, namespace)
    elsewhere = _traffic_objects(admin, _other_namespace(admin, namespace))
    binding = ObjectRef(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "gitops-reconciler-traffic"
    )
    kube = kube_server.connect(impersonate=user, namespace="gitops-reconciler")
    try:
        # the layout's RECONCILER_WEIGHT_NAMESPACES='*'
        cluster = KubeCluster(
            kube, policy=weight_policy(kube, namespaces=("*",), rules=(), target=None)
        )
        cluster.set_weights(weights)
        cluster.set_weights(elsewhere)
        _patch_directly(kube, elsewhere[0][0], 55)
        readings = cluster.read_weights([ref for ref, _ in weights + elsewhere])
        assert readings[elsewhere[0][0]].value == 55
        assert [readings[ref].value for ref, _ in weights] == [w for _, w in weights]
    finally:
        kube.close()
        delete(admin, binding)  # the binding is cluster-wide: no other test may inherit it
