"""manifests/: each overlay renders, and the API server accepts every object (dry run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster import drift
from reconciler.cluster.client import FIELD_MANAGER, Kube
from reconciler.config import build
from tests.fixtures.kube import apply, ensure_namespace
from tests.integration.kube.manifests import render

pytestmark = pytest.mark.integration

NAMESPACES = {"base": "gitops-reconciler", "argocd": "argocd", "flux": "flux-system"}
EXPECTED_TRAFFIC_RULES = {
    ("networking.istio.io", "virtualservices"): {"get", "list", "patch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "patch"},
    ("serving.knative.dev", "services"): {"get", "list", "patch"},
    ("split.smi-spec.io", "trafficsplits"): {"get", "list", "patch"},
    ("networking.k8s.io", "ingresses"): {"get", "list", "patch"},
    ("apps", "deployments"): {"get"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("", "events"): {"create"},
}
OVERLAY_RULES = {
    "base": {},
    "argocd": {("argoproj.io", "applications"): {"get", "patch"}},
    "flux": {
        ("source.toolkit.fluxcd.io", "gitrepositories"): {"get", "patch"},
        ("kustomize.toolkit.fluxcd.io", "kustomizations"): {"get", "patch"},
    },
}


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _rules(objects: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for obj in objects:
        if obj["kind"] in {"Role", "ClusterRole"}:
            for rule in obj["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.mark.parametrize("overlay", ["base", "argocd", "flux"])
def test_overlay_renders_and_every_object_is_accepted_by_the_api_server(
    admin: Kube, overlay: str
) -> None:
    objects = render(overlay)
    ensure_namespace(admin, NAMESPACES[overlay])
    for obj in objects:
        assert obj["metadata"].get("namespace", NAMESPACES[overlay]) == NAMESPACES[overlay]
        apply(admin, obj, dry_run=True)


@pytest.mark.parametrize("overlay", ["base", "argocd", "flux"])
def test_rbac_grants_exactly_the_verbs_the_reconciler_uses(overlay: str) -> None:
    objects = render(overlay)
    assert _rules(objects) == {**EXPECTED_TRAFFIC_RULES, **OVERLAY_RULES[overlay]}
    for binding in (o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "gitops-reconciler",
                "namespace": NAMESPACES[overlay],
            }
        ]


def test_deployment_is_locked_down_probed_and_runs_the_reconciler() -> None:
    deployment = _one(render("argocd"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/example/gitops-reconciler:latest"
    assert container["args"] == ["run", "--config", "/etc/reconciler/config/config.yaml"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(container["resources"]) == {"requests", "limits"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/reconciler/config", "/etc/reconciler/git", "/tmp"} <= mounts  # noqa: S108
    assert pod["serviceAccountName"] == "gitops-reconciler"


def test_example_application_leaves_every_weighted_kind_to_the_reconciler() -> None:
    app = _one(render("argocd"), "Application")
    managed = [
        drift.Managed(kind.group, kind.kind, "bookinfo", "x", path)
        for kind in drift.WEIGHTED_KINDS
        for path in kind.paths
    ]
    assert drift.argocd_findings(app, managed, FIELD_MANAGER) == []


def test_example_flux_kustomization_annotates_every_weighted_kind() -> None:
    kustomization = next(o for o in render("flux") if o["kind"] == "Kustomization")
    targets = {
        (p["target"]["group"], p["target"]["kind"]) for p in kustomization["spec"]["patches"]
    }
    assert targets == {(k.group, k.kind) for k in drift.WEIGHTED_KINDS}
    for patch in kustomization["spec"]["patches"]:
        assert "kustomize.toolkit.fluxcd.io~1ssa" in patch["patch"]
        assert "IfNotPresent" in patch["patch"]


@pytest.mark.parametrize("overlay", ["base", "argocd", "flux"])
def test_the_configmap_is_a_config_file_that_reconciler_run_accepts(
    overlay: str, tmp_path: Path
) -> None:
    config_map = _one(render(overlay), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    settings = build(flags={}, environ={"RECONCILER_NAMESPACE": "argocd"}, file=path)
    assert settings.leader_election
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (15, 10, 2)
    assert settings.token_file == Path("/etc/reconciler/git/token")
    if overlay == "argocd":
        assert settings.argocd_application == "argocd/env"
    if overlay == "flux":
        assert settings.flux_kustomization == "flux-system/env"
