"""A ``/metrics`` endpoint for the traffic simulator, so a real Prometheus can scrape it.

Every scrape first advances the simulator to now (so traffic follows the weights the
cluster carries at that moment), then answers with the Prometheus text format. One server
may carry several simulators (one per namespace, say), added and removed while it serves,
so one Prometheus scrapes them all. Runs
``http.server`` in a background thread; ``stop`` (or leaving the ``with`` block) shuts it
down and joins the thread, leaving nothing running. Anything but ``GET /metrics`` is 404.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from tests.sim.exposition import CONTENT_TYPE, FAMILIES, render
from tests.sim.traffic import TrafficSimulator


class MetricsServer:
    """Serves simulators' metrics on ``http://host:port/metrics``."""

    def __init__(
        self,
        simulator: TrafficSimulator | Sequence[TrafficSimulator],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service: str | None = None,
        families: Collection[str] = FAMILIES,
    ) -> None:
        """Bind now (``port=0``: a free port, see ``port``); serve after ``start``."""
        self.simulators: list[TrafficSimulator] = (
            [simulator] if isinstance(simulator, TrafficSimulator) else list(simulator)
        )
        """Every simulator served (``add`` and ``remove`` change it while serving)."""
        self.scrapes = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                served = outer.served()
                for one in served:
                    one.advance()
                body = render(served, service=service, families=families).encode()
                outer.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
                del format, args  # scrapes every second would flood the output

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def served(self) -> list[TrafficSimulator]:
        """The simulators served now."""
        with self._lock:
            return list(self.simulators)

    def add(self, simulator: TrafficSimulator) -> None:
        """Serve ``simulator``'s metrics too, from the next scrape on."""
        with self._lock:
            self.simulators.append(simulator)

    def remove(self, simulator: TrafficSimulator) -> None:
        """Stop serving ``simulator``'s metrics (its series then go stale in Prometheus)."""
        with self._lock:
            self.simulators = [s for s in self.simulators if s is not simulator]

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = self._server.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}/metrics"

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sim-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
