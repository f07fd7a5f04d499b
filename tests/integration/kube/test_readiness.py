"""Readiness of versions, with status written by the test as a controller would."""

from __future__ import annotations

import threading
import time

import pytest

from reconciler.cluster.client import Kube
from reconciler.cluster.kube import KubeCluster
from reconciler.cluster.readiness import NotReadyError, wait_ready
from reconciler.cluster.resources import ObjectRef
from tests.fixtures.kube import apply, deployment, write_status

pytestmark = pytest.mark.integration


def _deployment_ref(name: str, namespace: str) -> ObjectRef:
    return ObjectRef("apps/v1", "Deployment", name, namespace)


def _ready_status(replicas: int, generation: int = 1) -> dict[str, object]:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


def test_a_deployment_without_status_is_not_ready_and_then_is(admin: Kube, namespace: str) -> None:
    apply(admin, deployment("reviews-v2", namespace, replicas=2))
    cluster = KubeCluster(admin)
    ref = _deployment_ref("reviews-v2", namespace)

    assert not cluster.is_ready(ref).ready
    write_status(admin, ref, {**_ready_status(2), "availableReplicas": 1})
    verdict = cluster.is_ready(ref)
    assert not verdict.ready
    assert verdict.reason == "1 of 2 replicas available"

    write_status(admin, ref, _ready_status(2))
    assert cluster.is_ready(ref).ready


def test_wait_ready_returns_once_the_status_says_ready(admin: Kube, namespace: str) -> None:
    apply(admin, deployment("productpage-v2", namespace))
    knative = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [{"image": "example.invalid/hello:2"}]}}},
    }
    apply(admin, knative)
    refs = [
        _deployment_ref("productpage-v2", namespace),
        ObjectRef("serving.knative.dev/v1", "Service", "hello", namespace),
    ]
    cluster = KubeCluster(admin)
    polls: list[float] = []

    def controller() -> None:
        time.sleep(0.3)
        write_status(admin, refs[0], _ready_status(1))
        write_status(
            admin,
            refs[1],
            {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
        )

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        time.sleep(seconds)

    writer = threading.Thread(target=controller)
    writer.start()
    try:
        verdicts = wait_ready(
            cluster.is_ready,
            refs,
            timeout=10,
            clock=time.monotonic,
            sleep=sleep,
            interval=0.1,
        )
    finally:
        writer.join()
    assert all(v.ready for v in verdicts.values())
    assert polls  # it did wait


def test_wait_ready_times_out_as_specified_naming_what_is_not_ready(
    admin: Kube, namespace: str
) -> None:
    apply(admin, deployment("details-v2", namespace))
    ref = _deployment_ref("details-v2", namespace)
    write_status(
        admin,
        ref,
        {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 0,
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ],
        },
    )
    now = [0.0]

    def sleep(seconds: float) -> None:  # the test drives time: no real waiting
        now[0] += seconds

    with pytest.raises(NotReadyError) as raised:
        wait_ready(
            KubeCluster(admin).is_ready,
            [ref],
            timeout=30,
            clock=lambda: now[0],
            sleep=sleep,
            interval=5,
        )
    assert now[0] == 30
    assert "details-v2" in str(raised.value)
    assert "progress deadline" in str(raised.value)


def test_a_knative_service_whose_ready_condition_is_false_says_why(
    admin: Kube, namespace: str
) -> None:
    apply(
        admin,
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "broken", "namespace": namespace},
            "spec": {"template": {"spec": {"containers": [{"image": "example.invalid/x:1"}]}}},
        },
    )
    ref = ObjectRef("serving.knative.dev/v1", "Service", "broken", namespace)
    write_status(
        admin,
        ref,
        {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "False", "message": "Revision broken-00001 failed"}
            ],
        },
    )
    verdict = KubeCluster(admin).is_ready(ref)
    assert not verdict.ready
    assert verdict.reason == "Revision broken-00001 failed"
