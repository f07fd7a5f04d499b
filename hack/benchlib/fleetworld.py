"""The ``fleet`` benchmark's world: many Env repos, the cluster, Prometheus, the processes.

``fleet_world`` builds REPOS Env repos of running experiments (``world.build``, each repo
with a namespace of its own) and as many small ones (a README: for the take-over), serves
them with one ``git daemon``, starts the real kube-apiserver (``hack/kube-test-server``)
with each experiment's namespace and VirtualService at its recorded split, and the real
Prometheus scraping one ``tests.sim`` traffic simulator per namespace. The simulators give
``stable`` and ``canary`` (every experiment's versions) half of RATE each, with no errors
and latencies well under the objectives, whatever the weights: so every experiment keeps
progressing, one iteration a tick. ``start_process`` runs ``python -m reconciler run``
with a config file listing the repos (``write_config``), on the cores it is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import world
from benchlib.app import fast_import
from benchlib.common import git, git_env
from benchlib.servers import git_daemon
from benchlib.soak import kube_test_server
from reconciler.cluster.client import Kube
from reconciler.metrics.profile import Profile
from tests.e2e.world import ProcessUnreachableError, ReconcilerProcess
from tests.fixtures.kube import KubeServer, apply, ensure_namespace
from tests.fixtures.net import free_port
from tests.fixtures.prometheus import PrometheusProcess
from tests.sim.server import MetricsServer
from tests.sim.traffic import TrafficSimulator

RATE = 20.0
"""Simulated requests a second in each namespace, half to each version."""
PER_SCRAPE = 25
"""Namespaces a /metrics endpoint of the simulators serves: a scrape of 100 took over
Prometheus' one-second timeout on a busy core; four endpoints are scraped at their own
offsets within the interval."""
SCRAPE_SECONDS = 5.0
"""Prometheus' scrape interval, at most half the ticks' (a real one scrapes every 15 to 60
s). At the tests' 1 s, the simulators' /metrics and Prometheus' scraping of them took 15 %
of the servers' core (2026-12-07, the bench's per-server CPU): the world's own cost, not
the reconciler's, on the core its servers share."""
PROFILES = {
    "stable": Profile(error_rate=0.0, mean_latency_ms=60.0, p95_latency_ms=130.0),
    "canary": Profile(error_rate=0.0, mean_latency_ms=55.0, p95_latency_ms=120.0),
}
LEASE_NAMESPACE = "fleet-leases"
"""Where the replicas' Leases live (``kubernetes.namespace``)."""
START_TIMEOUT = 60.0


def namespace_of(repo: int) -> str:
    """The namespace of repo ``repo``'s experiments (``world.members`` with its prefix)."""
    return f"{_prefix(repo)}-0000"


def _prefix(repo: int) -> str:
    return f"fleet-{repo:03d}"


@dataclass
class Fleet:
    """What the ticks are measured against: repos, cluster and Prometheus, all running."""

    work: Path
    kube: KubeServer
    admin: Kube
    urls: list[str]
    """The Env repos with experiments, ``repo`` of each entry of the config file."""
    small: list[str]
    """The small Env repos (a README) the take-over is measured on."""
    prometheus_url: str
    built_s: float
    cluster_s: float


def _build_repos(root: Path, env: Mapping[str, str], args: argparse.Namespace) -> None:
    started = time.time()  # every experiment's last iteration: all due when the process starts
    for r in range(args.repos):
        world.build(
            env,
            root / f"env-{r:03d}.git",
            args.experiments,
            args.experiments,
            prefix=_prefix(r),
            started=started,
            interval=math.ceil(args.interval),
        )
        small = root / f"small-{r:03d}.git"
        git(env, "init", "--quiet", "--bare", "--initial-branch=main", small)
        fast_import(env, small, "main", [("an app", {"README.md": b"an Env repo\n"})])


def _apply_cluster(admin: Kube, args: argparse.Namespace) -> None:
    """Namespaces and VirtualServices, as the GitOps operator would have applied them."""
    ensure_namespace(admin, LEASE_NAMESPACE)
    manifests: list[dict[str, Any]] = []
    for r in range(args.repos):
        ensure_namespace(admin, namespace_of(r))
        vs = world.virtual_services(args.experiments, args.experiments, _prefix(r))
        manifests.extend(vs)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(lambda m: apply(admin, m), manifests):
            pass


def _query(url: str, promql: str) -> list[Any]:
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:
        result: list[Any] = json.load(response)["data"]["result"]
        return result


def _wait_scraped(url: str, namespace: str) -> None:
    """Until Prometheus holds two scrapes of ``namespace``'s traffic."""
    selector = (
        f'istio_requests_total{{destination_workload_namespace="{namespace}",'
        'destination_workload="stable",reporter="source",response_code="200"}'
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            result = _query(url, f"count_over_time({selector}[1m])")
            if result and float(result[0]["value"][1]) >= 2:
                return
        time.sleep(0.5)
    raise SystemExit(f"bench: Prometheus did not scrape the simulated traffic in {START_TIMEOUT} s")


@contextlib.contextmanager
def fleet_world(work: Path, args: argparse.Namespace) -> Iterator[Fleet]:
    """The repos served, the cluster applied, Prometheus scraping the simulators."""
    with contextlib.ExitStack() as stack:
        root = work / "repos"
        root.mkdir()
        env = git_env(work / "home")
        started = time.perf_counter()
        _build_repos(root, env, args)
        built = time.perf_counter() - started
        server = stack.enter_context(git_daemon(root, work / "home"))
        kube = stack.enter_context(kube_test_server(work))
        admin = stack.enter_context(contextlib.closing(kube.connect()))
        started = time.perf_counter()
        _apply_cluster(admin, args)
        applied = time.perf_counter() - started
        simulators = [
            TrafficSimulator(
                PROFILES,
                lambda _version: 50,
                namespace=namespace_of(r),
                clock=time.monotonic,
                requests_per_second=RATE,
                seed=r,
            )
            for r in range(args.repos)
        ]
        targets = [
            stack.enter_context(MetricsServer(simulators[i : i + PER_SCRAPE], families=("istio",)))
            for i in range(0, len(simulators), PER_SCRAPE)
        ]
        (work / "prometheus").mkdir()
        prometheus = PrometheusProcess(
            [f"127.0.0.1:{target.port}" for target in targets],
            work / "prometheus",
            scrape_seconds=min(SCRAPE_SECONDS, args.interval / 2),  # --quick ticks every 3 s
        )
        stack.callback(prometheus.stop)
        url = prometheus.start().url
        _wait_scraped(url, namespace_of(args.repos - 1))
        yield Fleet(
            work,
            kube,
            admin,
            [server.url(f"env-{r:03d}.git") for r in range(args.repos)],
            [server.url(f"small-{r:03d}.git") for r in range(args.repos)],
            url,
            built,
            applied,
        )


@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """This thread on ``cpus`` for the block: a process started in it inherits them."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def write_config(fleet: Fleet, urls: Sequence[str], name: str, extra: Mapping[str, Any]) -> Path:
    """A config file listing ``urls`` (JSON: YAML reads it), as manifests/fleet's has them."""
    port = free_port()
    config = {
        "repos": [{"repo": url} for url in urls],
        "cacheDir": str(fleet.work / f"cache-{name}"),
        "prometheus": {"url": fleet.prometheus_url, "timeout": 5},
        "kubernetes": {
            "kubeconfig": str(fleet.kube.kubeconfig),
            "namespace": LEASE_NAMESPACE,
            "events": True,
            "weightNamespaces": ["*"],
        },
        "listen": f"127.0.0.1:{port}",
        "log": {"json": True, "level": "info"},
        **extra,
    }
    path = fleet.work / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def start_process(
    fleet: Fleet, config: Path, name: str, interval: float, cpus: set[int] | None
) -> ReconcilerProcess:
    """``python -m reconciler run --config FILE``; returns once /healthz answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["HOME"] = str(fleet.work / "home")
    port = int(json.loads(config.read_text())["listen"].rpartition(":")[2])
    args = ["--config", str(config), "--interval", f"{interval:g}"]
    with affinity(cpus):
        process = ReconcilerProcess(args, env, fleet.work / f"{name}.log", port)
    print(f"bench: {name} is pid {process.popen.pid}", file=sys.stderr)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.exit_code is not None:
            raise SystemExit(f"bench: {name} exited at start:\n{process.log_tail()}")
        with contextlib.suppress(ProcessUnreachableError):
            if process.request("/healthz")[0] == 200:
                return process
        time.sleep(0.1)
    process.stop()
    raise SystemExit(f"bench: {name} did not answer /healthz:\n{process.log_tail()}")
