"""Notifications to real HTTP receivers on loopback: signed, retried, bounded, secret-free.

Each receiver is an ``http.server`` in a thread (or, for the one that hangs, a socket that
accepts and never answers). Tests wait on conditions with bounded timeouts, never on sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from structlog.testing import capture_logs

from reconciler.config import NotifySettings, build
from reconciler.engine import experiment as engine
from reconciler.engine.experiment import Transition
from reconciler.notify import Notifier, NotifyConfig, Retry
from reconciler.notify.targets import WebhookTarget
from reconciler.server.telemetry import Telemetry
from tests.unit.test_engine_experiment import BLOB, SPEC

REPO = "https://git.example/env.git"
BRANCH = "reconciler-state"
FAST = Retry(attempts=3, initial=0.01, maximum=0.05, jitter=0.01)
WAIT = 10.0
"""Seconds a test waits for what must happen in well under one."""


def transition(now: float = 1_000.0) -> Transition:
    return engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=now)


def commit(n: int) -> str:
    return f"{n:040x}"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on loopback that records every request and answers from a script."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.script = list(statuses)
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} of {count} requests arrived in {timeout} s"
            )
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """Accepts connections and never answers (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self.accepted = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.accepted:
                self.connections.append(conn)
                self.accepted.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> None:
        with self.accepted:
            assert self.accepted.wait_for(lambda: len(self.connections) >= count, timeout)

    def close(self) -> None:
        self.sock.close()
        with self.accepted:
            for conn in self.connections:
                conn.close()


class Results:
    """``on_result``: every (target, result), with a way to wait for some."""

    def __init__(self, then: Callable[[str, str], None] | None = None) -> None:
        self.items: list[tuple[str, str]] = []
        self.changed = threading.Condition()
        self._then = then

    def __call__(self, target: str, result: str) -> None:
        if self._then is not None:
            self._then(target, result)
        with self.changed:
            self.items.append((target, result))
            self.changed.notify_all()

    def wait_for(self, wanted: list[tuple[str, str]], timeout: float = WAIT) -> None:
        with self.changed:
            done = self.changed.wait_for(
                lambda: all(self.items.count(w) >= wanted.count(w) for w in wanted), timeout
            )
            assert done, f"got {self.items}, waited for {wanted}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.close()


def config(**settings: object) -> NotifyConfig:
    return NotifyConfig.from_settings(NotifySettings(**settings), repo=REPO, branch=BRANCH)  # type: ignore[arg-type]


def test_the_webhook_gets_json_signed_over_the_exact_body_with_the_event_id(
    receiver: Receiver, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_text("first-key\n")
    notifier = Notifier(
        config(
            webhook_url=f"{receiver.url}/hooks/rollouts",
            webhook_secret_file=key,
            git_web_url="https://web.example/env/commit/{commit}",
        ),
        retry=FAST,
    )
    first = transition()
    notifier.announce([(first, commit(1))])
    (got,) = receiver.wait_for(1)
    assert got.path == "/hooks/rollouts"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Rollout-Event-Id"] == commit(1)
    assert got.headers["X-Rollout-Event"] == "started"
    expected = hmac.new(b"first-key", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Rollout-Signature"] == f"sha256={expected}"
    body = json.loads(got.body)
    assert body["id"] == body["commit"] == commit(1)
    assert body["rolloutId"] == first.state.id
    assert body["url"] == f"https://web.example/env/commit/{commit(1)}"
    assert (body["repo"], body["branch"]) == (REPO, BRANCH)

    key.write_text("rotated-key")  # read at each send: a rotated Secret counts at once
    notifier.announce([(transition(2_000.0), commit(2))])
    second = receiver.wait_for(2)[1]
    rotated = hmac.new(b"rotated-key", second.body, hashlib.sha256).hexdigest()
    assert second.headers["X-Rollout-Signature"] == f"sha256={rotated}"
    notifier.close(timeout=WAIT)


def test_apprise_json_and_form_urls_deliver_through_apprise(
    receiver: Receiver, tmp_path: Path
) -> None:
    urls = tmp_path / "apprise-urls"
    urls.write_text(
        "# where rollouts are announced\n"
        f"json://127.0.0.1:{receiver.port}/json-hook\n"
        "\n"
        f"form://127.0.0.1:{receiver.port}/form-hook\n"
    )
    notifier = Notifier(config(apprise_urls_file=urls), retry=FAST)
    assert notifier.targets == ("apprise-1 (json://)", "apprise-2 (form://)")
    notifier.announce([(transition(), commit(7))])
    requests = {r.path: r for r in receiver.wait_for(2)}
    as_json = json.loads(requests["/json-hook"].body)
    assert as_json["title"] == "bookinfo/productpage-canary: started"
    assert f"State commit: {commit(7)} on branch {BRANCH} of {REPO}" in as_json["message"]
    as_form = parse_qs(requests["/form-hook"].body.decode())
    assert as_form["title"] == ["bookinfo/productpage-canary: started"]
    assert commit(7) in as_form["message"][0]
    notifier.close(timeout=WAIT)


def test_a_hanging_receiver_delays_neither_the_tick_nor_the_other_target(
    receiver: Receiver, hanging: Hanging, tmp_path: Path
) -> None:
    urls = tmp_path / "apprise-urls"
    urls.write_text(f"json://127.0.0.1:{hanging.port}/never\n")
    results = Results()
    timeout = 20.0  # per attempt: the hanging target holds its own queue that long
    notifier = Notifier(
        config(webhook_url=receiver.url, apprise_urls_file=urls, timeout=timeout),
        retry=FAST,
        on_result=results,
    )
    started = time.monotonic()
    for n in range(20):
        notifier.announce([(transition(1_000.0 + n), commit(n))])
    queued = time.monotonic() - started
    receiver.wait_for(20)
    delivered = time.monotonic() - started
    hanging.wait_for(1)
    assert queued < 0.5  # a tick never waits for a receiver
    assert delivered < timeout / 4  # the good target never waited for the hanging one
    closing = time.monotonic()
    notifier.close(timeout=0.5)
    assert time.monotonic() - closing < 3.0  # the drain is bounded
    assert results.items.count(("webhook", "sent")) == 20
    assert results.items.count(("apprise-1", "dropped")) == 19  # the first one is in flight


def test_a_receiver_failing_twice_gets_the_event_once_after_retries() -> None:
    flaky = Receiver(statuses=(500, 503))
    try:
        results = Results()
        notifier = Notifier(config(webhook_url=flaky.url), retry=FAST, on_result=results)
        notifier.announce([(transition(), commit(3))])
        results.wait_for([("webhook", "sent")])
        assert notifier.wait_idle(WAIT)
        attempts = flaky.wait_for(3)
        assert len(attempts) == 3
        assert {a.headers["X-Rollout-Event-Id"] for a in attempts} == {commit(3)}
        assert len({a.body for a in attempts}) == 1  # the same bytes, the same signature
        assert results.items == [("webhook", "sent")]
        notifier.close(timeout=WAIT)
    finally:
        flaky.close()


def test_a_refusing_receiver_is_not_retried() -> None:
    refusing = Receiver(statuses=(404,))
    try:
        results = Results()
        notifier = Notifier(config(webhook_url=refusing.url), retry=FAST, on_result=results)
        notifier.announce([(transition(), commit(4))])
        results.wait_for([("webhook", "failed")])
        assert len(refusing.requests) == 1
        notifier.close(timeout=WAIT)
    finally:
        refusing.close()


def test_each_event_is_sent_once(receiver: Receiver) -> None:
    results = Results()
    notifier = Notifier(config(webhook_url=receiver.url), retry=FAST, on_result=results)
    first = transition()
    decided = engine.decide(first.state, "productpage-candidate", "won", "s")
    failing = f"{decided.state.id}: outcome promoted not pushed: main moved"
    for _ in range(3):  # the same report, and an outcome failing at every tick
        notifier.announce([(first, commit(5))], [], [failing])
    assert notifier.wait_idle(WAIT)
    got = receiver.wait_for(2)
    assert [r.headers["X-Rollout-Event"] for r in got] == ["started", "outcome-push-failed"]
    assert results.items == [("webhook", "sent")] * 2
    notifier.close(timeout=WAIT)


def test_only_the_configured_events_are_sent(receiver: Receiver) -> None:
    notifier = Notifier(config(webhook_url=receiver.url, events=("promoted",)), retry=FAST)
    notifier.announce([(transition(), commit(6))])
    assert notifier.wait_idle(WAIT)
    assert receiver.requests == []
    notifier.close(timeout=WAIT)


def test_a_full_queue_drops_new_events_and_counts_them(hanging: Hanging) -> None:
    telemetry = Telemetry()

    def count(target: str, result: str) -> None:
        telemetry.notifications.labels(REPO, target, result).inc()

    results = Results(then=count)
    notifier = Notifier(config(webhook_url=hanging.url), on_result=results, capacity=2)
    notifier.announce([(transition(), commit(0))])
    hanging.wait_for(1)  # in flight, its queue empty again
    with capture_logs() as logs:
        for n in range(1, 6):
            notifier.announce([(transition(1_000.0 + n), commit(n))])

    def dropped() -> float | None:
        labels = {"repo": REPO, "target": "webhook", "result": "dropped"}
        return telemetry.registry.get_sample_value("reconciler_notifications_total", labels)

    assert dropped() == 3
    assert [e["event"] for e in logs] == ["notifications_dropped"]  # once, not per event
    notifier.close(timeout=0.2)  # the two queued ones are given up, and counted
    assert dropped() == 5


def test_secrets_never_reach_the_logs(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = Receiver(statuses=(500,) * 10)
    closed = socket.create_server(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    secrets = ["T0KEN-in-path", "QUERY-s3cret", "hmac-key-s3cret", "APPRISE-pw", "APPRISE-T0KEN"]
    key = tmp_path / "key"
    key.write_text("hmac-key-s3cret")
    urls = tmp_path / "apprise-urls"
    urls.write_text(
        f"json://someone:APPRISE-pw@127.0.0.1:{refused_port}/APPRISE-T0KEN\n"
        f"json://127.0.0.1:{receiver.port}/APPRISE-T0KEN/ok\n"
    )
    caplog.set_level(logging.DEBUG)
    results = Results()
    try:
        with capture_logs() as logs:
            notifier = Notifier(
                config(
                    webhook_url=f"{failing.url}/hooks/T0KEN-in-path?token=QUERY-s3cret",
                    webhook_secret_file=key,
                    apprise_urls_file=urls,
                ),
                retry=Retry(attempts=2, initial=0.01, maximum=0.01, jitter=0),
                on_result=results,
            )
            notifier.announce([(transition(), commit(9))])
            results.wait_for(
                [("webhook", "failed"), ("apprise-1", "failed"), ("apprise-2", "sent")]
            )
            notifier.close(timeout=WAIT)
    finally:
        failing.close()
    assert receiver.wait_for(1)[0].path == "/APPRISE-T0KEN/ok"  # the secret was used, only
    shown = f"{logs!r}\n{caplog.text}"
    assert "notification_failed" in shown
    assert "JSON POST URL" in caplog.text  # Apprise's own debug lines were there, scrubbed
    for secret in secrets:
        assert secret not in shown
    labels = {e.get("target") for e in logs}
    assert labels >= {f"webhook http://127.0.0.1:{failing.port}", "apprise-1 (json://)"}


def test_wrong_settings_are_refused_naming_the_setting_never_the_url(tmp_path: Path) -> None:
    urls = tmp_path / "apprise-urls"
    urls.write_text("json://127.0.0.1/ok\nnosuchservice://TOKEN-SECRET@host/x\n")
    cases: list[tuple[dict[str, object], str]] = [
        ({"events": ("promote",)}, "notify.events: unknown event 'promote' (known: started"),
        ({"git_web_url": "https://web/commit/"}, "--git-web-url / gitWebURL must be"),
        (
            {"webhook_secret_file": tmp_path / "key"},
            "--notify-webhook-url / notify.webhookUrl is not",
        ),
        ({"webhook_url": "ftp://x/y"}, "--notify-webhook-url / notify.webhookUrl: must be"),
        (
            {"apprise_urls_file": urls},
            f"{urls}:2: Apprise has no service for this nosuchservice://",
        ),
        ({"timeout": 0.0}, "--notify-timeout / notify.timeout must be above 0"),
    ]
    for given, message in cases:
        with pytest.raises(ValueError) as caught:  # noqa: PT011 - the message is checked below
            config(**given)
        assert message in str(caught.value)
        assert "TOKEN-SECRET" not in str(caught.value)


def test_settings_come_from_flags_environment_and_file(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(
        "repo: /srv/env.git\n"
        "gitWebURL: https://github.com/org/env/commit/{commit}\n"
        "notify:\n  webhookUrl: https://hooks.example/from-file\n  events: [started, step]\n"
    )
    settings = build(
        flags={"notify_timeout": 3.0},
        environ={"RECONCILER_NOTIFY_EVENTS": "promoted,rolled-back"},
        file=file,
    )
    notify = settings.notify
    assert notify.webhook_url == "https://hooks.example/from-file"
    assert notify.events == ("promoted", "rolled-back")  # the environment over the file
    assert notify.timeout == 3.0
    assert notify.git_web_url == "https://github.com/org/env/commit/{commit}"
    made = NotifyConfig.from_settings(notify, repo=settings.repo.url, branch=BRANCH)
    assert [t.label for t in made.targets] == ["webhook https://hooks.example"]
    assert isinstance(made.targets[0], WebhookTarget)


def test_closing_gives_up_a_message_still_being_retried_within_the_bound() -> None:
    failing = Receiver(statuses=(500,) * 100)
    try:
        results = Results()
        slow = Retry(attempts=10, initial=30.0, maximum=30.0, jitter=0)
        notifier = Notifier(config(webhook_url=failing.url), retry=slow, on_result=results)
        notifier.announce([(transition(), commit(1))])
        failing.wait_for(1)  # the first attempt failed; the next is 30 s away
        closing = time.monotonic()
        notifier.close(timeout=0.2)
        assert time.monotonic() - closing < 2.0
        results.wait_for([("webhook", "failed")])
        assert len(failing.requests) == 1  # no attempt after the drain's time was up
    finally:
        failing.close()


def test_a_fault_in_the_mapping_is_logged_and_never_reaches_the_tick(receiver: Receiver) -> None:
    notifier = Notifier(config(webhook_url=receiver.url), retry=FAST)
    with capture_logs() as logs:
        notifier.announce([("not a transition", commit(1))])  # type: ignore[list-item]
    assert [e["event"] for e in logs] == ["notification_mapping_failed"]
    notifier.close(timeout=WAIT)
