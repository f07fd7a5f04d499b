"""Fixtures: the real Prometheus (Debian package ``prometheus``) scraping the traffic simulator.

One simulator and one Prometheus per session. The simulator's weights come from a
VirtualService in the demo's in-memory cluster (productpage-v1 at 70 %, -v2 at 30 %), as
the loop would set them; a few versions with hostile names get fixed traffic so the
injection tests have real series to hit or miss. Prometheus listens on 127.0.0.1 with a
1 s scrape interval and a temporary TSDB, and is stopped (then killed if it lingers) at
the end of the session. A missing ``prometheus`` binary fails the tests: it never skips.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.cluster.memory import MemoryCluster
from reconciler.metrics.profile import Profile
from reconciler.sim.server import MetricsServer
from reconciler.sim.traffic import TrafficSimulator
from reconciler.spec.model import WeightObjRef

NAMESPACE = "bookinfo"
RATE = 1000.0
"""Requests per second across all weights (a version at 30 % gets 300 per second)."""
WARM_UP = 8.0
"""Seconds of traffic before the tests query (the first scrape starts the traffic)."""
PROFILES = {
    "productpage-v1": Profile(error_rate=0.01, mean_latency_ms=50, p95_latency_ms=120, reward=2),
    "productpage-v2": Profile(error_rate=0.05, mean_latency_ms=80, p95_latency_ms=200, reward=3),
    "productpage-v3": Profile(error_rate=0.0, mean_latency_ms=50, p95_latency_ms=120, reward=1),
}
"""productpage-v3 exists (its series are exported) but the VirtualService sends it nothing."""
HOSTILE = {'a"}or vector(1)#': 10, "line\nbreak": 10}
"""Versions with hostile names, and their fixed weights."""
WEIGHTS = {"productpage-v1": 70, "productpage-v2": 30}
_READY_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_prometheus() -> str:
    """The ``prometheus`` binary, or a failure that names the package to install."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "the Prometheus server is missing: install the Debian package 'prometheus' "
            "(sudo apt-get install -y prometheus, or run `make test`, which installs it)"
        )
    return found


def _virtual_service() -> dict[str, object]:
    routes = [
        {"destination": {"host": "productpage", "subset": name}, "weight": weight}
        for name, weight in WEIGHTS.items()
    ]
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "productpage", "namespace": NAMESPACE},
        "spec": {"http": [{"route": routes}]},
    }


@dataclass
class Traffic:
    """The running simulator, the cluster its weights come from, and its endpoint."""

    simulator: TrafficSimulator
    server: MetricsServer
    cluster: MemoryCluster
    refs: dict[str, WeightObjRef] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since the traffic started (the experiment's elapsed time in the tests)."""
        started = self.simulator.started_at
        return 0.0 if started is None else time.monotonic() - started

    def weight(self, version: str) -> int:
        """The version's weight: from the VirtualService, or fixed for hostile names."""
        ref = self.refs.get(version)
        if ref is not None:
            return self.cluster.get_weight(ref) or 0
        return HOSTILE.get(version, 0)


@pytest.fixture(scope="session")
def traffic() -> Iterator[Traffic]:
    """The simulator, serving /metrics on a free loopback port for the whole session."""
    cluster = MemoryCluster()
    cluster.apply(_virtual_service())
    refs = {
        name: WeightObjRef(
            "networking.istio.io/v1beta1",
            "VirtualService",
            "productpage",
            f".spec.http[0].route[{index}].weight",
            NAMESPACE,
        )
        for index, name in enumerate(WEIGHTS)
    }
    holder: list[Traffic] = []
    simulator = TrafficSimulator(
        {**PROFILES, **dict.fromkeys(HOSTILE, Profile())},
        lambda version: holder[0].weight(version),  # noqa: PLW0108 - holder is filled below
        namespace=NAMESPACE,
        clock=time.monotonic,
        requests_per_second=RATE,
        seed=4,
    )
    with MetricsServer(simulator, service="productpage") as server:
        holder.append(Traffic(simulator, server, cluster, refs))
        yield holder[0]


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus."""

    url: str
    workdir: Path


def _get(url: str, timeout: float = 1.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            _get(f"{url}/-/ready")
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
        else:
            return
    pytest.fail(
        f"Prometheus did not become ready at {url} within {_READY_TIMEOUT:.0f} s (exit code "
        f"{process.poll()}); its log:\n{log.read_text(errors='replace')[-4000:]}"
    )


@pytest.fixture(scope="session")
def prometheus(traffic: Traffic) -> Iterator[PrometheusServer]:
    """Prometheus on 127.0.0.1, scraping the simulator every second; stopped afterwards."""
    binary = require_prometheus()
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        workdir = Path(tmp)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n- job_name: sim\n  static_configs:\n"
            f"  - targets: ['127.0.0.1:{traffic.server.port}']\n"
        )
        port = free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield PrometheusServer(url, workdir)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def warmed(traffic: Traffic, prometheus: PrometheusServer) -> Traffic:
    """The traffic once it has run ``WARM_UP`` seconds with Prometheus scraping it."""
    deadline = time.monotonic() + WARM_UP + _READY_TIMEOUT
    while traffic.elapsed() < WARM_UP or traffic.server.scrapes < WARM_UP:
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus scraped the simulator {traffic.server.scrapes} times only")
        time.sleep(0.1)
    del prometheus
    return traffic


@dataclass
class FaultyProxy:
    """An HTTP(S) proxy in front of Prometheus that can be slow, fail, and records requests."""

    upstream: str
    delay: float = 0.0
    """Seconds to wait before answering."""
    fail_first: int = 0
    """Answer this many requests with 503 before forwarding."""
    requests: list[dict[str, str]] = field(default_factory=list)
    """Headers of every request received, in order."""
    port: int = 0
    ca_file: Path | None = None
    """The self-signed certificate a TLS proxy presents (None: plain HTTP)."""

    @property
    def url(self) -> str:
        """Where to send queries."""
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://127.0.0.1:{self.port}"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 (its own CA): (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is missing: install the Debian package 'openssl'")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextmanager
def _serving(state: FaultyProxy, tls: ssl.SSLContext | None = None) -> Iterator[FaultyProxy]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(dict(self.headers.items()))
            if state.delay:
                time.sleep(state.delay)
            if len(state.requests) <= state.fail_first:
                self.send_error(503, "simulated overload")
                return
            try:
                with urllib.request.urlopen(state.upstream + self.path, timeout=10) as answer:
                    status, body = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: that is the point of a slow proxy

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[FaultyProxy]:
    """A fresh ``FaultyProxy`` forwarding to the session's Prometheus."""
    with _serving(FaultyProxy(prometheus.url)) as state:
        yield state


@pytest.fixture
def tls_proxy(prometheus: PrometheusServer, tmp_path: Path) -> Iterator[FaultyProxy]:
    """Like ``proxy``, over HTTPS with a fresh self-signed certificate (``ca_file``)."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _serving(FaultyProxy(prometheus.url, ca_file=cert), context) as state:
        yield state
