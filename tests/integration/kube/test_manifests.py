"""manifests/: each overlay renders, and the API server accepts every object (dry run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster import drift
from reconciler.cluster.client import FIELD_MANAGER, Kube
from reconciler.cluster.handoff import ArgoCDApp, FluxSync, HandoffTarget
from reconciler.cluster.scope import destination_namespace
from reconciler.config import Settings, build
from tests.fixtures.kube import apply, ensure_namespace
from tests.integration.kube.manifests import render

pytestmark = pytest.mark.integration

NAMESPACES = {
    "base": "gitops-reconciler",
    "argocd": "argocd",
    "flux": "flux-system",
    "cluster-wide": "gitops-reconciler",
    "fleet": "gitops-reconciler",
}
LAYOUTS = list(NAMESPACES)
ONE_REPO_LAYOUTS = [layout for layout in LAYOUTS if layout != "fleet"]
"""Layouts whose config file names one Env repo at its top level (the fleet lists them)."""
TRAFFIC_BINDING = ("gitops-reconciler/binding", "traffic-namespace")
EXAMPLE_APP_NAMESPACE = "bookinfo"
"""The namespace ../core/traffic-namespaces.yaml binds, and the examples deploy into."""
EXPECTED_TRAFFIC_RULES = {
    ("networking.istio.io", "virtualservices"): {"get", "list", "patch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "patch"},
    ("gateway.networking.k8s.io", "grpcroutes"): {"get", "list", "patch"},
    ("serving.knative.dev", "services"): {"get", "list", "patch"},
    ("split.smi-spec.io", "trafficsplits"): {"get", "list", "patch"},
    ("networking.k8s.io", "ingresses"): {"get", "list", "patch"},
    ("apps", "deployments"): {"get"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("", "events"): {"create"},
}
OVERLAY_RULES = {
    "base": {},
    "cluster-wide": {},
    "argocd": {("argoproj.io", "applications"): {"get", "patch"}},
    "flux": {
        ("source.toolkit.fluxcd.io", "gitrepositories"): {"get", "patch"},
        ("kustomize.toolkit.fluxcd.io", "kustomizations"): {"get", "patch"},
    },
    "fleet": {
        # discovery: annotated Applications and GitRepositories anywhere, Secrets by name
        ("argoproj.io", "applications"): {"get", "list", "watch"},
        ("source.toolkit.fluxcd.io", "gitrepositories"): {"get", "list", "watch"},
        ("", "secrets"): {"get"},
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


def _traffic_bindings(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key, value = TRAFFIC_BINDING
    return [o for o in objects if (o["metadata"].get("labels") or {}).get(key) == value]


@pytest.mark.parametrize("overlay", LAYOUTS)
def test_overlay_renders_and_every_object_is_accepted_by_the_api_server(
    admin: Kube, overlay: str
) -> None:
    objects = render(overlay)
    ensure_namespace(admin, NAMESPACES[overlay])
    ensure_namespace(admin, EXAMPLE_APP_NAMESPACE)
    per_namespace = _traffic_bindings(objects)
    for obj in objects:
        expected = EXAMPLE_APP_NAMESPACE if obj in per_namespace else NAMESPACES[overlay]
        assert obj["metadata"].get("namespace", expected) == expected
        apply(admin, obj, dry_run=True)


@pytest.mark.parametrize("overlay", LAYOUTS)
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


@pytest.mark.parametrize("overlay", LAYOUTS)
def test_traffic_is_bound_per_namespace_unless_the_cluster_wide_layout_is_chosen(
    overlay: str,
) -> None:
    objects = render(overlay)
    traffic = [
        o
        for o in objects
        if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        and o["roleRef"]["name"] == "gitops-reconciler-traffic"
    ]
    if overlay == "cluster-wide":
        assert [o["kind"] for o in traffic] == ["ClusterRoleBinding"]
    else:
        assert [(o["kind"], o["metadata"]["namespace"]) for o in traffic] == [
            ("RoleBinding", EXAMPLE_APP_NAMESPACE)
        ]
        assert traffic == _traffic_bindings(objects)
    assert all(o["roleRef"]["kind"] == "ClusterRole" for o in traffic)


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


def _weight_namespaces_as_deployed(objects: list[dict[str, Any]], settings: Settings) -> set[str]:
    """The namespaces ``reconciler run`` would allow with these settings and example objects."""
    if settings.kubernetes.weight_namespaces:
        return set(settings.kubernetes.weight_namespaces)
    app = next(o for o in objects if o["kind"] in {"Application", "Kustomization"})
    target: HandoffTarget = (
        ArgoCDApp(app["metadata"]["name"], app["metadata"]["namespace"])
        if app["kind"] == "Application"
        else FluxSync("env", app["metadata"]["name"], app["metadata"]["namespace"])
    )
    found = destination_namespace(target, app)
    assert found is not None
    return {found}


@pytest.mark.parametrize("overlay", ONE_REPO_LAYOUTS)
def test_the_configmap_is_a_config_file_that_reconciler_run_accepts(
    overlay: str, tmp_path: Path
) -> None:
    objects = render(overlay)
    config_map = _one(objects, "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    container = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = build(flags={}, environ={"RECONCILER_NAMESPACE": "argocd", **environ}, file=path)
    # the namespaces the reconciler allows are those where RBAC binds its traffic Role
    allowed = _weight_namespaces_as_deployed(objects, settings)
    if overlay == "cluster-wide":
        assert allowed == {"*"}
    else:
        assert allowed == {o["metadata"]["namespace"] for o in _traffic_bindings(objects)}
    assert settings.leader_election.enabled
    assert (
        settings.leader_election.lease_duration,
        settings.leader_election.renew_deadline,
        settings.leader_election.retry_period,
    ) == (15, 10, 2)
    assert settings.credentials.token_file == Path("/etc/reconciler/git/token")
    if overlay == "argocd":
        assert settings.gitops.argocd_application == "argocd/env"
    if overlay == "flux":
        assert settings.gitops.flux_kustomization == "flux-system/env"


def test_fleet_runs_three_replicas_under_a_budget_and_reads_secrets_only_by_name() -> None:
    objects = render("fleet")
    assert _one(objects, "Deployment")["spec"]["replicas"] == 3
    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 2
    pod_labels = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    secret_rules = [
        (obj["kind"], obj["metadata"].get("namespace"), rule["verbs"])
        for obj in objects
        if obj["kind"] in {"Role", "ClusterRole"}
        for rule in obj["rules"]
        if "secrets" in rule["resources"]
    ]
    assert secret_rules == [("Role", "gitops-reconciler", ["get"])]


def test_fleet_configmap_lists_env_repos_and_enables_discovery_and_leader_election(
    tmp_path: Path,
) -> None:
    objects = render("fleet")
    path = tmp_path / "config.yaml"
    path.write_text(_one(objects, "ConfigMap")["data"]["config.yaml"])
    container = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = build(flags={}, environ={"RECONCILER_NAMESPACE": "x", **environ}, file=path)
    assert [(r.repo.url, r.repo.main_branch) for r in settings.served()] == [
        ("https://github.com/example/env.git", "main"),
        ("ssh://git@github.com/example/platform-env.git", "main"),
    ]
    https, ssh = settings.served()
    assert https.credentials.token_file == Path("/etc/reconciler/git/token")
    assert ssh.credentials.ssh_key_file == Path("/etc/reconciler/git/ssh-privatekey")
    assert ssh.credentials.known_hosts_file == Path("/etc/reconciler/git/known_hosts")
    assert settings.fleet.discovery
    assert settings.leader_election.enabled
    assert set(settings.kubernetes.weight_namespaces) == {
        o["metadata"]["namespace"] for o in _traffic_bindings(objects)
    }
