"""The end-to-end world: a factory of ``World`` objects, each closed after its test.

One simulator server and one Prometheus serve the whole session: each world adds the
simulator of its own namespace to the server, so Prometheus (which waits about five
seconds after it starts before its first scrape) starts once, not once per test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.client import Kube
from tests.e2e.world import World, one_world
from tests.fixtures.git import GitDaemon
from tests.fixtures.kube import KubeServer
from tests.fixtures.prometheus import PrometheusServer, scraping
from tests.sim.server import MetricsServer


@pytest.fixture(scope="session")
def e2e_metrics() -> Iterator[MetricsServer]:
    """The simulators' /metrics for the session (each world adds its own simulator)."""
    with MetricsServer([], service="productpage") as server:
        yield server


@pytest.fixture(scope="session")
def e2e_prometheus(e2e_metrics: MetricsServer) -> Iterator[PrometheusServer]:
    """Prometheus on 127.0.0.1, scraping ``e2e_metrics`` every second, for the session."""
    with scraping(e2e_metrics.port, "e2e-prometheus-") as server:
        yield server


@pytest.fixture
def world_options(
    kube_server: KubeServer,
    admin: Kube,
    git_daemon: GitDaemon,
    e2e_metrics: MetricsServer,
    e2e_prometheus: PrometheusServer,
) -> dict[str, Any]:
    """The session's servers, as a ``World`` (or a subclass) takes them."""
    return {
        "kube_server": kube_server,
        "admin": admin,
        "git_daemon": git_daemon,
        "metrics": e2e_metrics,
        "prometheus": e2e_prometheus,
    }


@pytest.fixture
def make_world(
    tmp_path: Path, world_options: dict[str, Any], namespace: str
) -> Iterator[Callable[..., World]]:
    """``make_world(candidate=..., own_git_daemon=..., own_prometheus=...)``, once a test."""
    with one_world(
        functools.partial(World, tmp_path, namespace=namespace, **world_options)
    ) as make:
        yield make
