"""The HTTP endpoints on a real loopback socket, hostile clients included.

Malformed requests are written on raw sockets (no client library sends them); slow
clients are real connections that stop sending half-way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import selectors
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from reconciler import logs
from reconciler.server.health import Health
from reconciler.server.http import MAX_BODY, HttpServer, Limits
from reconciler.server.telemetry import Telemetry
from reconciler.testing import DrivenClock

SECRET = b"topsecret"
PUSH = b'{"ref": "refs/heads/main"}'


def signed(body: bytes, **extra: str) -> dict[str, str]:
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push", **extra}


class Served:
    def __init__(self, tmp: Path, limits: Limits) -> None:
        self.clock = DrivenClock()
        self.telemetry = Telemetry()
        self.health = Health(stale_after=60)
        self.pushes = 0
        self.named: list[tuple[str, ...]] = []
        self.secret = tmp / "webhook-secret"
        self.secret.write_bytes(SECRET)
        self.limits = limits
        self.server = HttpServer(
            ("127.0.0.1", 0),
            telemetry=self.telemetry,
            health=self.health,
            clock=self.clock,
            on_push=self.pushed,
            webhook_secret_file=self.secret,
            limits=limits,
        )

    def pushed(self, repos: tuple[str, ...]) -> None:
        self.pushes += 1
        self.named.append(repos)

    def request(
        self,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5,
    ) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=10)

    def raw(self, head: bytes, body: bytes = b"", *, half_close: bool = False) -> tuple[int, bytes]:
        """Send ``head`` (and ``body``) as they are; the answer's status and body."""
        with self.connect() as sock:
            sock.sendall(head + body)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            return parse(read_to_end(sock))


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def parse(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post_head(*lines: str) -> bytes:
    return (
        "POST /webhook HTTP/1.1\r\nHost: t\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n"
    ).encode()


@pytest.fixture
def make_served(tmp_path: Path) -> Iterator[Callable[[Limits], Served]]:
    made: list[Served] = []

    def make(limits: Limits) -> Served:
        served = Served(tmp_path, limits)
        served.server.start()
        made.append(served)
        return served

    yield make
    for served in made:
        served.server.stop()


@pytest.fixture
def served(make_served: Callable[[Limits], Served]) -> Served:
    return make_served(Limits(read_timeout=5.0, max_connections=8))


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
    assert served.request("/webhook", PUSH, signed(PUSH))[0] == 202
    assert served.pushes == 1
    bad = {**signed(PUSH), "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert served.request("/webhook", PUSH, bad)[0] == 401
    assert served.request("/webhook", PUSH, {})[0] == 401
    assert served.pushes == 1


def test_a_replayed_github_delivery_is_answered_duplicate_and_ticks_once(served: Served) -> None:
    headers = signed(PUSH, **{"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    assert served.request("/webhook", PUSH, headers)[0] == 202
    status, body = served.request("/webhook", PUSH, headers)
    assert (status, served.pushes) == (200, 1)
    assert b"duplicate delivery" in body


# -- Content-Length -----------------------------------------------------------------------


def test_a_negative_content_length_is_400_at_once_and_no_body_is_read(served: Served) -> None:
    signature = signed(PUSH)["X-Hub-Signature-256"]
    with served.connect() as sock:
        # Only the head: the answer must come without a body byte sent (it was read(-1),
        # reading to the end of the stream before answering).
        sock.sendall(post_head("Content-Length: -1", f"X-Hub-Signature-256: {signature}"))
        status, body = parse(read_to_end(sock))
    assert (status, served.pushes) == (400, 0)
    assert b"non-negative integer" in body


def test_a_non_numeric_or_conflicting_content_length_is_400(served: Served) -> None:
    for lines in (
        ["Content-Length: abc"],
        ["Content-Length: 1e3"],
        ["Content-Length: 5", "Content-Length: 6"],
    ):
        assert served.raw(post_head(*lines), b"hello")[0] == 400, lines
    assert served.request("/healthz") == (200, b"ok\n")  # and the server lives on


def test_a_post_without_content_length_is_411(served: Served) -> None:
    assert served.raw(post_head(), half_close=True)[0] == 411
    chunked = post_head("Transfer-Encoding: chunked")
    assert served.raw(chunked, b"5\r\nhello\r\n0\r\n\r\n")[0] == 411


def test_a_body_over_the_cap_is_413_before_a_byte_of_it_is_sent(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post_head(f"Content-Length: {MAX_BODY + 1}"))
        assert parse(read_to_end(sock))[0] == 413
    assert served.raw(post_head("Content-Length: " + "9" * 400))[0] == 413


def test_a_body_shorter_than_its_length_is_400(served: Served) -> None:
    signature = [f"{name}: {value}" for name, value in signed(PUSH).items()]
    head = post_head(f"Content-Length: {len(PUSH) + 10}", *signature)
    assert served.raw(head, PUSH, half_close=True)[0] == 400
    assert served.pushes == 0


# -- slow clients ---------------------------------------------------------------------------


def serving() -> int:
    """The server's connection threads now (each is named ``http``)."""
    return sum(1 for thread in threading.enumerate() if thread.name == "http")


class Watch:
    """The server's connection threads, sampled while the test waits.

    Only those: threads of other tests' fixtures that end or start meanwhile (a process
    reader, a watcher) must not count against the server.
    """

    def __init__(self) -> None:
        self.baseline = serving()
        self.most = self.baseline

    def sample(self) -> None:
        self.most = max(self.most, serving())


def wait_closed(socks: list[socket.socket], watch: Watch, timeout: float) -> dict[int, bytes]:
    """Read every socket to its end (sampling the thread count); what each received."""
    received = {id(s): b"" for s in socks}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.settimeout(0)  # non-blocking: the selector says when to read
            selector.register(sock, selectors.EVENT_READ)
        while selector.get_map():
            watch.sample()
            assert time.monotonic() < deadline, "slow connections were not closed in time"
            for key, _ in selector.select(0.05):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                chunk = ready.recv(65536)
                received[id(ready)] += chunk
                if not chunk:
                    selector.unregister(ready)
    return received


def test_slow_clients_cost_a_bounded_number_of_threads_and_are_closed_after_the_timeout(
    make_served: Callable[[Limits], Served],
) -> None:
    limits = Limits(read_timeout=1.0, max_connections=4)
    served = make_served(limits)
    watch = Watch()
    opened = time.monotonic()
    slow = []
    for _ in range(12):  # three times the connections the server serves at once
        sock = served.connect()
        sock.sendall(post_head("Content-Length: 100") + b"half a bo")  # ...and no more
        slow.append(sock)
    answers: dict[str, tuple[int, bytes]] = {}

    def legitimate() -> None:
        answers["healthz"] = served.request("/healthz", timeout=30)
        answers["webhook"] = served.request("/webhook", PUSH, signed(PUSH), timeout=30)

    client = threading.Thread(target=legitimate)
    client.start()
    try:
        received = wait_closed(slow, watch, timeout=30)
    finally:
        for sock in slow:
            sock.close()
    closed = time.monotonic() - opened
    client.join(timeout=30)
    # Each slow one was answered 408 and closed, none before its read timeout ran out.
    assert all(data.startswith(b"HTTP/1.0 408") for data in received.values())
    assert closed >= 3 * limits.read_timeout  # 12 connections, 4 at a time, 1 s each
    # The server's connection threads never exceeded its slots.
    assert 1 <= watch.most - watch.baseline <= limits.max_connections
    assert answers == {"healthz": (200, b"ok\n"), "webhook": (202, b"push accepted\n")}
    assert served.pushes == 1


def test_a_client_trickling_bytes_is_closed_at_the_deadline_all_the_same(
    make_served: Callable[[Limits], Served],
) -> None:
    limits = Limits(read_timeout=1.0, max_connections=4)
    served = make_served(limits)
    trickle = b"POST /webhook HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"a" * 1000
    with served.connect() as sock:
        started = time.monotonic()
        sent = 0
        # A byte every 50 ms: each read waits far less than the timeout, the whole does not.
        while sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except ConnectionError:
                break
            sent += 1
            if answered(sock, within=0.05):
                break
        answer = read_to_end(sock)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.0 408")
    assert limits.read_timeout <= elapsed < limits.read_timeout + 5
    assert sent < len(trickle)


def answered(sock: socket.socket, *, within: float) -> bool:
    """Whether the server wrote (or closed) within ``within`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(within))


# -- clients that hang up -------------------------------------------------------------------


def test_a_client_hanging_up_mid_response_is_one_debug_line_and_no_traceback(
    make_served: Callable[[Limits], Served], capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(json=True, level="debug")  # the process's own JSON log, to stderr
    try:
        served = make_served(Limits(read_timeout=5.0, max_connections=4))
        for number in range(40_000):  # /metrics becomes about 8 MB
            served.telemetry.pushes.labels(f"repo-{number:06d}", "main", "accepted").inc()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
        sock.connect(("127.0.0.1", served.server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.0 200")
        # Hang up while most of the answer is still to be sent: a reset, not a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        err = ""
        deadline = time.monotonic() + 15
        while '"http_client_gone"' not in err:
            assert time.monotonic() < deadline, f"no http_client_gone line in:\n{err}"
            time.sleep(0.05)
            err += capsys.readouterr().err
        assert served.request("/healthz") == (200, b"ok\n")
        err += capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    gone = [line for line in lines if line["event"] == "http_client_gone"]
    assert len(gone) == 1
    assert gone[0]["level"] == "debug"
    assert gone[0]["path"] == "/metrics"
    assert gone[0]["error"] in {"BrokenPipeError", "ConnectionResetError"}
    assert "Traceback" not in err
