"""The HTTP server: /metrics, /healthz, /readyz and /webhook, on one port, in a thread.

``/healthz`` answers 200 while the process lives. ``/readyz`` answers 200 when some repo's
tick succeeded recently (``reconciler.server.health``), 503 otherwise, with a JSON body
naming the age of that tick, the last error and, for each Env repo, this replica's role
(``leader``, ``follower`` or ``single`` without leader election) and its own health.
``/webhook`` verifies GitHub and GitLab push events (``reconciler.server.webhook``) and
asks for a tick of the repos the event names (every repo when it names none); it is
404 when no secret is configured; a delivery seen before (by its id) is answered
"duplicate delivery" and asks for nothing. Connections are bounded in number and in time
(``reconciler.server.connections``): slow clients cost at most ``max_connections``
threads, each for at most ``read_timeout`` seconds. A client that hangs up is one debug
line. Never logs a request body or header.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.config import ServerSettings
from reconciler.server import webhook
from reconciler.server.connections import (
    BoundedServer,
    DeadlineReader,
    RequestTooSlowError,
    SocketWriter,
    body_length,
)
from reconciler.server.health import Health
from reconciler.server.telemetry import Telemetry

log = structlog.get_logger("reconciler.server")
MAX_BODY = 5 * 1024 * 1024
"""Largest webhook body read: a push event is a few KB (a few hundred KB for large pushes)."""


@dataclass(frozen=True)
class Limits:
    """How long and how many: the server's settings (see ``reconciler.config``)."""

    read_timeout: float
    """Seconds a client has to send a whole request, and to take each write of the answer."""
    max_connections: int
    """Connections served at once (one thread each); more wait in the listen queue."""

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Limits:
        """The limits of the ``http`` settings."""
        return cls(settings.read_timeout, settings.max_connections)


class HttpServer:
    """Serves the four endpoints until ``stop``."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        telemetry: Telemetry,
        health: Health,
        clock: Callable[[], float],
        on_push: Callable[[tuple[str, ...]], object],
        webhook_secret_file: Path | None,
        limits: Limits,
    ) -> None:
        """Bind the address (port 0 picks a free one); nothing is served before ``start``."""
        self._telemetry = telemetry
        self._health = health
        self._clock = clock
        self._on_push = on_push
        self._secret = webhook_secret_file
        self._limits = limits
        self._deliveries = webhook.Deliveries()
        self._handler = self._handler_class()
        self._server = BoundedServer(
            address, self._serve_connection, max_connections=limits.max_connections
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="http-accept")

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        log.info(
            "http_listening",
            port=self.port,
            read_timeout=self._limits.read_timeout,
            max_connections=self._limits.max_connections,
        )

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.stop()
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
        """Status, body and content type for a POST; a verified push asks for a tick.

        ``length`` was checked against ``MAX_BODY`` already (``body_length``).
        """
        if path != "/webhook" or self._secret is None:
            return 404, b"not found\n", "text/plain"
        body = read(length)
        if len(body) < length:
            return 400, b"body shorter than its Content-Length\n", "text/plain"
        verdict = webhook.judge(headers, body, self._secret, self._deliveries)
        log.info(
            "webhook", status=verdict.status, result=verdict.message, delivery=verdict.delivery
        )
        if verdict.tick:
            self._on_push(verdict.repos)
        return verdict.status, (verdict.message + "\n").encode(), "text/plain"

    def _serve_connection(self, sock: socket.socket, client: tuple[str, int]) -> None:
        """Answer one request on ``sock`` (on the connection's own thread)."""
        self._handler(sock, client, self._server)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - one class, small methods
        server = self
        limits = self._limits

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so the read deadline is the request's.

            def setup(self) -> None:
                self.connection = self.request
                deadline = time.monotonic() + limits.read_timeout
                self.rfile = io.BufferedReader(DeadlineReader(self.connection, deadline))
                self.wfile = SocketWriter(self.connection, limits.read_timeout)

            def handle(self) -> None:
                try:
                    self.handle_one_request()
                except RequestTooSlowError:
                    log.debug("http_request_too_slow", read_timeout=limits.read_timeout)
                    self._answer_quietly(408, b"request not received in time\n")
                except ConnectionError as exc:
                    # The client hung up (BrokenPipe, ConnectionReset): nothing to answer.
                    log.debug("http_client_gone", path=self._path(), error=type(exc).__name__)
                except TimeoutError:
                    log.debug("http_client_not_reading", path=self._path())

            def do_GET(self) -> None:
                self._send(*server.get(self.path))

            def do_POST(self) -> None:
                length = body_length(
                    self.headers.get_all("Content-Length") or [],
                    transfer_encoding="Transfer-Encoding" in self.headers,
                    cap=MAX_BODY,
                )
                if isinstance(length, tuple):
                    status, message = length
                    self._send(status, (message + "\n").encode(), "text/plain")
                    return
                headers = dict(self.headers.items())
                self._send(*server.post(self.path, headers, length, self.rfile.read))

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def _answer_quietly(self, status: int, body: bytes) -> None:
                # Best effort: a client too slow to send may be too slow to read as well.
                head = f"HTTP/1.0 {status} {self.responses[status][0]}\r\n"
                head += f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                head += "Connection: close\r\n\r\n"
                try:
                    self.wfile.write(head.encode() + body)
                except OSError as exc:
                    log.debug("http_client_gone", path=self._path(), error=type(exc).__name__)

            def _path(self) -> str | None:
                return getattr(self, "path", None)

            def log_error(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
                """A malformed request (answered 400 by http.server): one debug line."""
                log.debug("http_bad_request", message=format % args)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
                """Requests are not logged line by line (the webhook logs its verdicts)."""

        return Handler
