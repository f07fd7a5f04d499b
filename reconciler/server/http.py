"""The HTTP server: /metrics, /healthz, /readyz and /webhook, on one port, in a thread.

``/healthz`` answers 200 while the process lives. ``/readyz`` answers 200 when the last
tick succeeded recently (within ``stale_after`` seconds), 503 otherwise, with a JSON body
naming the age of that tick, the last error and this replica's role for each Env repo
(``leader``, ``follower`` or ``single`` without leader election). ``/webhook`` verifies
GitHub and GitLab push events (``reconciler.server.webhook``) and asks for a tick; it is
404 when no secret is configured. Never logs a request body or header.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.server import webhook
from reconciler.server.telemetry import Telemetry

log = structlog.get_logger("reconciler.server")
MAX_BODY = 5 * 1024 * 1024


@dataclass
class Health:
    """What /readyz reports; updated by the loop, read by the server (thread-safe)."""

    stale_after: float
    last_ok: float | None = None
    last_error: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tick_succeeded(self, now: float) -> None:
        """Record a tick that ended well."""
        with self._lock:
            self.last_ok = now
            self.last_error = None

    def tick_failed(self, error: str) -> None:
        """Record a tick that raised."""
        with self._lock:
            self.last_error = error

    def set_role(self, repo: str, role: str) -> None:
        """``leader``, ``follower`` or ``single`` for one Env repo."""
        with self._lock:
            self.roles[repo] = role

    def report(self, now: float) -> tuple[bool, dict[str, Any]]:
        """Whether the process is ready, and the details."""
        with self._lock:
            age = None if self.last_ok is None else round(now - self.last_ok, 3)
            ready = age is not None and age <= self.stale_after
            return ready, {
                "ready": ready,
                "lastSuccessfulTickAgeSeconds": age,
                "lastError": self.last_error,
                "roles": dict(self.roles),
            }


class HttpServer:
    """Serves the four endpoints until ``stop``."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        telemetry: Telemetry,
        health: Health,
        clock: Callable[[], float],
        on_push: Callable[[], None],
        webhook_secret_file: Path | None,
    ) -> None:
        """Bind the address (port 0 picks a free one); nothing is served before ``start``."""
        self._telemetry = telemetry
        self._health = health
        self._clock = clock
        self._on_push = on_push
        self._secret = webhook_secret_file
        self._server = ThreadingHTTPServer(address, self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        log.info("http_listening", port=self.port)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def get(self, path: str) -> tuple[int, bytes, str]:
        """Status, body and content type for a GET."""
        if path == "/metrics":
            return 200, generate_latest(self._telemetry.registry), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return 200, b"ok\n", "text/plain"
        if path == "/readyz":
            ready, detail = self._health.report(self._clock())
            body = (json.dumps(detail, sort_keys=True) + "\n").encode()
            return (200 if ready else 503), body, "application/json"
        return 404, b"not found\n", "text/plain"

    def post(
        self, path: str, headers: dict[str, str], length: int, read: Callable[[int], bytes]
    ) -> tuple[int, bytes, str]:
        """Status, body and content type for a POST; a verified push asks for a tick."""
        if path != "/webhook" or self._secret is None:
            return 404, b"not found\n", "text/plain"
        if length > MAX_BODY:
            return 413, b"too large\n", "text/plain"
        verdict = webhook.judge(headers, read(length), self._secret)
        log.info("webhook", status=verdict.status, result=verdict.message)
        if verdict.tick:
            self._on_push()
        return verdict.status, (verdict.message + "\n").encode(), "text/plain"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(*server.get(self.path))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                headers = dict(self.headers.items())
                self._send(*server.post(self.path, headers, length, self.rfile.read))

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
                """Requests are not logged line by line (the webhook logs its verdicts)."""

        return Handler
