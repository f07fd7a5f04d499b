"""The HTTP endpoints on a real loopback socket."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.server.http import Health, HttpServer
from reconciler.server.telemetry import Telemetry
from reconciler.testing import DrivenClock


class Served:
    def __init__(self, tmp: Path) -> None:
        self.clock = DrivenClock()
        self.telemetry = Telemetry()
        self.health = Health(stale_after=60)
        self.pushes = 0
        self.secret = tmp / "webhook-secret"
        self.secret.write_text("topsecret")
        self.server = HttpServer(
            ("127.0.0.1", 0),
            telemetry=self.telemetry,
            health=self.health,
            clock=self.clock,
            on_push=self.pushed,
            webhook_secret_file=self.secret,
        )

    def pushed(self) -> None:
        self.pushes += 1

    def request(
        self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    s.server.start()
    yield s
    s.server.stop()


def test_healthz_answers_while_the_process_lives(served: Served) -> None:
    assert served.request("/healthz") == (200, b"ok\n")


def test_readyz_follows_the_last_successful_tick_and_shows_roles(served: Served) -> None:
    status, body = served.request("/readyz")
    assert status == 503
    assert json.loads(body)["ready"] is False
    served.health.tick_succeeded(served.clock())
    served.health.set_role("https://git.example/env.git", "leader")
    status, body = served.request("/readyz")
    assert status == 200
    assert json.loads(body)["roles"] == {"https://git.example/env.git": "leader"}
    served.clock.advance(61)
    assert served.request("/readyz")[0] == 503


def test_metrics_exposes_the_process_metrics(served: Served) -> None:
    served.telemetry.pushes.labels("env", "reconciler-state", "accepted").inc()
    status, body = served.request("/metrics")
    assert status == 200
    assert (
        b'reconciler_git_pushes_total{branch="reconciler-state",repo="env",result="accepted"} 1.0'
        in body
    )
    assert b"reconciler_tick_duration_seconds" in body


def test_webhook_ticks_only_for_a_verified_push(served: Served) -> None:
    body = b'{"ref": "refs/heads/main"}'
    good = "sha256=" + hmac.new(b"topsecret", body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": good, "X-GitHub-Event": "push"}
    assert served.request("/webhook", body, headers)[0] == 202
    assert served.pushes == 1
    bad = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert served.request("/webhook", body, bad)[0] == 401
    assert served.request("/webhook", body, {})[0] == 401
    assert served.pushes == 1
