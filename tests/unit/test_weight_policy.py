"""The weight policy: which fields and namespaces an Env repo may have the reconciler touch."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.cluster import drift
from reconciler.cluster.errors import WeightPolicyError
from reconciler.cluster.handoff import ArgoCDApp, FluxSync
from reconciler.cluster.memory import MemoryCluster
from reconciler.cluster.scope import destination_namespace
from reconciler.config import ConfigError, build
from reconciler.spec import fieldpath
from reconciler.spec.model import WeightObjRef
from reconciler.spec.weightpolicy import (
    FIELDS_SETTING,
    KNOWN_RULES,
    NAMESPACES_SETTING,
    NGINX_CANARY_WEIGHT,
    FieldRule,
    RuleError,
    WeightPolicy,
    parse_rule,
    policy_from_settings,
)

# An oracle written independently of the policy's rules: regular expressions over the
# canonical fieldPath, per (group, kind).
_INDEX = r"\[\d+\]"
ORACLE: dict[tuple[str, str], list[str]] = {
    ("networking.istio.io", "VirtualService"): [rf"\.spec\.http{_INDEX}\.route{_INDEX}\.weight"],
    ("gateway.networking.k8s.io", "HTTPRoute"): [
        rf"\.spec\.rules{_INDEX}\.backendRefs{_INDEX}\.weight"
    ],
    ("gateway.networking.k8s.io", "GRPCRoute"): [
        rf"\.spec\.rules{_INDEX}\.backendRefs{_INDEX}\.weight"
    ],
    ("serving.knative.dev", "Service"): [rf"\.spec\.traffic{_INDEX}\.percent"],
    ("split.smi-spec.io", "TrafficSplit"): [rf"\.spec\.backends{_INDEX}\.weight"],
    **{
        (group, "Ingress"): [
            re.escape(f'.metadata.annotations["{NGINX_CANARY_WEIGHT}"]'),
            re.escape(".metadata.annotations.canary-weight"),
            re.escape(".spec.canaryWeight"),
        ]
        for group in ("networking.k8s.io", "extensions")
    },
}
KINDS = [
    *ORACLE,
    ("networking.istio.io", "DestinationRule"),
    ("apps", "Deployment"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("example.com", "Splitter"),
    ("serving.knative.dev", "Route"),
    ("split.smi-spec.io", "HTTPRouteGroup"),
]
KEYS = [
    "spec", "http", "route", "weight", "rules", "backendRefs", "traffic", "percent",
    "backends", "metadata", "annotations", "canaryWeight", "canary-weight", "hosts", "data",
    NGINX_CANARY_WEIGHT, "name", "port",
]  # fmt: skip
TEMPLATES = [
    ("spec", "http", 0, "route", 0, "weight"),
    ("spec", "rules", 0, "backendRefs", 0, "weight"),
    ("spec", "traffic", 0, "percent"),
    ("spec", "backends", 0, "weight"),
    ("metadata", "annotations", NGINX_CANARY_WEIGHT),
    ("metadata", "annotations", "canary-weight"),
    ("spec", "canaryWeight"),
]
NAMESPACES = ["bookinfo", "shop", "kube-system", "argocd", "default"]
VERSIONS = ["v1", "v1beta1", "v1alpha3", "v1alpha4", "v2"]


@st.composite
def paths(draw: st.DrawFn) -> tuple[fieldpath.Step, ...]:
    """Known paths with other indexes, near misses of them, and arbitrary ones."""
    template = list(draw(st.sampled_from(TEMPLATES)))
    template = [draw(st.integers(0, 40)) if isinstance(s, int) else s for s in template]
    mutation = draw(st.sampled_from(["none", "drop", "add", "key", "swap", "random"]))
    if mutation == "drop" and len(template) > 1:
        del template[draw(st.integers(0, len(template) - 1))]
    elif mutation == "add":
        template.insert(
            draw(st.integers(0, len(template))),
            draw(st.one_of(st.sampled_from(KEYS), st.integers(0, 3))),
        )
    elif mutation == "key":
        template[draw(st.integers(0, len(template) - 1))] = draw(st.sampled_from(KEYS))
    elif mutation == "swap":
        i = draw(st.integers(0, len(template) - 1))
        template[i] = str(template[i]) if isinstance(template[i], int) else 0
    elif mutation == "random":
        template = draw(
            st.lists(st.one_of(st.sampled_from(KEYS), st.integers(0, 3)), min_size=1, max_size=7)
        )
    return tuple(template)


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _oracle(group: str, kind: str, path: str, extra: list[tuple[FieldRule, str]]) -> bool:
    if any(re.fullmatch(p, path) for p in ORACLE.get((group, kind), [])):
        return True
    return any(
        rule.group == group and rule.kind == kind and re.fullmatch(pattern, path)
        for rule, pattern in extra
    )


@st.composite
def rules(draw: st.DrawFn) -> FieldRule:
    group, kind = draw(st.sampled_from(KINDS))
    steps = tuple(None if s == 0 else s for s in draw(paths()))
    version = draw(st.one_of(st.none(), st.sampled_from(VERSIONS)))
    return FieldRule(group, version, kind, steps)


def _rule_regex(rule: FieldRule, version: str) -> str:
    if rule.version is not None and rule.version != version:
        return "(?!)"  # matches nothing
    return re.escape(rule.path).replace(re.escape("[*]"), _INDEX)


@given(
    target=st.tuples(st.sampled_from(KINDS), st.sampled_from(VERSIONS)),
    steps=paths(),
    namespace=st.one_of(st.none(), st.sampled_from(NAMESPACES)),
    allowed=st.sets(st.sampled_from([*NAMESPACES, "*"]), max_size=3),
    extra=st.lists(rules(), max_size=3),
)
def test_a_reference_is_allowed_iff_its_namespace_is_listed_and_its_field_matches_a_rule(
    target: tuple[tuple[str, str], str],
    steps: tuple[fieldpath.Step, ...],
    namespace: str | None,
    allowed: set[str],
    extra: list[FieldRule],
) -> None:
    (group, name), version = target
    path = fieldpath.render(steps)
    ref = WeightObjRef(_api_version(group, version), name, "obj", path, namespace)
    policy = policy_from_settings(tuple(sorted(allowed)), tuple(str(r) for r in extra))
    refusal = policy.refusal(ref, default_namespace="default")

    in_namespace = "*" in allowed or (namespace or "default") in allowed
    field_ok = _oracle(group, name, path, [(r, _rule_regex(r, version)) for r in extra])
    assert (refusal is None) == (in_namespace and field_ok)
    assert policy.field_allowed(ref) == field_ok
    if refusal is not None:
        assert refusal.reason == ("namespace" if not in_namespace else "field")
        assert refusal.setting == (NAMESPACES_SETTING if not in_namespace else FIELDS_SETTING)
        assert f"{name} {namespace or 'default'}/obj" in refusal.message
        assert refusal.setting in refusal.message


@given(rules())
def test_a_rule_reads_back_from_how_it_is_written(rule: FieldRule) -> None:
    assert parse_rule(str(rule)) == rule


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_a_configured_rule_with_any_index_allows_every_index_and_nothing_else(
    i: int, j: int
) -> None:
    policy = policy_from_settings(
        ("*",), ("rollouts.example.com/*/TrafficRoute:.spec.routes[*].weight",)
    )
    ok = WeightObjRef("rollouts.example.com/v2", "TrafficRoute", "r", f".spec.routes[{i}].weight")
    assert policy.refusal(ok, "default") is None
    other = WeightObjRef("rollouts.example.com/v2", "TrafficRoute", "r", f".spec.routes[{i}].name")
    assert policy.refusal(other, "default") is not None
    nested = WeightObjRef(
        "rollouts.example.com/v2", "TrafficRoute", "r", f".spec.routes[{i}][{j}].weight"
    )
    assert policy.refusal(nested, "default") is not None


def test_the_field_is_judged_by_what_it_names_not_how_it_is_spelled() -> None:
    policy = WeightPolicy()
    quoted = WeightObjRef(
        "networking.istio.io/v1", "VirtualService", "vs", '.spec["http"][0]["route"][1].weight'
    )
    assert policy.refusal(quoted, "default") is None
    broken = WeightObjRef("networking.istio.io/v1", "VirtualService", "vs", "spec..http")
    assert policy.refusal(broken, "default") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v1/ConfigMap:.data.weight", FieldRule("", "v1", "ConfigMap", ("data", "weight"))),
        (
            'example.com/*/Split:.metadata.annotations["example.com/weight"]',
            FieldRule(
                "example.com", None, "Split", ("metadata", "annotations", "example.com/weight")
            ),
        ),
        (
            "example.com/v1/Split:.spec.to[*].w",
            FieldRule("example.com", "v1", "Split", ("spec", "to", None, "w")),
        ),
    ],
)
def test_rules_are_written_group_version_kind_colon_fieldpath(
    text: str, expected: FieldRule
) -> None:
    assert parse_rule(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "VirtualService:.spec.http[*].route[*].weight",  # no version
        "networking.istio.io/v1/VirtualService",  # no fieldPath
        "networking.istio.io/v1/VirtualService:spec.x",  # not a fieldPath
        "a/b/c/d:.spec.x",
        "example.com/v1/Split:.spec.to[999999999].w",
    ],
)
def test_a_rule_that_does_not_parse_says_the_syntax(text: str) -> None:
    with pytest.raises(RuleError, match=r"GROUP/VERSION/KIND:FIELDPATH|fieldPath|range"):
        parse_rule(text)


def test_the_settings_take_rules_and_namespaces_and_refuse_bad_ones() -> None:
    settings = build(
        flags={
            "repo": "/env",
            "weight_namespaces": ["bookinfo", "shop"],
            "weight_fields": ["v1/ConfigMap:.data.weight"],
        },
        environ={},
    )
    assert settings.kubernetes.weight_namespaces == ("bookinfo", "shop")
    assert settings.kubernetes.weight_fields == ("v1/ConfigMap:.data.weight",)
    from_env = build(flags={"repo": "/env"}, environ={"RECONCILER_WEIGHT_NAMESPACES": "a,b"})
    assert from_env.kubernetes.weight_namespaces == ("a", "b")
    with pytest.raises(ConfigError, match=r"weight_fields.*GROUP/VERSION/KIND:FIELDPATH"):
        build(flags={"repo": "/env", "weight_fields": ["ConfigMap"]}, environ={})
    with pytest.raises(ConfigError, match="'Kube_System' is not a namespace name"):
        build(flags={"repo": "/env", "weight_namespaces": ["Kube_System"]}, environ={})


def test_the_destination_namespace_is_the_applications_or_the_kustomizations() -> None:
    app = ArgoCDApp("env")
    assert destination_namespace(app, {"spec": {"destination": {"namespace": "shop"}}}) == "shop"
    assert destination_namespace(app, {"spec": {"destination": {"server": "x"}}}) is None
    assert destination_namespace(app, None) is None
    flux = FluxSync("env", "env")
    assert destination_namespace(flux, {"spec": {"targetNamespace": "shop"}}) == "shop"
    assert destination_namespace(flux, {"spec": {}}) is None


# -- enforced by the in-memory cluster, as by the real one -----------------------------------


def _vs(namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": namespace},
        "spec": {"http": [{"route": [{"weight": 100}, {"weight": 0}]}], "hosts": ["a"]},
    }


def _ref(namespace: str, path: str = ".spec.http[0].route[1].weight") -> WeightObjRef:
    return WeightObjRef("networking.istio.io/v1", "VirtualService", "vs", path, namespace)


def test_memory_cluster_refuses_a_namespace_outside_the_policy_before_touching_anything() -> None:
    policy = policy_from_settings(("bookinfo",), ())
    cluster = MemoryCluster(policy=policy)
    cluster.apply(_vs("bookinfo"))
    cluster.apply(_vs("kube-system"))
    before = (cluster.requests, cluster.reads)

    with pytest.raises(WeightPolicyError) as refused:
        cluster.set_weights([(_ref("bookinfo"), 30), (_ref("kube-system"), 30)])
    message = str(refused.value)
    assert "VirtualService kube-system/vs" in message
    assert ".spec.http[0].route[1].weight" in message
    assert NAMESPACES_SETTING in message
    assert refused.value.setting == NAMESPACES_SETTING
    assert (cluster.requests, cluster.reads) == before  # nothing written, not even bookinfo
    assert cluster.get_weight(_ref("bookinfo")) == 0

    readings = cluster.read_weights([_ref("bookinfo"), _ref("kube-system")])
    assert readings[_ref("bookinfo")].value == 0
    assert readings[_ref("kube-system")].value is None
    assert NAMESPACES_SETTING in (readings[_ref("kube-system")].error or "")
    assert cluster.reads == before[1] + 1  # the refused one was not read
    with pytest.raises(WeightPolicyError):
        cluster.get_weight(_ref("kube-system"))


def test_memory_cluster_refuses_a_field_that_is_no_weight_and_names_the_setting() -> None:
    cluster = MemoryCluster(policy=policy_from_settings(("*",), ()))
    cluster.apply(_vs("bookinfo"))
    with pytest.raises(WeightPolicyError, match=re.escape(FIELDS_SETTING)) as refused:
        cluster.set_weights([(_ref("bookinfo", ".spec.hosts[0]"), 1)])
    assert refused.value.field_path == ".spec.hosts[0]"
    assert "networking.istio.io/*/VirtualService:.spec.hosts[*]" in str(refused.value)
    assert cluster.get("networking.istio.io/v1", "VirtualService", "bookinfo", "vs") == _vs(
        "bookinfo"
    )
    allowing = MemoryCluster(
        policy=policy_from_settings(
            ("*",), ("networking.istio.io/v1/VirtualService:.spec.hosts[*]",)
        )
    )
    allowing.apply(_vs("bookinfo"))
    allowing.set_weights([(_ref("bookinfo", ".spec.hosts[0]"), 1)])
    assert allowing.get_weight(_ref("bookinfo", ".spec.hosts[0]")) == 1


def test_the_drift_guard_checks_exactly_the_kinds_and_fields_the_policy_knows() -> None:
    known = {(r.group, r.kind, r.steps) for r in KNOWN_RULES if r.group != "extensions"}
    guarded = {(k.group, k.kind, path) for k in drift.WEIGHTED_KINDS for path in k.paths}
    assert known == guarded
