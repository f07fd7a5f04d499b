"""Verify GitHub and GitLab push webhooks against a shared secret.

GitHub signs the body with HMAC-SHA256 (``X-Hub-Signature-256: sha256=<hex>``); GitLab
sends the secret itself (``X-Gitlab-Token``). Both are compared in constant time. The
secret is read from its file at each request, so a rotated Kubernetes Secret works without
a restart. Only push events ask for a tick; a ping is answered and ignored. Pure apart
from reading the secret file; never logs the secret or the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Verdict:
    """What to answer, and whether the event asks for a tick."""

    status: int
    message: str
    tick: bool = False


def judge(headers: Mapping[str, str], body: bytes, secret_file: Path) -> Verdict:
    """Check one webhook request (header names are matched case-insensitively)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        secret = secret_file.read_bytes().strip()
    except OSError:
        return Verdict(503, "webhook secret unavailable")
    if not secret:
        return Verdict(503, "webhook secret is empty")
    if "x-hub-signature-256" in lowered:
        return _github(lowered, body, secret)
    if "x-gitlab-token" in lowered:
        return _gitlab(lowered, secret)
    return Verdict(401, "missing signature (X-Hub-Signature-256 or X-Gitlab-Token)")


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
