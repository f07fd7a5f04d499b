"""Connections for the HTTP server: a bounded number at a time, each with a deadline.

``BoundedServer`` accepts a connection only when one of its ``max_connections`` slots is
free, and serves each on its own thread: the threads are bounded by the slots, and
connections beyond them wait in the kernel's listen queue until a slot frees. A slot
always frees within ``read_timeout`` seconds plus the time to answer, because the whole
request (request line, headers, body) must arrive within ``read_timeout`` seconds of the
accept, however slowly it trickles in: a client that is slower is answered 408 and closed
(``DeadlineReader``). Writing the answer has the same timeout. ``body_length`` decides,
from the request's headers alone, how many body bytes to read or what to refuse: the body
is never read past the cap. Never logs a request's content.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from socketserver import BaseRequestHandler, TCPServer
from typing import Any

import structlog

log = structlog.get_logger("reconciler.server")

POLL_SECONDS = 0.2
"""How often the accepting thread looks whether it was asked to stop."""

LISTEN_QUEUE = 128
"""Connections the kernel queues while every slot is taken (beyond: clients retry)."""


class RequestTooSlowError(Exception):
    """The request did not arrive whole within the read timeout.

    Not a ``TimeoutError``: ``http.server`` would swallow that without an answer.
    """


def body_length(
    values: Sequence[str], *, transfer_encoding: bool, cap: int
) -> int | tuple[int, str]:
    """How many body bytes to read, or the status and message to refuse the request with.

    ``values`` are the request's ``Content-Length`` header values. A body must come with
    exactly one length (repeated headers must agree), made of ASCII digits only (no sign,
    no spaces inside, no ``1,2``), at most ``cap``; a transfer coding (chunked) is refused
    with 411, as this server reads only counted bodies.
    """
    if transfer_encoding:
        return 411, "send the body with a Content-Length, not a Transfer-Encoding"
    if not values:
        return 411, "Content-Length required"
    distinct = {value.strip() for value in values}
    if len(distinct) > 1:
        return 400, "conflicting Content-Length headers"
    text = distinct.pop()
    if not (text.isascii() and text.isdigit()):
        return 400, "Content-Length must be a non-negative integer"
    # Compared by digits first, so a length of thousands of digits is never made an int.
    if len(text.lstrip("0")) > len(str(cap)) or int(text) > cap:
        return 413, f"body too large (at most {cap} bytes)"
    return int(text)


class DeadlineReader(io.RawIOBase):
    """Reads a socket until a deadline: each read waits at most the time that is left."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        """Read ``sock`` until ``deadline`` (``time.monotonic()``)."""
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        """It is."""
        return True

    def readinto(self, buffer: Any) -> int:  # noqa: ANN401 - io's own signature (a buffer)
        """Up to ``len(buffer)`` bytes; ``RequestTooSlowError`` once the deadline passed."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTooSlowError
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise RequestTooSlowError from None


class SocketWriter(io.BufferedIOBase):
    """Writes all of each buffer, or raises: ``timeout`` seconds at most per write."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        """Write to ``sock``."""
        super().__init__()
        self._sock = sock
        self._timeout = timeout

    def writable(self) -> bool:
        """It is."""
        return True

    def write(self, data: Any) -> int:  # noqa: ANN401 - io's own signature (a buffer)
        """Send every byte (``TimeoutError`` for a client that does not read them)."""
        self._sock.settimeout(self._timeout)
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class BoundedServer(TCPServer):
    """A listening socket served by at most ``max_connections`` threads at once."""

    allow_reuse_address = True
    request_queue_size = LISTEN_QUEUE

    def __init__(
        self,
        address: tuple[str, int],
        serve: Callable[[socket.socket, tuple[str, int]], None],
        *,
        max_connections: int,
    ) -> None:
        """Bind ``address``; ``serve(sock, client)`` answers one connection (on its thread)."""
        super().__init__(address, BaseRequestHandler)  # unused: ``serve`` answers
        self._serve = serve
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def run(self) -> None:
        """Accept and serve until ``stop``: take a slot, then wait for a connection."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    if not self._slots.acquire(timeout=POLL_SECONDS):
                        continue  # every slot busy: connections wait in the listen queue
                    accepted = self._accept(selector)
                    if accepted is None:
                        self._slots.release()
                        continue
                    threading.Thread(
                        target=self._connection, args=accepted, daemon=True, name="http"
                    ).start()
            finally:
                self._stopped.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting and release the port (connections being served finish alone)."""
        self._stopping.set()
        self._stopped.wait(timeout)
        self.server_close()

    def _accept(self, selector: selectors.BaseSelector) -> tuple[socket.socket, Any] | None:
        if not selector.select(POLL_SECONDS):
            return None
        try:
            return self.socket.accept()
        except OSError as exc:  # the client gave up in the queue, or descriptors ran out
            log.debug("http_accept_failed", error=str(exc))
            return None

    def _connection(self, sock: socket.socket, client: tuple[str, int]) -> None:
        try:
            self._serve(sock, client)
        except Exception:
            # The last resort: one JSON event with its traceback, not raw text on stderr.
            log.exception("http_connection_failed")
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            sock.close()
            self._slots.release()
