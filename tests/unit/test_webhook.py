import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import repo_key
from reconciler.server.webhook import (
    DELIVERIES_REMEMBERED,
    MAX_URL,
    Deliveries,
    Verdict,
    named_repos,
)
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


GITHUB_PUSH = {
    "ref": "refs/heads/main",
    "repository": {
        "full_name": "org/env",
        "clone_url": "https://github.com/org/env.git",
        "ssh_url": "git@github.com:org/env.git",
        "git_url": "git://github.com/org/env.git",
        "html_url": "https://github.com/org/env",
        "url": "https://github.com/org/env",
        "owner": {"login": "org", "url": "https://api.github.com/users/org"},
        "size": 42,
    },
}
GITLAB_PUSH = {
    "object_kind": "push",
    "ref": "refs/heads/main",
    "project": {
        "path_with_namespace": "group/env",
        "git_http_url": "https://gitlab.example/group/env.git",
        "git_ssh_url": "git@gitlab.example:group/env.git",
        "web_url": "https://gitlab.example/group/env",
        "http_url": "https://gitlab.example/group/env.git",
        "ssh_url": "git@gitlab.example:group/env.git",
    },
    "repository": {
        "name": "env",
        "url": "git@gitlab.example:group/env.git",
        "homepage": "https://gitlab.example/group/env",
        "git_http_url": "https://gitlab.example/group/env.git",
        "git_ssh_url": "git@gitlab.example:group/env.git",
    },
}
GITEA_PUSH = {
    "ref": "refs/heads/main",
    "repository": {
        "full_name": "org/env",
        "clone_url": "https://gitea.example/org/env.git",
        "ssh_url": "git@gitea.example:org/env.git",
        "html_url": "https://gitea.example/org/env",
        "private": True,
    },
}
BITBUCKET_PUSH = {
    "push": {"changes": [{"new": {"name": "main", "type": "branch"}}]},
    "repository": {
        "full_name": "org/env",
        "links": {"html": {"href": "https://bitbucket.org/org/env"}},
    },
}


def body_of(payload: object) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("payload", "urls"),
    [
        (
            GITHUB_PUSH,
            (
                "https://github.com/org/env.git",
                "git@github.com:org/env.git",
                "git://github.com/org/env.git",
                "https://github.com/org/env",
            ),
        ),
        (
            GITLAB_PUSH,
            (
                "git@gitlab.example:group/env.git",
                "https://gitlab.example/group/env.git",
                "https://gitlab.example/group/env",
            ),
        ),
        (
            GITEA_PUSH,
            (
                "https://gitea.example/org/env.git",
                "git@gitea.example:org/env.git",
                "https://gitea.example/org/env",
            ),
        ),
    ],
    ids=["github", "gitlab", "gitea"],
)
def test_a_push_names_its_repository_by_every_url_the_host_gives(
    payload: object, urls: tuple[str, ...]
) -> None:
    assert named_repos(body_of(payload)) == urls


def test_every_url_a_push_names_is_one_repo_to_the_runner() -> None:
    for payload, key in [
        (GITHUB_PUSH, "github.com/org/env"),
        (GITLAB_PUSH, "gitlab.example/group/env"),
        (GITEA_PUSH, "gitea.example/org/env"),
    ]:
        assert {repo_key(url) for url in named_repos(body_of(payload))} == {key}


def test_a_push_the_code_cannot_read_names_no_repository_so_every_repo_ticks() -> None:
    # Bitbucket names its repository only in nested links: none is found.
    assert named_repos(body_of(BITBUCKET_PUSH)) == ()


def test_a_verified_push_carries_the_urls_it_names(secret: Path) -> None:
    body = body_of(GITHUB_PUSH)
    verdict = judge(github(body, delivery="d-1"), body, secret)
    assert verdict.tick is True
    assert verdict.repos[0] == "https://github.com/org/env.git"
    gitlab = {
        "X-Gitlab-Token": "s3cret",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Event-UUID": "u-1",
    }
    assert (
        judge(gitlab, body_of(GITLAB_PUSH), secret).repos[0] == "git@gitlab.example:group/env.git"
    )


def test_a_push_without_a_delivery_id_still_wakes_only_the_repo_it_names(secret: Path) -> None:
    body = body_of(GITHUB_PUSH)
    verdict = judge(github(body), body, secret)
    assert (verdict.tick, verdict.delivery) == (True, None)
    assert "https://github.com/org/env.git" in verdict.repos
    gitlab = {"X-Gitlab-Token": "s3cret", "X-Gitlab-Event": "Push Hook"}
    assert (
        judge(gitlab, body_of(GITLAB_PUSH), secret).repos[0] == "git@gitlab.example:group/env.git"
    )


def test_what_is_not_a_verified_push_names_no_repository(secret: Path) -> None:
    body = body_of(GITHUB_PUSH)
    forged = judge(github(body, key=b"wrong", delivery="d-1"), body, secret)
    ping = judge(github(body, event="ping", delivery="d-2"), body, secret)
    issue = judge(github(body, event="issues", delivery="d-3"), body, secret)
    for verdict in (forged, ping, issue):
        assert (verdict.tick, verdict.repos) == (False, ())
    deliveries = Deliveries()
    judge_with(github(body, delivery="d-4"), body, secret, deliveries)
    again = judge_with(github(body, delivery="d-4"), body, secret, deliveries)
    assert (again.tick, again.repos) == (False, ())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[1, 2, 3]",
        b'"https://github.com/org/env.git"',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"repository": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"repository": {"clone_url": ' + b"1" * 5000 + b"}}",
        body_of({"repository": ["https://github.com/org/env.git"]}),
        body_of({"repository": "https://github.com/org/env.git"}),
        body_of({"project": None, "repository": 7}),
        body_of(
            {
                "repository": {
                    "clone_url": ["https://github.com/org/env.git"],
                    "ssh_url": {"href": "git@github.com:org/env.git"},
                    "git_url": 12,
                    "html_url": None,
                    "url": True,
                },
                "project": {"git_http_url": 1.5, "web_url": ""},
            }
        ),
        body_of({"repository": {"clone_url": "https://github.com/" + "x" * 5000}}),
        body_of({"repository": {f"clone_url{i}": "u" for i in range(50_000)}}),
    ],
    ids=lambda body: repr(body[:40]),
)
def test_a_hostile_payload_names_no_repository_and_raises_nothing(body: bytes) -> None:
    assert named_repos(body) == ()


def test_urls_are_bounded_in_length_and_number() -> None:
    longest = "https://git.example/" + "x" * (MAX_URL - 20)
    payload = {
        "repository": {
            name: longest if name == "url" else "y" * (MAX_URL + 1)
            for name in ("clone_url", "ssh_url", "git_url", "html_url", "url")
        },
        "project": {"web_url": longest},
    }
    assert named_repos(body_of(payload)) == (longest,)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["clone_url", "ssh_url", "git_url", "html_url", "url", "git_http_url", "git_ssh_url", "web_url"]
)


@given(
    st.dictionaries(
        st.sampled_from(["repository", "project", "ref", "commits"]),
        st.one_of(st.dictionaries(FIELDS, JSON), JSON),
    )
)
def test_any_json_push_gives_only_short_strings_found_in_it(payload: dict[str, object]) -> None:
    found = named_repos(json.dumps(payload).encode())
    assert len(found) == len(set(found)) <= 10
    strings = [
        value
        for section in ("repository", "project")
        if isinstance(part := payload.get(section), dict)
        for value in part.values()
        if isinstance(value, str)
    ]
    for url in found:
        assert 0 < len(url) <= MAX_URL
        assert url in strings


@given(st.binary(max_size=300))
def test_any_bytes_give_a_tuple_of_urls_without_raising(body: bytes) -> None:
    assert all(isinstance(url, str) for url in named_repos(body))
