import hashlib
import hmac
from pathlib import Path

import pytest

from reconciler.server.webhook import judge


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    return path


def github(body: bytes, key: bytes = b"s3cret", event: str = "push") -> dict[str, str]:
    signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "X-GitHub-Event": event}


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
