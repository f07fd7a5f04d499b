"""Who wrote a weight, from ``managedFields`` as the API server records it."""

from typing import Any

from reconciler.cluster.ownership import owns, writers
from reconciler.spec import fieldpath

CANARY = fieldpath.parse(".spec.http[0].route[1].weight")


def entry(manager: str, fields: dict[str, Any], time: str, **extra: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": extra.pop("operation", "Update"),
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        **extra,
    }


def virtual_service(*managed: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "productpage", "managedFields": list(managed)},
        "spec": {"http": [{"route": [{"weight": 100}, {"weight": 0}]}]},
    }


def test_a_manager_of_an_atomic_list_owns_every_weight_in_it() -> None:
    # a CRD without a schema for its lists: the whole list is the manager's
    obj = virtual_service(
        entry(
            "kustomize-controller",
            {"f:spec": {"f:http": {}}},
            "2026-12-04T10:00:00Z",
            operation="Apply",
        )
    )
    assert writers(obj, CANARY, exclude="gitops-reconciler") == (
        "kustomize-controller (Apply, 2026-12-04T10:00:00Z)",
    )


def test_ours_status_writers_and_managers_of_other_fields_are_not_named() -> None:
    obj = virtual_service(
        entry("gitops-reconciler", {"f:spec": {"f:http": {}}}, "2026-12-04T12:00:00Z"),
        entry("argocd-controller", {"f:metadata": {"f:labels": {}}}, "2026-12-04T11:00:00Z"),
        entry("istiod", {"f:status": {}}, "2026-12-04T11:30:00Z", subresource="status"),
    )
    assert writers(obj, CANARY, exclude="gitops-reconciler") == ()


def test_writers_are_newest_first() -> None:
    obj = virtual_service(
        entry("kubectl-edit", {"f:spec": {"f:http": {}}}, "2026-12-04T09:00:00Z"),
        entry("kubectl-patch", {"f:spec": {"f:http": {}}}, "2026-12-04T13:00:00Z"),
    )
    assert [w.split(" ")[0] for w in writers(obj, CANARY, exclude="x")] == [
        "kubectl-patch",
        "kubectl-edit",
    ]


def test_a_keyed_list_item_is_found_by_its_keys_not_its_position() -> None:
    obj = {
        "spec": {"traffic": [{"revisionName": "r1", "percent": 90}, {"revisionName": "r2"}]},
    }
    fields: dict[str, Any] = {
        "f:spec": {"f:traffic": {'k:{"revisionName":"r2"}': {".": {}, "f:percent": {}}}}
    }
    assert owns(fields, obj, fieldpath.parse(".spec.traffic[1].percent"))
    assert not owns(fields, obj, fieldpath.parse(".spec.traffic[0].percent"))


def test_a_field_of_a_mapping_is_owned_only_by_who_set_that_field() -> None:
    obj = {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "10"}}}
    path = ("metadata", "annotations", "nginx.ingress.kubernetes.io/canary-weight")
    owner: dict[str, Any] = {
        "f:metadata": {"f:annotations": {"f:nginx.ingress.kubernetes.io/canary-weight": {}}}
    }
    other: dict[str, Any] = {
        "f:metadata": {"f:annotations": {"f:nginx.ingress.kubernetes.io/canary": {}}}
    }
    assert owns(owner, obj, path)
    assert not owns(other, obj, path)
    assert not owns(None, obj, path)
