"""``reconciler doctor`` against Applications and Kustomizations in a real API server."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli.doctor import doctor
from reconciler.cluster.client import Kube
from reconciler.cluster.resources import ObjectRef
from tests.fixtures.kube import KubeServer, apply, write_status

pytestmark = pytest.mark.integration

WEIGHT_JQ = ".spec.http[].route[].weight"


def _vs(namespace: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": "productpage",
            "namespace": namespace,
            "annotations": annotations or {},
        },
        "spec": {"http": [{"route": [{"destination": {"host": "productpage"}, "weight": 100}]}]},
    }


def _app(
    namespace: str, name: str, app_namespace: str, spec_extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/env.git", "path": "apps"},
            "destination": {"server": "https://kubernetes.default.svc"},
            **spec_extra,
        },
        "status": {
            "resources": [
                {
                    "group": "apps",
                    "version": "v1",
                    "kind": "Deployment",
                    "namespace": app_namespace,
                    "name": "productpage-v1",
                },
                {
                    "group": "networking.istio.io",
                    "version": "v1",
                    "kind": "VirtualService",
                    "namespace": app_namespace,
                    "name": "productpage",
                },
            ]
        },
    }


def _run(server: KubeServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(doctor, ["--kubeconfig", str(server.kubeconfig), *args])
    return result.exit_code, result.output


def test_doctor_flags_an_application_that_would_undo_the_weights(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    apply(admin, _vs(namespace))
    apply(admin, _app(namespace, "bare", namespace, {}))

    code, output = _run(kube_server, "--argocd-application", f"{namespace}/bare")

    assert code == 1, output
    assert f"VirtualService.networking.istio.io {namespace}/productpage {WEIGHT_JQ}" in output
    assert "jqPathExpressions: ['.spec.http[].route[].weight']" in output


def test_doctor_flags_ignore_differences_without_respect_ignore_differences(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    ignore = [
        {"group": "networking.istio.io", "kind": "VirtualService", "jqPathExpressions": [WEIGHT_JQ]}
    ]
    apply(admin, _app(namespace, "half", namespace, {"ignoreDifferences": ignore}))

    code, output = _run(kube_server, "--argocd-application", f"{namespace}/half")

    assert code == 1, output
    assert "spec.syncPolicy.syncOptions" in output
    assert "RespectIgnoreDifferences=true" in output


def test_doctor_passes_an_application_with_the_needed_ignore_differences(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    spec = {
        "ignoreDifferences": [
            {
                "group": "networking.istio.io",
                "kind": "VirtualService",
                "jqPathExpressions": [WEIGHT_JQ],
            }
        ],
        "syncPolicy": {"syncOptions": ["RespectIgnoreDifferences=true"]},
    }
    apply(admin, _app(namespace, "good", namespace, spec))

    code, output = _run(
        kube_server,
        "--argocd-application",
        f"{namespace}/good",
        "--weight-ref",
        f"networking.istio.io/v1,VirtualService,{namespace}/productpage,.spec.http[0].route[0].weight",
    )

    assert code == 0, output
    assert "ok" in output


def test_doctor_accepts_our_field_manager_as_the_ignore_rule(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    spec = {
        "ignoreDifferences": [
            {
                "group": "networking.istio.io",
                "kind": "VirtualService",
                "managedFieldsManagers": ["gitops-reconciler"],
            }
        ],
        "syncPolicy": {"syncOptions": ["RespectIgnoreDifferences=true"]},
    }
    apply(admin, _app(namespace, "managers", namespace, spec))
    code, output = _run(kube_server, "--argocd-application", f"{namespace}/managers")
    assert code == 0, output


def test_doctor_checks_flux_objects_for_the_ssa_annotation(
    kube_server: KubeServer, admin: Kube, namespace: str
) -> None:
    apply(
        admin,
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": namespace},
            "spec": {
                "interval": "10m",
                "prune": True,
                "sourceRef": {"kind": "GitRepository", "name": "env"},
            },
        },
    )
    write_status(
        admin,
        ObjectRef("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "apps", namespace),
        {
            "inventory": {
                "entries": [
                    {"id": f"{namespace}_productpage-v1_apps_Deployment", "v": "v1"},
                    {
                        "id": f"{namespace}_productpage_networking.istio.io_VirtualService",
                        "v": "v1",
                    },
                ]
            }
        },
    )
    apply(admin, _vs(namespace))
    code, output = _run(kube_server, "--flux-kustomization", f"{namespace}/apps")
    assert code == 1, output
    assert "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent" in output

    apply(admin, _vs(namespace, {"kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent"}))
    code, output = _run(kube_server, "--flux-kustomization", f"{namespace}/apps")
    assert code == 0, output


def test_doctor_exits_2_when_it_cannot_check(kube_server: KubeServer, namespace: str) -> None:
    code, output = _run(kube_server, "--argocd-application", f"{namespace}/absent")
    assert code == 2
    assert "does not exist" in output
