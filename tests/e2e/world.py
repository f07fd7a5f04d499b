"""One end-to-end world: every real part on 127.0.0.1, and ``reconciler run`` as a process.

A ``World`` holds an Env repo served by ``git daemon``, a namespace of the Kubernetes test
server where the app runs (applied from main, as Argo CD would), the traffic simulator
whose per-version traffic follows the weights of that namespace's real VirtualService, a
real Prometheus scraping the simulator, and the ``reconciler run`` processes the test
starts (``python -m reconciler run``, configured by flags and ``RECONCILER_*`` variables).

Looking is checking: every poll of ``wait`` also checks write-ahead, that the
VirtualService carries the weights recorded at the state branch's tip (or, for the moment
between a push and the patch that follows it, or until the next process recovers from a
crash in between, weights an earlier state commit recorded). Nothing is left running:
``close`` stops every process the world started.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.cluster.client import Kube
from reconciler.cluster.resources import ObjectRef
from reconciler.errors import ReconcilerError
from reconciler.metrics.profile import Profile
from reconciler.runner import FAILPOINT_EXIT
from tests.e2e.envrepo import APP, BASELINE, CANDIDATE, STATE, VERSIONS, EnvRepo
from tests.fixtures.git import GitDaemon, start_git_daemon
from tests.fixtures.kube import ROOT, KubeServer, apply, delete, load_yaml_text, ref_of
from tests.fixtures.net import free_port, stop
from tests.fixtures.prometheus import PrometheusProcess, PrometheusServer
from tests.sim.server import MetricsServer
from tests.sim.traffic import TrafficSimulator

T = TypeVar("T")
WeightReader = Callable[[Kube, str], dict[str, int] | None]
"""Reads the weights of the app's VirtualService in a namespace (``read_weights``)."""

RATE = 3000.0
"""Requests per second across both versions: a candidate at 20 % gets 600 per second, so
a 1 % error-rate objective is decided (Wilson interval, 95 %) within the first seconds."""
BASELINE_PROFILE = Profile(error_rate=0.002, mean_latency_ms=60.0, p95_latency_ms=130.0)
HEALTHY = Profile(error_rate=0.0, mean_latency_ms=55.0, p95_latency_ms=120.0)
FAULTY = Profile(error_rate=0.2, mean_latency_ms=55.0, p95_latency_ms=120.0)
VIRTUAL_SERVICE = ("networking.istio.io/v1beta1", "VirtualService", "productpage")
MAIN_SPLIT = {BASELINE: 100, CANDIDATE: 0}
"""The weights main's VirtualService names: what the GitOps operator applies."""
POLL = 0.1
IN_FLIGHT_LIMIT = 5.0
"""Seconds the VirtualService may lag behind the state tip (a push, then the patch)."""
PROCESS_START = 30.0
_processes = itertools.count()


class Traffic:
    """The simulator of one namespace, fed by the real VirtualService's weights."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        candidate: Profile,
        load: float = 0.0,
        *,
        rate: float = RATE,
        read: WeightReader | None = None,
    ) -> None:
        """``read``: how the weights are read (default ``read_weights``, one GET)."""
        self._kube = kube
        self._read = read or read_weights
        self._namespace = namespace
        self._read_at = -1.0
        self._weights: dict[str, int] = {}
        self.simulator = TrafficSimulator(
            {BASELINE: BASELINE_PROFILE, CANDIDATE: candidate},
            self._weight_of,
            namespace=namespace,
            clock=time.monotonic,
            requests_per_second=rate,
            seed=7,
            load_per_version=load,
        )

    def _weight_of(self, version: str) -> int:
        if time.monotonic() - self._read_at > POLL:  # one read per scrape, not per version
            # on an error, keep the last weights seen; the next scrape reads again
            with contextlib.suppress(ReconcilerError):
                self._weights = self._read(self._kube, self._namespace) or {}
            self._read_at = time.monotonic()
        return self._weights.get(version, 0)


def virtual_service(namespace: str) -> ObjectRef:
    """The app's VirtualService."""
    return ObjectRef(*VIRTUAL_SERVICE, namespace=namespace)


def read_weights(kube: Kube, namespace: str) -> dict[str, int] | None:
    """The VirtualService's weights by version (None: it does not exist)."""
    obj = kube.get(virtual_service(namespace))
    return None if obj is None else route_weights(obj)


def route_weights(obj: Mapping[str, Any]) -> dict[str, int]:
    """A VirtualService's weights by version, as the app's routes order them."""
    routes = obj["spec"]["http"][0]["route"]
    return {version: int(routes[i].get("weight", 0)) for i, version in enumerate(VERSIONS)}


class ProcessUnreachableError(AssertionError):
    """The process's HTTP server did not answer: says whether it still runs, and its log."""

    def __init__(self, process: ReconcilerProcess, path: str, error: OSError) -> None:
        super().__init__(
            f"{path} of reconciler run (port {process.port}) did not answer: {error}; "
            f"exit code {process.exit_code}; its log:\n{process.log_tail()}"
        )


class ReconcilerProcess:
    """One ``python -m reconciler run`` child process."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path, port: int) -> None:
        self.args = list(args)
        self.log = log
        self.port = port
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", *args],
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def exit_code(self) -> int | None:
        """None while it runs."""
        return self.popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The end of its output, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_exit(self, timeout: float) -> int:
        """Its exit status, waiting at most ``timeout`` seconds for it."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(self.popen)
            pytest.fail(
                f"reconciler run did not exit within {timeout} s; its log:\n{self.log_tail()}"
            )

    def stop(self) -> int:
        """SIGTERM (the process finishes its tick and exits), then SIGKILL if it lingers."""
        stop(self.popen, timeout=15)
        return self.popen.returncode

    # -- its HTTP endpoints -------------------------------------------------------------

    def request(
        self, path: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Status and body of a GET (or a POST with ``body``)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            headers=dict(headers or {}),
            method="GET" if body is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())
        except OSError as exc:
            raise ProcessUnreachableError(self, path, exc) from exc

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` on /metrics whose labels include ``labels``."""
        status, body = self.request("/metrics")
        assert status == 200, f"/metrics answered {status}"
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


class World:
    """Git server, Kubernetes, traffic, Prometheus and reconciler processes for one test."""

    def __init__(
        self,
        tmp: Path,
        *,
        kube_server: KubeServer,
        admin: Kube,
        git_daemon: GitDaemon,
        metrics: MetricsServer,
        prometheus: PrometheusServer,
        namespace: str,
        candidate: Profile = HEALTHY,
        load_per_version: float = 0.0,
        rate: float = RATE,
        traffic_weights: WeightReader | None = None,
        own_git_daemon: bool = False,
        own_prometheus: bool = False,
    ) -> None:
        """``rate``: requests a second across both versions (``RATE`` unless a test needs
        fewer, as one that runs many worlds at once does); ``traffic_weights``: how the
        simulator reads the weights (default: one GET of the VirtualService per scrape)."""
        self.tmp = tmp
        self.kube_server = kube_server
        self.admin = admin
        self.namespace = namespace
        self.candidate = candidate
        self.load_per_version = load_per_version
        self.rate = rate
        self.traffic_weights = traffic_weights
        self.processes: list[ReconcilerProcess] = []
        self.process: ReconcilerProcess | None = None
        """The long-running process, watched by ``wait`` (None: none should be running)."""
        self.checking = True
        """Whether ``wait`` checks the VirtualService against the state tip."""
        self._applied: set[ObjectRef] = set()
        self._git: subprocess.Popen[bytes] | None = None
        self._in_flight_since: float | None = None
        self._closers: list[Callable[[], None]] = []
        self.own_git_daemon = own_git_daemon
        self.own_prometheus = own_prometheus
        self.daemon = git_daemon
        self.metrics = metrics
        self.prometheus_url = prometheus.url
        self.prometheus: PrometheusProcess | None = None
        """This world's own Prometheus (``own_prometheus``), which it may stop."""

    def setup(self) -> None:
        """Create the Env repo, apply main to the cluster, start traffic and Prometheus."""
        self.build()
        self.wait("Prometheus to have scraped this namespace's traffic twice", self.scraped)

    def build(self) -> None:
        """What ``setup`` does but wait for the first scrapes (``scraped`` says when)."""
        if self.own_git_daemon:
            repos = self.tmp / "repos"
            repos.mkdir()
            self.daemon = GitDaemon(repos, free_port())
            self.start_git()
        self.repo = self.create_repo()
        self.sync_cluster()
        sim_kube = self.kube_server.connect()
        self._closers.append(sim_kube.close)
        self.traffic = Traffic(
            sim_kube,
            self.namespace,
            self.candidate,
            self.load_per_version,
            rate=self.rate,
            read=self.traffic_weights,
        )
        self.metrics.add(self.traffic.simulator)
        self._closers.append(lambda: self.metrics.remove(self.traffic.simulator))
        if self.own_prometheus:
            (self.tmp / "prometheus").mkdir()
            self.prometheus = PrometheusProcess(
                [f"127.0.0.1:{self.metrics.port}"], self.tmp / "prometheus"
            )
            self._closers.append(self.prometheus.stop)
            self.prometheus_url = self.prometheus.start().url

    def create_repo(self) -> EnvRepo:
        """The Env repo, served by the git daemon."""
        name = f"{self.namespace}.git"
        return EnvRepo.create(self.daemon.base_path / name, self.daemon.url(name))

    def scraped(self) -> bool:
        """Whether Prometheus has scraped this namespace's traffic twice."""
        selector = (
            f'istio_requests_total{{destination_workload_namespace="{self.namespace}",'
            f'destination_workload="{BASELINE}",reporter="source",response_code="200"}}'
        )
        query = urllib.parse.urlencode({"query": f"count_over_time({selector}[1m])"})
        try:
            with urllib.request.urlopen(
                f"{self.prometheus_url}/api/v1/query?{query}", timeout=5
            ) as response:
                result = json.load(response)["data"]["result"]
        except OSError:
            return False
        return bool(result) and float(result[0]["value"][1]) >= 2

    # -- the Git server -------------------------------------------------------------------

    def start_git(self) -> None:
        """Start (or restart, on the same port) this world's own git daemon."""
        self._git = start_git_daemon(self.daemon.base_path, self.daemon.port, self.tmp / "git.log")

    def stop_git(self) -> None:
        """Stop this world's own git daemon: the remote is unreachable."""
        if self._git is not None:
            stop(self._git)
            self._git = None

    # -- the cluster, as the GitOps operator shapes it ------------------------------------

    def manifests(self, rev: str = "main") -> list[dict[str, Any]]:
        """main's manifests, as the GitOps operator would apply them (no experiment files)."""
        docs = []
        for path in self.repo.files(rev):
            if not path.startswith(f"{APP}/") or not path.endswith(".yaml"):
                continue
            for doc in load_yaml_text(self.repo.show(rev, path) or ""):
                if doc.get("kind") != "Experiment":
                    doc["metadata"]["namespace"] = self.namespace
                    docs.append(doc)
        return docs

    def sync_cluster(self) -> None:
        """Apply main's manifests to the namespace (server-side apply, as Argo CD does)."""
        for doc in self.manifests():
            apply(self.admin, doc)
            self._applied.add(ref_of(doc))

    def wipe_cluster(self) -> None:
        """Delete every object the GitOps operator created: a cluster rebuilt from nothing."""
        for ref in sorted(self._applied, key=str):
            delete(self.admin, ref)
        for ref in self._applied:
            self.wait(f"{ref} to be gone", self._absent(ref))

    def _absent(self, ref: ObjectRef) -> Callable[[], bool]:
        return lambda: self.admin.get(ref) is None

    def own(self, ref: ObjectRef) -> None:
        """Delete ``ref`` when the world closes (an object the test created)."""
        self._applied.add(ref)

    def weights(self) -> dict[str, int] | None:
        """The VirtualService's weights now."""
        return read_weights(self.admin, self.namespace)

    # -- reconciler processes -------------------------------------------------------------

    def _env(self, failpoints: Iterable[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        env["HOME"] = str(home)
        env["RECONCILER_PROMETHEUS_URL"] = self.prometheus_url
        env["RECONCILER_KUBECONFIG"] = str(self.kube_server.kubeconfig)
        # the namespace this world's experiments weight (the weight policy refuses others)
        env["RECONCILER_WEIGHT_NAMESPACES"] = self.namespace
        failpoints = list(failpoints)
        if failpoints:
            env["RECONCILER_FAILPOINTS"] = ",".join(failpoints)
        return env

    def _spawn(
        self, *, interval: float, once: bool, failpoints: Iterable[str], extra: Sequence[str]
    ) -> ReconcilerProcess:
        number = next(_processes)
        port = 0 if once else free_port()
        args = [
            *(["--once"] if once else []),
            "--repo",
            self.repo.url,
            # a fresh cache for every process: nothing local survives a restart
            "--cache-dir",
            str(self.tmp / f"cache-{number}"),
            "--interval",
            f"{interval:g}",
            "--prometheus-timeout",
            "2",
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "info",
            *extra,
        ]
        process = ReconcilerProcess(
            args, self._env(failpoints), self.tmp / f"reconciler-{number}.log", port
        )
        self.processes.append(process)
        return process

    def start(
        self,
        *,
        interval: float = 1.0,
        failpoints: Iterable[str] = (),
        extra: Sequence[str] = (),
    ) -> ReconcilerProcess:
        """Start a long-running ``reconciler run``; returns once /healthz answers."""
        process = self._spawn(interval=interval, once=False, failpoints=failpoints, extra=extra)
        self.process = process

        def healthy() -> bool:
            try:
                return process.request("/healthz")[0] == 200
            except ProcessUnreachableError:
                return False  # not listening yet

        self.wait("reconciler run to answer /healthz", healthy, timeout=PROCESS_START)
        return process

    def stop(self) -> int:
        """Stop the long-running process (SIGTERM); its exit status."""
        assert self.process is not None, "no reconciler process is running"
        process, self.process = self.process, None
        return process.stop()

    def once(self, failpoints: Iterable[str] = (), extra: Sequence[str] = ()) -> int:
        """Run ``reconciler run --once`` to its end; its exit status."""
        process = self._spawn(interval=1, once=True, failpoints=failpoints, extra=extra)
        code = process.wait_exit(PROCESS_START)
        self.check_weights()
        if code not in (0, FAILPOINT_EXIT):
            pytest.fail(f"reconciler run --once exited {code}; its log:\n{process.log_tail()}")
        return code

    def once_until(self, what: str, condition: Callable[[], bool], *, attempts: int = 12) -> None:
        """Run ``--once`` processes, one after the other, until ``condition`` holds."""
        for _ in range(attempts):
            code = self.once()
            assert code == 0, f"a tick failed; log:\n{self.processes[-1].log_tail()}"
            if condition():
                return
        pytest.fail(f"{what}: not reached after {attempts} ticks\n{self.describe()}")

    # -- looking ------------------------------------------------------------------------

    def wait(self, what: str, condition: Callable[[], T | bool | None], timeout: float = 30.0) -> T:
        """Poll ``condition`` until it is truthy (checking the weights at each look)."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value  # type: ignore[return-value]
            if self.process is not None and self.process.exit_code is not None:
                pytest.fail(
                    f"while waiting for {what}: reconciler run exited "
                    f"{self.process.exit_code}; its log:\n{self.process.log_tail()}"
                )
            self.check_weights()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.describe()}")
            time.sleep(POLL)

    def recorded_weights(self, limit: int = 12) -> list[dict[str, int]]:
        """Weights recorded by the newest state commits that record any, newest first."""
        found = []
        for commit in self.repo.log(STATE, limit=limit):
            weights = commit.weights
            if weights is not None:
                found.append({v: weights.get(v, 0) for v in VERSIONS})
        return found

    def check_weights(self, *, strict: bool = False) -> None:
        """Write-ahead, seen from outside: the cluster carries what the state tip records.

        Between a state push and the patch that follows it the VirtualService may still
        carry weights an earlier state commit recorded (or main's 100/0, before the first
        one), for a moment (``IN_FLIGHT_LIMIT``); weights no state commit recorded fail at
        once. ``strict``: no moment allowed.
        """
        if not self.checking:
            return
        before = self.repo.tip(STATE)
        if before is None:
            return
        carried = self.weights()
        if self.repo.tip(STATE) != before:
            return  # the tip moved while we looked: look again next time
        recorded = self.recorded_weights()
        if not recorded or carried == recorded[0]:
            self._in_flight_since = None
            return
        message = (
            f"the VirtualService carries {carried}, the state tip {before[:12]} records "
            f"{recorded[0]}"
        )
        if strict or carried not in [*recorded[1:], MAIN_SPLIT]:
            pytest.fail(f"{message} (earlier records: {recorded[1:]})\n{self.describe()}")
        now = time.monotonic()
        if self._in_flight_since is None:
            self._in_flight_since = now
        elif now - self._in_flight_since > IN_FLIGHT_LIMIT:
            pytest.fail(f"{message}, for {IN_FLIGHT_LIMIT:g} s\n{self.describe()}")

    def describe(self) -> str:
        """The state branch's log and the last process's output, for failure messages."""
        lines = ["state branch (oldest first):"]
        lines += [f"  {commit.id[:10]} {commit.subject}" for commit in self.repo.state_log()]
        lines.append(f"main outcomes: {[c.subject for c in self.repo.outcomes()]}")
        lines.append(f"VirtualService weights: {self.weights()}")
        if self.processes:
            last = self.processes[-1]
            lines.append(f"last reconciler process ({last.args[:1]}...) log:\n{last.log_tail()}")
        return "\n".join(lines)

    # -- webhooks -----------------------------------------------------------------------

    @staticmethod
    def github_push(secret: bytes | None) -> tuple[bytes, dict[str, str]]:
        """A GitHub push event's body and headers, signed with ``secret`` (None: unsigned)."""
        body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
        if secret is not None:
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = f"sha256={digest}"
        return body, headers

    # -- the end ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process this world started (reconcilers, Prometheus, git), tidy up."""
        with contextlib.ExitStack() as stack:  # every step runs, even after one failed
            for ref in self._applied:
                stack.callback(delete, self.admin, ref)
            stack.callback(self.stop_git)
            stack.callback(setattr, self, "process", None)
            for close in self._closers:
                stack.callback(close)
            for process in self.processes:
                stack.callback(process.stop)


W = TypeVar("W", bound=World)


@contextlib.contextmanager
def one_world(build: Callable[..., W]) -> Iterator[Callable[..., W]]:
    """A test's ``make(**options)``: builds one world with ``build``, sets it up, closes it."""
    made: list[W] = []

    def make(**options: Any) -> W:
        assert not made, "one world per test"
        world = build(**options)
        made.append(world)
        world.setup()
        return world

    try:
        yield make
    finally:
        for world in made:
            world.close()
