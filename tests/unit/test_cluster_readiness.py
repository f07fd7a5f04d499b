from typing import Any

import pytest

from reconciler.cluster.readiness import NotReadyError, assess, wait_ready
from reconciler.cluster.resources import ObjectRef
from reconciler.ports import Readiness


def _deployment(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": status,
    }


def test_a_deployment_is_ready_when_every_replica_is_updated_and_available() -> None:
    obj = _deployment(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert assess(obj).ready


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({}, "no status yet"),
        ({"observedGeneration": 1}, "has not seen generation 2"),
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1}, "1 of 2 replicas updated"),
        (
            {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2},
            "1 old replicas",
        ),
        (
            {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
            "1 of 2 replicas available",
        ),
        (
            {
                "observedGeneration": 2,
                "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
            },
            "progress deadline",
        ),
    ],
)
def test_a_deployment_that_is_not_ready_says_why(status: dict[str, Any], reason: str) -> None:
    verdict = assess(_deployment(**status))
    assert not verdict.ready
    assert reason in verdict.reason


def test_other_objects_are_judged_by_their_ready_condition() -> None:
    ksvc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"generation": 3},
    }
    assert assess(ksvc) == Readiness(ready=False, reason="no Ready condition yet")
    ksvc["status"] = {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]}
    assert assess(ksvc).ready
    ksvc["status"]["observedGeneration"] = 2
    assert not assess(ksvc).ready
    assert assess(None) == Readiness(ready=False, reason="does not exist")


def test_wait_ready_polls_until_ready_on_the_clock_it_is_given() -> None:
    now = [0.0]
    ref = ObjectRef("apps/v1", "Deployment", "v2", "ns")

    def check(_ref: ObjectRef) -> Readiness:
        return Readiness(ready=now[0] >= 7, reason="waiting")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    verdicts = wait_ready(check, [ref], timeout=60, clock=lambda: now[0], sleep=sleep, interval=2)
    assert verdicts[ref].ready
    assert now[0] == 8


def test_wait_ready_gives_up_at_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(NotReadyError, match="not ready after 5 s"):
        wait_ready(
            lambda _r: Readiness(ready=False, reason="no"),
            [ObjectRef("apps/v1", "Deployment", "v2", "ns")],
            timeout=5,
            clock=lambda: now[0],
            sleep=sleep,
            interval=2,
        )
    assert now[0] == 5
