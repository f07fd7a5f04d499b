from typing import Any

from reconciler.cluster import drift
from reconciler.cluster.drift import (
    Managed,
    argocd_findings,
    covers,
    flux_findings,
    parse_jq,
    parse_pointer,
)

VS_WEIGHTS = Managed(
    "networking.istio.io",
    "VirtualService",
    "bookinfo",
    "productpage",
    ("spec", "http", None, "route", None, "weight"),
)
ONE_WEIGHT = Managed(
    "networking.istio.io",
    "VirtualService",
    "bookinfo",
    "productpage",
    ("spec", "http", 0, "route", 1, "weight"),
)


def _app(ignore: list[dict[str, Any]], options: list[str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "env", "namespace": "argocd"},
        "spec": {"ignoreDifferences": ignore, "syncPolicy": {"syncOptions": options or []}},
    }


def test_jq_paths_parse() -> None:
    assert parse_jq(".spec.http[].route[].weight") == (
        "spec",
        "http",
        None,
        "route",
        None,
        "weight",
    )
    assert parse_jq('.metadata.annotations["a.b/c"]') == ("metadata", "annotations", "a.b/c")
    assert parse_jq(".spec.http[0]") == ("spec", "http", 0)
    assert parse_jq('.spec.http[] | select(.name == "x")') is None


def test_pointers_parse() -> None:
    assert parse_pointer("/metadata/annotations/a~1b") == ("metadata", "annotations", "a/b")
    assert parse_pointer("/spec/http/0") == ("spec", "http", 0)


def test_coverage() -> None:
    assert covers(("spec", "http"), VS_WEIGHTS.path)
    assert covers(("spec", "http", None, "route", None, "weight"), ONE_WEIGHT.path)
    assert covers(("spec", "http", 0, "route", 1, "weight"), ONE_WEIGHT.path)
    assert not covers(("spec", "http", 0, "route", 1, "weight"), VS_WEIGHTS.path)
    assert not covers(("spec", "hosts"), VS_WEIGHTS.path)


def test_an_application_without_ignore_differences_is_flagged_with_the_fix() -> None:
    findings = argocd_findings(_app([]), [VS_WEIGHTS], "gitops-reconciler")
    assert len(findings) == 1
    assert findings[0].object == "VirtualService.networking.istio.io bookinfo/productpage"
    assert findings[0].field == ".spec.http[].route[].weight"
    assert ".spec.http[].route[].weight" in findings[0].fix


def test_ignore_differences_needs_respect_ignore_differences() -> None:
    ignore = [
        {"group": "networking.istio.io", "kind": "VirtualService", "jsonPointers": ["/spec/http"]}
    ]
    findings = argocd_findings(_app(ignore), [VS_WEIGHTS], "gitops-reconciler")
    assert [f.field for f in findings] == ["spec.syncPolicy.syncOptions"]
    assert (
        argocd_findings(_app(ignore, [drift.RESPECT_IGNORE]), [VS_WEIGHTS], "gitops-reconciler")
        == []
    )


def test_an_entry_for_another_object_does_not_cover() -> None:
    ignore = [
        {
            "group": "networking.istio.io",
            "kind": "VirtualService",
            "name": "other",
            "jqPathExpressions": [".spec.http"],
        }
    ]
    findings = argocd_findings(
        _app(ignore, [drift.RESPECT_IGNORE]), [VS_WEIGHTS], "gitops-reconciler"
    )
    assert len(findings) == 1


def test_our_field_manager_covers_everything_we_set() -> None:
    ignore = [
        {
            "group": "networking.istio.io",
            "kind": "VirtualService",
            "managedFieldsManagers": ["gitops-reconciler"],
        }
    ]
    assert (
        argocd_findings(_app(ignore, [drift.RESPECT_IGNORE]), [VS_WEIGHTS], "gitops-reconciler")
        == []
    )


def test_flux_objects_need_the_ssa_annotation() -> None:
    plain: dict[str, Any] = {"metadata": {"annotations": {}}}
    assert len(flux_findings(plain, [VS_WEIGHTS])) == 1
    for value in ("IfNotPresent", "Ignore"):
        assert (
            flux_findings({"metadata": {"annotations": {drift.FLUX_SSA: value}}}, [VS_WEIGHTS])
            == []
        )
    assert (
        len(flux_findings({"metadata": {"annotations": {drift.FLUX_SSA: "Merge"}}}, [VS_WEIGHTS]))
        == 1
    )


def test_inventories_are_read() -> None:
    kustomization = {
        "status": {
            "inventory": {
                "entries": [
                    {"id": "bookinfo_productpage_networking.istio.io_VirtualService", "v": "v1"}
                ]
            }
        }
    }
    assert drift.flux_inventory(kustomization) == [
        ("bookinfo", "productpage", "networking.istio.io", "VirtualService")
    ]
