import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.cluster.patches import (
    NGINX_CANARY_WEIGHT,
    WeightField,
    WeightFieldError,
    check_canary,
    plan_patch,
    read_weight,
    weight_field,
)
from reconciler.spec.model import WeightObjRef


def _vs(*weights: int | None) -> dict[str, Any]:
    routes = []
    for i, weight in enumerate(weights):
        route: dict[str, Any] = {"destination": {"host": f"v{i}"}}
        if weight is not None:
            route["weight"] = weight
        routes.append(route)
    return {"spec": {"http": [{"route": routes}]}}


def _field(i: int) -> WeightField:
    return weight_field(
        WeightObjRef(
            "networking.istio.io/v1", "VirtualService", "vs", f".spec.http[0].route[{i}].weight"
        )
    )


def _resolve(doc: Any, pointer: str) -> tuple[Any, str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    last = parts[-1]
    return doc, int(last) if isinstance(doc, list) else last


def apply_json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 for the three operations the planner uses; raises on a failed test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parent, key = _resolve(doc, op["path"])
        if op["op"] == "test":
            if parent[key] != op["value"]:
                raise AssertionError(f"test failed at {op['path']}")
        else:
            parent[key] = op["value"]
    return doc


def test_nothing_to_send_when_the_weights_are_there() -> None:
    assert plan_patch(_vs(70, 30), [(_field(0), 70), (_field(1), 30)]) == []


def test_tests_come_first_and_name_the_values_read() -> None:
    ops = plan_patch(_vs(100, 0), [(_field(0), 70), (_field(1), 30)])
    assert ops == [
        {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 100},
        {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 0},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 70},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 30},
    ]


def test_an_absent_weight_is_added_after_testing_its_parent() -> None:
    obj = _vs(100, None)
    ops = plan_patch(obj, [(_field(0), 90), (_field(1), 10)])
    assert {
        "op": "test",
        "path": "/spec/http/0/route/1",
        "value": {"destination": {"host": "v1"}},
    } in ops
    assert ops[-1] == {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 10}
    assert [r["weight"] for r in apply_json_patch(obj, ops)["spec"]["http"][0]["route"]] == [90, 10]


def test_a_missing_route_is_an_error_naming_it() -> None:
    with pytest.raises(WeightFieldError, match=r"route/5/weight"):
        plan_patch(_vs(100), [(_field(5), 10)])


def test_one_field_given_two_weights_is_refused() -> None:
    with pytest.raises(WeightFieldError, match="two weights"):
        plan_patch(_vs(100, 0), [(_field(0), 10), (_field(0), 20)])


def test_nginx_canary_weight_is_a_string_annotation() -> None:
    ref = WeightObjRef(
        "networking.k8s.io/v1", "Ingress", "web", ".metadata.annotations.canary-weight"
    )
    field = weight_field(ref)
    obj = {
        "metadata": {
            "annotations": {"nginx.ingress.kubernetes.io/canary": "true", NGINX_CANARY_WEIGHT: "10"}
        }
    }
    check_canary(obj, "web")
    assert read_weight(obj, field) == 10
    ops = plan_patch(obj, [(field, 30)])
    assert ops[-1] == {
        "op": "replace",
        "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1canary-weight",
        "value": "30",
    }


@pytest.mark.parametrize(
    "path",
    [
        '.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"]',
        ".metadata.annotations.canary-weight",
        ".spec.canaryWeight",
    ],
)
def test_an_ingress_canary_weight_may_be_named_by_its_annotation(path: str) -> None:
    field = weight_field(WeightObjRef("networking.k8s.io/v1", "Ingress", "web", path))
    assert field.steps == ("metadata", "annotations", NGINX_CANARY_WEIGHT)
    assert field.encode(30) == "30"


def test_an_annotation_of_any_kind_holds_its_weight_as_a_string() -> None:
    path = '.metadata.annotations["example.com/weight"]'
    field = weight_field(WeightObjRef("example.com/v1", "Split", "web", path))
    obj = {"metadata": {"annotations": {"example.com/weight": "5"}}}
    assert read_weight(obj, field) == 5
    assert plan_patch(obj, [(field, 25)])[-1] == {
        "op": "replace",
        "path": "/metadata/annotations/example.com~1weight",
        "value": "25",
    }


def test_an_ingress_weight_must_use_the_canary_field_path() -> None:
    with pytest.raises(WeightFieldError, match="canary-weight"):
        weight_field(
            WeightObjRef("networking.k8s.io/v1", "Ingress", "web", ".spec.rules[0].weight")
        )


def test_an_ingress_without_the_canary_annotation_is_refused() -> None:
    with pytest.raises(WeightFieldError, match="not an ingress-nginx canary"):
        check_canary({"metadata": {}}, "web")


def test_non_numbers_are_not_weights() -> None:
    with pytest.raises(WeightFieldError):
        read_weight({"spec": {"http": [{"route": [{"weight": "lots"}]}]}}, _field(0))


@given(
    st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=1, max_size=5).flatmap(
        lambda current: st.tuples(
            st.just(current),
            st.lists(st.integers(0, 100), min_size=len(current), max_size=len(current)),
        )
    )
)
def test_the_plan_sets_exactly_the_weights_and_its_tests_hold_on_what_was_read(
    case: tuple[list[int | None], list[int]],
) -> None:
    current, wanted = case
    obj = _vs(*current)
    ops = plan_patch(obj, [(_field(i), w) for i, w in enumerate(wanted)])
    result = apply_json_patch(obj, ops)
    assert [r.get("weight") for r in result["spec"]["http"][0]["route"]] == wanted
    assert (ops == []) == (current == wanted)
    # every test is checked against the object as read, before any change
    tests = [op for op in ops if op["op"] == "test"]
    apply_json_patch(obj, tests)
