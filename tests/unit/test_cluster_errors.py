import json

import pytest

from reconciler.cluster.errors import (
    ClusterPermanentError,
    ClusterTemporaryError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    Target,
    classify,
    network_error,
)
from reconciler.errors import PermanentError, TemporaryError

VS = Target("virtualservices.networking.istio.io", "bookinfo", "productpage")


def _status(code: int, reason: str, message: str, causes: bool = False) -> str:
    details = {"causes": [{"field": "spec"}]} if causes else {}
    return json.dumps(
        {"kind": "Status", "code": code, "reason": reason, "message": message, "details": details}
    )


def test_forbidden_names_the_verb_the_object_and_the_user() -> None:
    user = "system:serviceaccount:argocd:gitops-reconciler"
    body = _status(
        403,
        "Forbidden",
        f'virtualservices.networking.istio.io "productpage" is forbidden: User "{user}" '
        "cannot patch resource",
    )
    error = classify(403, body, verb="patch", target=VS)
    assert isinstance(error, ForbiddenError)
    assert isinstance(error, PermanentError)
    assert str(error).startswith(
        f'RBAC denies patch on virtualservices.networking.istio.io "productpage" in bookinfo '
        f"to {user}"
    )
    assert error.user == user


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 0])
def test_busy_and_failing_servers_are_temporary(status: int) -> None:
    error = classify(status, "", verb="get", target=VS, headers={"Retry-After": "3"})
    assert isinstance(error, ClusterTemporaryError)
    assert isinstance(error, TemporaryError)
    assert error.retry_after == 3.0


def test_conflicts_are_temporary_but_their_own_kind() -> None:
    error = classify(
        409, _status(409, "Conflict", "the object has been modified"), verb="update", target=VS
    )
    assert isinstance(error, ConflictError)
    assert isinstance(error, TemporaryError)


def test_a_json_patch_that_does_not_apply_is_a_conflict() -> None:
    body = _status(422, "Invalid", "the server rejected our request due to an error in our request")
    assert isinstance(classify(422, body, verb="patch", target=VS, json_patch=True), ConflictError)
    assert type(classify(422, body, verb="patch", target=VS)) is ClusterPermanentError


def test_a_schema_violation_is_permanent_and_says_which_field() -> None:
    body = _status(422, "Invalid", "spec.http[0].route[0].weight: Invalid value: 150", causes=True)
    error = classify(422, body, verb="patch", target=VS, json_patch=True)
    assert type(error) is ClusterPermanentError
    assert "weight: Invalid value: 150" in str(error)


def test_not_found_and_unauthorized_are_permanent() -> None:
    assert isinstance(
        classify(404, _status(404, "NotFound", "nope"), verb="get", target=VS), NotFoundError
    )
    unauthorized = classify(401, "", verb="get", target=VS)
    assert isinstance(unauthorized, ClusterPermanentError)
    assert "credentials" in str(unauthorized)


def test_tls_failures_are_permanent_and_other_network_faults_temporary() -> None:
    tls = network_error(
        OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), verb="get", target=VS
    )
    assert isinstance(tls, ClusterPermanentError)
    assert isinstance(
        network_error(ConnectionRefusedError("refused"), verb="get", target=VS),
        ClusterTemporaryError,
    )
