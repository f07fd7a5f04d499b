"""Retries against a stand-in API server that answers 429 and 5xx on purpose.

The real kube-apiserver does not fail on demand, so these tests point the client (through
a kubeconfig, as in production) at a small HTTP server on loopback that plays a busy or
broken API server. The client itself is the real one, not patched.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.cluster.client import Kube, KubeSettings, RetryPolicy, connect
from reconciler.cluster.errors import (
    ClusterTemporaryError,
    ConflictError,
    ForbiddenError,
    Target,
)
from tests.fixtures.kube import plain_kubeconfig

pytestmark = pytest.mark.integration

TARGET = Target("virtualservices.networking.istio.io", "bookinfo", "productpage")
PATH = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/productpage"


@dataclass
class Script:
    """What the stand-in answers, in order (the last answer repeats)."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_PATCH(self) -> None:
            self._answer()

        def _answer(self) -> None:
            script.seen.append(f"{self.command} {self.path}")
            index = min(len(script.seen), len(script.answers)) - 1
            code, headers = script.answers[index]
            body = (
                {"kind": "VirtualService", "metadata": {"name": "productpage"}}
                if code == 200
                else {"kind": "Status", "code": code, "reason": "x", "message": f"answer {code}"}
            )
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            del format, args

    return Handler


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[tuple[Script, Path]]:
    script = Script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = plain_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.server_port}")
    try:
        yield script, kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _kube(kubeconfig: Path, waits: list[float], attempts: int = 4) -> Kube:
    return connect(
        KubeSettings(
            kubeconfig=str(kubeconfig),
            retry=RetryPolicy(attempts=attempts, initial_wait=0.1, max_wait=5.0),
        ),
        sleep=waits.append,
    )


def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(
    stand_in: tuple[Script, Path],
) -> None:
    script, kubeconfig = stand_in
    script.answers = [(503, {}), (429, {"Retry-After": "3"}), (500, {}), (200, {})]
    waits: list[float] = []
    kube = _kube(kubeconfig, waits)
    try:
        result = kube.request("get", "GET", PATH, target=TARGET)
    finally:
        kube.close()
    assert result["kind"] == "VirtualService"
    assert len(script.seen) == 4
    assert len(waits) == 3
    assert waits[1] >= 3.0  # the server asked for 3 s


def test_retries_are_bounded(stand_in: tuple[Script, Path]) -> None:
    script, kubeconfig = stand_in
    script.answers = [(503, {})]
    waits: list[float] = []
    kube = _kube(kubeconfig, waits, attempts=3)
    try:
        with pytest.raises(ClusterTemporaryError, match="unavailable or busy"):
            kube.request("get", "GET", PATH, target=TARGET)
    finally:
        kube.close()
    assert len(script.seen) == 3
    assert all(w <= 5.0 for w in waits)


@pytest.mark.parametrize(("code", "error"), [(403, ForbiddenError), (409, ConflictError)])
def test_forbidden_and_conflict_are_not_retried_here(
    stand_in: tuple[Script, Path], code: int, error: type[Exception]
) -> None:
    script, kubeconfig = stand_in
    script.answers = [(code, {})]
    waits: list[float] = []
    kube = _kube(kubeconfig, waits)
    try:
        with pytest.raises(error):
            kube.request(
                "patch",
                "PATCH",
                PATH,
                target=TARGET,
                body=[],
                content_type="application/json-patch+json",
            )
    finally:
        kube.close()
    assert len(script.seen) == 1
    assert waits == []


def test_an_unreachable_server_is_a_bounded_temporary_error(tmp_path: Path) -> None:
    kubeconfig = plain_kubeconfig(tmp_path / "kubeconfig")
    waits: list[float] = []
    kube = _kube(kubeconfig, waits, attempts=2)
    try:
        with pytest.raises(ClusterTemporaryError, match="no answer from the API server"):
            kube.request("get", "GET", PATH, target=TARGET)
    finally:
        kube.close()
    assert len(waits) == 1


def test_an_api_server_that_keeps_failing_is_not_asked_until_the_cooldown_ends(
    stand_in: tuple[Script, Path],
) -> None:
    script, kubeconfig = stand_in
    no_headers: dict[str, str] = {}
    script.answers = [(503, no_headers)] * 6 + [(200, no_headers)]
    now = [0.0]
    kube = connect(
        KubeSettings(
            kubeconfig=str(kubeconfig),
            retry=RetryPolicy(attempts=2, initial_wait=0.1, max_wait=1.0),
            trip_after=3,
            cooldown_seconds=10.0,
        ),
        sleep=lambda _seconds: None,
        clock=lambda: now[0],
    )
    try:
        for _ in range(3):
            with pytest.raises(ClusterTemporaryError, match="unavailable or busy"):
                kube.request("get", "GET", PATH, target=TARGET)
        assert len(script.seen) == 6
        # open: nothing is sent, and the error says for how long
        now[0] = 9.0
        with pytest.raises(ClusterTemporaryError, match="not asked for 1 s more: 3 requests"):
            kube.request("get", "GET", PATH, target=TARGET)
        assert len(script.seen) == 6
        # after the cooldown one request goes out; the server answers, so all do again
        now[0] = 10.5
        assert kube.request("get", "GET", PATH, target=TARGET)["kind"] == "VirtualService"
        assert kube.request("get", "GET", PATH, target=TARGET)["kind"] == "VirtualService"
        assert len(script.seen) == 8
    finally:
        kube.close()


def test_answers_that_refuse_do_not_open_the_circuit(stand_in: tuple[Script, Path]) -> None:
    script, kubeconfig = stand_in
    script.answers = [(403, {})]
    kube = connect(
        KubeSettings(kubeconfig=str(kubeconfig), trip_after=2), sleep=lambda _seconds: None
    )
    try:
        for _ in range(4):
            with pytest.raises(ForbiddenError):
                kube.request("get", "GET", PATH, target=TARGET)
    finally:
        kube.close()
    assert len(script.seen) == 4  # every one was sent: the server answers, it only refuses
