import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.server.webhook import DELIVERIES_REMEMBERED, Deliveries, Verdict
from reconciler.server.webhook import judge as judge_with


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    return path


def judge(headers: Mapping[str, str], body: bytes, secret_file: Path) -> Verdict:
    """One request judged by a server that has seen no delivery before."""
    return judge_with(headers, body, secret_file, Deliveries())


def github(
    body: bytes, key: bytes = b"s3cret", event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Event": event}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def test_a_signed_github_push_asks_for_a_tick(secret: Path) -> None:
    verdict = judge(github(b'{"ref":"refs/heads/main"}'), b'{"ref":"refs/heads/main"}', secret)
    assert (verdict.status, verdict.tick) == (202, True)


def test_a_bad_or_missing_signature_gets_401_and_no_tick(secret: Path) -> None:
    body = b"{}"
    assert judge(github(body, key=b"wrong"), body, secret).status == 401
    tampered = judge(github(body), b'{"x": 1}', secret)
    assert (tampered.status, tampered.tick) == (401, False)
    assert judge({}, body, secret).status == 401
    assert (
        judge({"X-Gitlab-Token": "nope", "X-Gitlab-Event": "Push Hook"}, body, secret).status == 401
    )


def test_gitlab_push_with_the_token_and_other_events_without_a_tick(secret: Path) -> None:
    push = judge({"x-gitlab-token": "s3cret", "x-gitlab-event": "Push Hook"}, b"{}", secret)
    assert (push.status, push.tick) == (202, True)
    tag = judge({"X-Gitlab-Token": "s3cret", "X-Gitlab-Event": "Tag Push Hook"}, b"{}", secret)
    assert tag.tick is False
    ping = judge(github(b"{}", event="ping"), b"{}", secret)
    assert (ping.status, ping.tick) == (200, False)


def test_a_missing_secret_file_refuses_every_delivery(tmp_path: Path) -> None:
    verdict = judge(github(b"{}"), b"{}", tmp_path / "absent")
    assert (verdict.status, verdict.tick) == (503, False)


def test_a_replayed_github_delivery_is_answered_duplicate_and_asks_for_no_tick(
    secret: Path,
) -> None:
    deliveries = Deliveries()
    body = b'{"ref":"refs/heads/main"}'
    headers = github(body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    first = judge_with(headers, body, secret, deliveries)
    assert (first.status, first.tick, first.delivery) == (
        202,
        True,
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    )
    again = judge_with(headers, body, secret, deliveries)
    assert (again.status, again.tick) == (200, False)
    assert "duplicate delivery" in again.message
    other = judge_with(github(body, delivery="another-id"), body, secret, deliveries)
    assert (other.status, other.tick) == (202, True)


def test_gitlab_retries_are_recognised_by_idempotency_key_or_event_uuid(secret: Path) -> None:
    deliveries = Deliveries()
    push = {"X-Gitlab-Token": "s3cret", "X-Gitlab-Event": "Push Hook"}
    by_uuid = {**push, "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e"}
    assert judge_with(by_uuid, b"{}", secret, deliveries).tick is True
    assert judge_with(by_uuid, b"{}", secret, deliveries).message.startswith("duplicate delivery")
    # A retry keeps its Idempotency-Key (the event UUID is not what identifies it then).
    first = {**push, "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"}
    retry = {**first, "X-Gitlab-Event-UUID": "a-new-uuid"}
    assert judge_with(first, b"{}", secret, deliveries).tick is True
    replay = judge_with(retry, b"{}", secret, deliveries)
    assert (replay.status, replay.tick) == (200, False)


def test_a_refused_delivery_is_not_remembered_so_its_genuine_retry_still_ticks(
    secret: Path, tmp_path: Path
) -> None:
    deliveries = Deliveries()
    body = b"{}"
    forged = github(body, key=b"wrong", delivery="d-1")
    assert judge_with(forged, body, secret, deliveries).status == 401
    unavailable = judge_with(github(body, delivery="d-1"), body, tmp_path / "absent", deliveries)
    assert unavailable.status == 503
    assert len(deliveries) == 0
    assert judge_with(github(body, delivery="d-1"), body, secret, deliveries).tick is True


def test_deliveries_without_an_id_are_never_taken_for_duplicates(secret: Path) -> None:
    deliveries = Deliveries()
    for _ in range(3):
        assert judge_with(github(b"{}"), b"{}", secret, deliveries).tick is True
    assert len(deliveries) == 0


@given(st.lists(st.text(min_size=1, max_size=40), max_size=300), st.integers(1, 50))
def test_deliveries_stay_bounded_and_remember_the_most_recent_ids(
    ids: list[str], capacity: int
) -> None:
    deliveries = Deliveries(capacity)
    recent: list[str] = []  # a model: most recently seen last, distinct
    for delivery in ids:
        assert deliveries.first_time(delivery) == (delivery not in recent)
        if delivery in recent:
            recent.remove(delivery)
        recent.append(delivery)
        recent = recent[-capacity:]
        assert len(deliveries) == len(recent) <= capacity


def test_the_default_bound_is_a_few_thousand_ids() -> None:
    deliveries = Deliveries()
    assert deliveries.capacity == DELIVERIES_REMEMBERED == 4096
    for number in range(DELIVERIES_REMEMBERED + 100):
        deliveries.first_time(f"delivery-{number}")
    assert len(deliveries) == DELIVERIES_REMEMBERED
    assert deliveries.first_time("delivery-0") is True  # the oldest were forgotten
    assert deliveries.first_time(f"delivery-{DELIVERIES_REMEMBERED + 99}") is False
