"""The allowed namespaces as ``reconciler run`` finds them, against the real API server."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.cluster.client import Kube
from reconciler.cluster.errors import ClusterError, ForbiddenError
from reconciler.cluster.handoff import ArgoCDApp, FluxSync
from reconciler.cluster.resources import ObjectRef
from reconciler.cluster.scope import DestinationPolicy, weight_policy
from reconciler.spec.weightpolicy import NAMESPACES_SETTING, WeightPolicy
from tests.fixtures.kube import KubeServer, apply, delete, ensure_namespace, wait_until

pytestmark = pytest.mark.integration


class Clock:
    """Time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _application(app: ArgoCDApp, destination: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": app.name, "namespace": app.namespace},
        "spec": {"project": "default", "destination": destination},
    }


def test_the_applications_destination_is_followed_and_read_again_after_the_refresh(
    admin: Kube, namespace: str
) -> None:
    ensure_namespace(admin, "argocd")
    app = ArgoCDApp(f"scope-{namespace}", "argocd")
    apply(admin, _application(app, {"namespace": namespace}))
    clock = Clock()
    policy = DestinationPolicy(admin, app, refresh=60, clock=clock)
    assert policy().namespaces == {namespace}
    assert f"Argo CD Application argocd/{app.name}" in policy().namespaces_from

    apply(admin, _application(app, {"namespace": f"{namespace}-moved"}))
    sent = admin.requests_sent
    assert policy().namespaces == {namespace}  # within the refresh: not asked again
    assert admin.requests_sent == sent
    clock.now = 61
    assert policy().namespaces == {f"{namespace}-moved"}

    # no destination namespace: the reconciler's own namespace only (fails closed)
    apply(admin, _application(app, {"server": "https://kubernetes.default.svc"}))
    clock.now = 200
    found = policy()
    assert found.namespaces == {admin.namespace}
    assert "names no namespace" in found.namespaces_from
    delete(admin, app.application)
    clock.now = 300
    assert "does not exist" in policy().namespaces_from


def test_an_unreadable_destination_keeps_the_last_one_and_fails_when_none_was_read(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    ensure_namespace(admin, "flux-system")
    sync = FluxSync("env", f"scope-{namespace}", "flux-system")
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
                "sourceRef": {"kind": "GitRepository", "name": "env"},
            },
        },
    )
    clock = Clock()
    user = f"scope-reader-{namespace}"
    grant = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": user, "namespace": "flux-system"},
            "rules": [
                {
                    "apiGroups": ["kustomize.toolkit.fluxcd.io"],
                    "resources": ["kustomizations"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": user, "namespace": "flux-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"kind": "User", "name": user}],
        },
    ]
    kube = kube_server.connect(impersonate=user)
    try:
        with pytest.raises(ClusterError, match="RBAC denies get"):
            DestinationPolicy(kube, sync, clock=clock)()  # never read: nothing to go on
        for obj in grant:
            apply(admin, obj)
        wait_until(lambda: _can_read(kube, sync), "the RoleBinding to take effect")
        policy = DestinationPolicy(kube, sync, clock=clock)
        assert policy().namespaces == {namespace}
        delete(admin, ObjectRef("rbac.authorization.k8s.io/v1", "RoleBinding", user, "flux-system"))
        wait_until(lambda: not _can_read(kube, sync), "the RoleBinding to be gone")
        clock.now = 120
        assert policy().namespaces == {namespace}  # the last one read, not none
    finally:
        kube.close()


def _can_read(kube: Kube, sync: FluxSync) -> bool:
    try:
        kube.get(sync.applier)
    except ForbiddenError:
        return False
    return True


def test_the_setting_wins_and_nothing_configured_means_the_reconcilers_own_namespace(
    admin: Kube,
) -> None:
    configured = weight_policy(
        admin, namespaces=("shop", "bookinfo"), rules=(), target=ArgoCDApp("env")
    )
    assert isinstance(configured, WeightPolicy)
    assert configured.namespaces == {"shop", "bookinfo"}
    assert configured.namespaces_from == NAMESPACES_SETTING
    alone = weight_policy(admin, namespaces=(), rules=("v1/ConfigMap:.data.w",), target=None)
    assert isinstance(alone, WeightPolicy)
    assert alone.namespaces == {admin.namespace}
    assert "reconciler's own namespace" in alone.namespaces_from
    assert [str(r) for r in alone.extra_rules] == ["v1/ConfigMap:.data.w"]
