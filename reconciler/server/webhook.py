"""Verify GitHub and GitLab push webhooks against a shared secret.

GitHub signs the body with HMAC-SHA256 (``X-Hub-Signature-256: sha256=<hex>``); GitLab
sends the secret itself (``X-Gitlab-Token``). Both are compared in constant time. The
secret is read from its file at each request, so a rotated Kubernetes Secret works without
a restart. Only push events ask for a tick; a ping is answered and ignored. A verified
delivery whose id was seen before (GitHub's ``X-GitHub-Delivery``, GitLab's
``Idempotency-Key`` or ``X-Gitlab-Event-UUID``: a redelivery, a retry, a replay) is answered
"duplicate delivery" and asks for nothing (``Deliveries``). Pure apart from reading the
secret file; never logs the secret or the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DELIVERIES_REMEMBERED = 4096
"""Delivery ids remembered, the least recently seen forgotten first: 4,096 digests of 32
bytes, about 0.5 MB with the dictionary, hours of deliveries for a busy repo, and a replay
is usually resent within minutes."""


@dataclass(frozen=True)
class Verdict:
    """What to answer, and whether the event asks for a tick."""

    status: int
    message: str
    tick: bool = False
    delivery: str | None = None
    """The sender's delivery id, for the log (only once the request is verified)."""
    repos: tuple[str, ...] = ()
    """The repository URLs a verified push names (none: it names no repository)."""


class Deliveries:
    """The ids of the last ``capacity`` verified deliveries (thread-safe)."""

    def __init__(self, capacity: int = DELIVERIES_REMEMBERED) -> None:
        """Remember up to ``capacity`` ids."""
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery: str) -> bool:
        """Whether ``delivery`` is new; it is remembered (as most recent) either way."""
        # A digest: every entry costs the same, whatever length the sender chose.
        key = hashlib.sha256(delivery.encode("utf-8", "surrogateescape")).digest()
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        """How many ids are remembered now."""
        with self._lock:
            return len(self._seen)


def judge(
    headers: Mapping[str, str], body: bytes, secret_file: Path, deliveries: Deliveries
) -> Verdict:
    """Check one webhook request (header names are matched case-insensitively)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        secret = secret_file.read_bytes().strip()
    except OSError:
        return Verdict(503, "webhook secret unavailable")
    if not secret:
        return Verdict(503, "webhook secret is empty")
    if "x-hub-signature-256" in lowered:
        verdict = _github(lowered, body, secret)
        delivery = lowered.get("x-github-delivery")
    elif "x-gitlab-token" in lowered:
        verdict = _gitlab(lowered, secret)
        # Idempotency-Key stays the same across GitLab's retries of one delivery.
        delivery = lowered.get("idempotency-key") or lowered.get("x-gitlab-event-uuid")
    else:
        return Verdict(401, "missing signature (X-Hub-Signature-256 or X-Gitlab-Token)")
    if verdict.status >= 400:  # noqa: PLR2004 - refused: remember nothing
        return verdict
    if delivery and not deliveries.first_time(delivery):
        return Verdict(200, "duplicate delivery, ignored", delivery=delivery)
    repos = named_repos(body) if verdict.tick else ()
    return Verdict(verdict.status, verdict.message, verdict.tick, delivery or None, repos)


_URL_FIELDS = {
    # GitHub (and Gitea, Forgejo, Gogs: the same names)
    "repository": ("clone_url", "ssh_url", "git_url", "html_url", "url"),
    # GitLab
    "project": ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url"),
}
MAX_URL = 2048


def named_repos(body: bytes) -> tuple[str, ...]:
    """The repository URLs a push event's JSON names (bounded; none when it is not JSON).

    Only called on a verified body, so its content is the Git host's; still, only a few
    short strings are kept.
    """
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return ()
    if not isinstance(event, dict):
        return ()
    found: list[str] = []
    for section, names in _URL_FIELDS.items():
        part = event.get(section)
        if not isinstance(part, dict):
            continue
        for name in names:
            value = part.get(name)
            if isinstance(value, str) and 0 < len(value) <= MAX_URL and value not in found:
                found.append(value)
    return tuple(found)


def _github(headers: Mapping[str, str], body: bytes, secret: bytes) -> Verdict:
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), headers["x-hub-signature-256"].encode()):
        return Verdict(401, "bad signature")
    event = headers.get("x-github-event", "")
    if event == "ping":
        return Verdict(200, "pong")
    return _push(event, "push")


def _gitlab(headers: Mapping[str, str], secret: bytes) -> Verdict:
    if not hmac.compare_digest(secret, headers["x-gitlab-token"].encode()):
        return Verdict(401, "bad token")
    return _push(headers.get("x-gitlab-event", ""), "Push Hook")


def _push(event: str, push_name: str) -> Verdict:
    if event != push_name:
        return Verdict(202, f"ignored event {event or '(none)'}")
    return Verdict(202, "push accepted", tick=True)
