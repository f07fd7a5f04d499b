"""Weights set through weightObjRefs on a real API server, read back with a plain GET."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.cluster.client import JSON_PATCH, Kube
from reconciler.cluster.errors import ConflictError, FieldError, NotFoundError, WeightPolicyError
from reconciler.cluster.kube import KubeCluster
from reconciler.cluster.patches import plan_patch, weight_field
from reconciler.cluster.resources import ObjectRef
from reconciler.spec.model import WeightObjRef
from reconciler.spec.weightpolicy import policy_from_settings
from tests.fixtures.kube import apply, delete

pytestmark = pytest.mark.integration


def _virtual_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "productpage", "namespace": namespace},
        "spec": {
            "hosts": ["productpage"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "productpage", "subset": "v1"}, "weight": 100},
                        # Istio omits weight 0: the field is absent until someone sets it
                        {"destination": {"host": "productpage", "subset": "v2"}},
                    ]
                }
            ],
        },
    }


def _vs_refs(namespace: str, api_version: str = "networking.istio.io/v1") -> list[WeightObjRef]:
    return [
        WeightObjRef(
            api_version,
            "VirtualService",
            "productpage",
            f".spec.http[0].route[{i}].weight",
            namespace,
        )
        for i in (0, 1)
    ]


def _get(admin: Kube, ref: ObjectRef) -> dict[str, Any]:
    obj = admin.get(ref)
    assert obj is not None
    return obj


def test_virtual_service_weights_are_set_in_one_request_and_read_back(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _virtual_service(namespace))
    cluster = KubeCluster(admin)
    stable, canary = _vs_refs(namespace, "networking.istio.io/v1beta1")

    cluster.set_weights([(stable, 70), (canary, 30)])

    vs = _get(
        admin, ObjectRef("networking.istio.io/v1", "VirtualService", "productpage", namespace)
    )
    routes = vs["spec"]["http"][0]["route"]
    assert [r["weight"] for r in routes] == [70, 30]
    assert cluster.requests == 1
    assert (cluster.get_weight(stable), cluster.get_weight(canary)) == (70, 30)


def test_setting_the_weights_already_there_sends_nothing(admin: Kube, namespace: str) -> None:
    apply(admin, _virtual_service(namespace))
    cluster = KubeCluster(admin)
    stable, canary = _vs_refs(namespace)
    cluster.set_weights([(stable, 50), (canary, 50)])
    version = _get(admin, ObjectRef(stable.api_version, stable.kind, stable.name, namespace))[
        "metadata"
    ]["resourceVersion"]

    cluster.set_weights([(stable, 50), (canary, 50)])

    assert cluster.requests == 1
    after = _get(admin, ObjectRef(stable.api_version, stable.kind, stable.name, namespace))
    assert after["metadata"]["resourceVersion"] == version


def test_httproute_backend_ref_weights(admin: Kube, namespace: str) -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "reviews-v1", "port": 9080, "weight": 100},
                        {"name": "reviews-v2", "port": 9080, "weight": 0},
                    ]
                }
            ],
        },
    }
    apply(admin, route)
    refs = [
        WeightObjRef(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "reviews",
            f".spec.rules[0].backendRefs[{i}].weight",
            namespace,
        )
        for i in (0, 1)
    ]
    KubeCluster(admin).set_weights([(refs[0], 80), (refs[1], 20)])

    got = _get(admin, ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "reviews", namespace))
    assert [b["weight"] for b in got["spec"]["rules"][0]["backendRefs"]] == [80, 20]


def test_knative_service_traffic_percent(admin: Kube, namespace: str) -> None:
    service = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {
            "template": {"spec": {"containers": [{"image": "example.invalid/hello:2"}]}},
            "traffic": [
                {"revisionName": "hello-00001", "percent": 100},
                {"revisionName": "hello-00002", "percent": 0},
            ],
        },
    }
    apply(admin, service)
    refs = [
        WeightObjRef(
            "serving.knative.dev/v1", "Service", "hello", f".spec.traffic[{i}].percent", namespace
        )
        for i in (0, 1)
    ]
    KubeCluster(admin).set_weights([(refs[0], 90), (refs[1], 10)])

    got = _get(admin, ObjectRef("serving.knative.dev/v1", "Service", "hello", namespace))
    assert [t["percent"] for t in got["spec"]["traffic"]] == [90, 10]


def test_smi_traffic_split(admin: Kube, namespace: str) -> None:
    split = {
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": "checkout", "namespace": namespace},
        "spec": {
            "service": "checkout",
            "backends": [
                {"service": "checkout-v1", "weight": 100},
                {"service": "checkout-v2", "weight": 0},
            ],
        },
    }
    apply(admin, split)
    refs = [
        WeightObjRef(
            "split.smi-spec.io/v1alpha2",
            "TrafficSplit",
            "checkout",
            f".spec.backends[{i}].weight",
            namespace,
        )
        for i in (0, 1)
    ]
    KubeCluster(admin).set_weights([(refs[0], 60), (refs[1], 40)])

    got = _get(
        admin, ObjectRef("split.smi-spec.io/v1alpha4", "TrafficSplit", "checkout", namespace)
    )
    assert [b["weight"] for b in got["spec"]["backends"]] == [60, 40]


@pytest.mark.parametrize(
    "field_path",
    [
        '.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"]',
        ".metadata.annotations.canary-weight",
    ],
)
def test_nginx_canary_ingress_weight_annotation(
    admin: Kube, namespace: str, field_path: str
) -> None:
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web-canary",
            "namespace": namespace,
            "annotations": {"nginx.ingress.kubernetes.io/canary": "true"},
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": "web.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web-v2", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }
    apply(admin, ingress)
    ref = WeightObjRef(
        "networking.k8s.io/v1",
        "Ingress",
        "web-canary",
        field_path,
        namespace,
    )
    cluster = KubeCluster(admin)

    cluster.set_weights([(ref, 25)])
    cluster.set_weights([(ref, 40)])

    got = _get(admin, ObjectRef("networking.k8s.io/v1", "Ingress", "web-canary", namespace))
    assert got["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "40"
    assert cluster.get_weight(ref) == 40
    assert cluster.requests == 2


def test_an_ingress_that_is_not_a_canary_is_refused(admin: Kube, namespace: str) -> None:
    apply(
        admin,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
        },
    )
    ref = WeightObjRef(
        "networking.k8s.io/v1", "Ingress", "web", ".metadata.annotations.canary-weight", namespace
    )
    with pytest.raises(FieldError, match="not an ingress-nginx canary"):
        KubeCluster(admin).set_weights([(ref, 10)])


def test_cluster_scoped_objects_carry_weights_too_once_the_configuration_allows_them(
    admin: Kube,
) -> None:
    name = f"split-{id(admin) % 100000}"
    apply(
        admin,
        {
            "apiVersion": "test.gitops-reconciler.dev/v1",
            "kind": "ClusterSplit",
            "metadata": {"name": name},
            "spec": {"split": [{"version": "a", "weight": 100}, {"version": "b", "weight": 0}]},
        },
    )
    refs = [
        WeightObjRef(
            "test.gitops-reconciler.dev/v1", "ClusterSplit", name, f".spec.split[{i}].weight"
        )
        for i in (0, 1)
    ]
    sent = admin.requests_sent
    with pytest.raises(WeightPolicyError, match="ClusterSplit is not a known traffic kind"):
        KubeCluster(admin).set_weights([(refs[0], 45), (refs[1], 55)])
    assert admin.requests_sent == sent
    rule = "test.gitops-reconciler.dev/*/ClusterSplit:.spec.split[*].weight"
    allowing = KubeCluster(admin, policy=policy_from_settings(("*",), (rule,)))
    allowing.set_weights([(refs[0], 45), (refs[1], 55)])

    got = _get(admin, ObjectRef("test.gitops-reconciler.dev/v1", "ClusterSplit", name))
    assert [s["weight"] for s in got["spec"]["split"]] == [45, 55]
    delete(admin, ObjectRef("test.gitops-reconciler.dev/v1", "ClusterSplit", name))


def test_a_stale_patch_is_refused_by_its_test_operations(admin: Kube, namespace: str) -> None:
    """The mechanism itself: a patch planned from an old read cannot land."""
    apply(admin, _virtual_service(namespace))
    ref = ObjectRef("networking.istio.io/v1", "VirtualService", "productpage", namespace)
    stable, canary = _vs_refs(namespace)
    ours = plan_patch(_get(admin, ref), [(weight_field(stable), 70), (weight_field(canary), 30)])
    # another writer moves the split after our read
    admin.patch(
        ref,
        [
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50},
            {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 50},
        ],
        content_type=JSON_PATCH,
    )

    with pytest.raises(ConflictError):
        admin.patch(ref, ours, content_type=JSON_PATCH)

    routes = _get(admin, ref)["spec"]["http"][0]["route"]
    assert [r["weight"] for r in routes] == [50, 50]


def test_a_concurrent_writer_makes_us_read_again_and_never_overwrite_blindly(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _virtual_service(namespace))
    ref = ObjectRef("networking.istio.io/v1", "VirtualService", "productpage", namespace)
    stable, canary = _vs_refs(namespace)
    seen_by_us: list[list[int | None]] = []
    raced = threading.Event()

    def other_writer(_target: ObjectRef) -> None:
        routes = _get(admin, ref)["spec"]["http"][0]["route"]
        seen_by_us.append([r.get("weight") for r in routes])
        if not raced.is_set():  # change the split once, between our read and our patch
            raced.set()
            admin.patch(
                ref,
                [
                    {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90},
                    {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 10},
                ],
                content_type=JSON_PATCH,
            )

    cluster = KubeCluster(admin, after_read=other_writer, sleep=lambda _s: None)
    with capture_logs() as events:
        cluster.set_weights([(stable, 70), (canary, 30)])

    assert [e["event"] for e in events if e["event"] == "weights_conflict"] == ["weights_conflict"]
    # the retry was planned from a fresh read that saw the other writer's 90/10
    assert seen_by_us == [[100, None], [90, 10]]
    assert cluster.requests == 2
    routes = _get(admin, ref)["spec"]["http"][0]["route"]
    assert [r["weight"] for r in routes] == [70, 30]


def test_a_set_after_a_read_patches_the_copy_read_and_reads_again_only_after_an_edit(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _virtual_service(namespace))
    ref = ObjectRef("networking.istio.io/v1", "VirtualService", "productpage", namespace)
    stable, canary = _vs_refs(namespace)
    cluster = KubeCluster(admin, sleep=lambda _s: None)
    assert cluster.read_weights([stable, canary])[stable].value == 100  # a tick's read

    sent = admin.requests_sent
    cluster.set_weights([(stable, 90), (canary, 10)])
    assert admin.requests_sent - sent == 1  # the PATCH alone: planned on the LIST's copy

    cluster.read_weights([stable, canary])
    # a person edits the split between the tick's read and its set (kubectl edit)
    admin.patch(
        ref,
        [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50}],
        content_type=JSON_PATCH,
    )
    sent = admin.requests_sent
    with capture_logs() as events:
        cluster.set_weights([(stable, 80), (canary, 20)])
    # the copy's test refused the patch; a GET, then a patch planned on the edit
    assert [e["event"] for e in events if e["event"] == "weights_conflict"] == ["weights_conflict"]
    assert admin.requests_sent - sent == 3
    routes = _get(admin, ref)["spec"]["http"][0]["route"]
    assert [r["weight"] for r in routes] == [80, 20]

    sent = admin.requests_sent
    cluster.set_weights([(stable, 70), (canary, 30)])  # no read since: the copy is used once
    assert admin.requests_sent - sent == 2  # GET and PATCH


def test_writers_that_never_stop_interfering_exhaust_the_bounded_retries(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _virtual_service(namespace))
    ref = ObjectRef("networking.istio.io/v1", "VirtualService", "productpage", namespace)
    stable, canary = _vs_refs(namespace)
    flip = iter(range(1000))

    def always_interfere(_target: ObjectRef) -> None:
        value = 40 + next(flip) % 2  # a different value every time
        admin.patch(
            ref,
            [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": value}],
            content_type=JSON_PATCH,
        )

    cluster = KubeCluster(
        admin, conflict_attempts=3, after_read=always_interfere, sleep=lambda _s: None
    )
    with pytest.raises(ConflictError):
        cluster.set_weights([(stable, 70), (canary, 30)])
    assert cluster.requests == 3


def test_missing_object_and_missing_field_are_named(admin: Kube, namespace: str) -> None:
    cluster = KubeCluster(admin)
    absent = WeightObjRef(
        "networking.istio.io/v1",
        "VirtualService",
        "nope",
        ".spec.http[0].route[0].weight",
        namespace,
    )
    assert cluster.get_weight(absent) is None
    with pytest.raises(NotFoundError, match=r"VirtualService .*/nope"):
        cluster.set_weights([(absent, 10)])

    apply(admin, _virtual_service(namespace))
    wrong = WeightObjRef(
        "networking.istio.io/v1",
        "VirtualService",
        "productpage",
        ".spec.http[3].route[0].weight",
        namespace,
    )
    with pytest.raises(FieldError, match=r"http\[3\]"):
        cluster.set_weights([(wrong, 10)])
    assert cluster.requests == 0


def test_a_kind_the_server_does_not_serve_is_named(admin: Kube, namespace: str) -> None:
    ref = WeightObjRef("example.com/v1", "Splitter", "x", ".spec.weight", namespace)
    policy = policy_from_settings(("*",), ("example.com/v1/Splitter:.spec.weight",))
    with pytest.raises(NotFoundError, match=r"serves no kind Splitter in example\.com/v1"):
        KubeCluster(admin, policy=policy).set_weights([(ref, 10)])
