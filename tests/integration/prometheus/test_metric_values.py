"""Builtin metrics and Iter8 Metric documents against the real Prometheus and the simulator.

What the profile implies, and the tolerance each value is held to:

- request-count: ``RATE * weight/100 * elapsed``, within 3 % or one second of the
  version's traffic, whichever is more (Prometheus only knows a counter at each 1 s
  scrape; ``increase()`` extrapolates to the window's edges, and a scrape delayed by a
  busy machine leaves up to one interval unseen);
- error-count: ``error_rate * request count``, within the same share of that tolerance,
  plus one request;
- error-rate: the profile's error rate, within two requests' worth (``2 / requests``);
- mean-latency: the profile's mean, within 3 %;
- latency-p50/p95/p99: what ``histogram_quantile`` gives for the profile's log-normal
  latency over the library's buckets (``LatencyModel.histogram_quantile``), within 3 %.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.metrics.catalog import Catalog
from reconciler.metrics.prometheus import PrometheusClient, PrometheusConfig, PrometheusMetrics
from reconciler.ports import MetricValue
from tests.fixtures.prometheus import (
    NAMESPACE,
    PROFILES,
    RATE,
    WEIGHTS,
    PrometheusServer,
    Traffic,
)
from tests.sim.traffic import (
    ISTIO_BUCKETS_MS,
    LINKERD_BUCKETS_MS,
    NGINX_BUCKETS_S,
    LatencyModel,
)

# One worker warms Prometheus up (``warmed``, about 14 s of traffic), not both.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("prometheus")]

BUCKETS_MS = {
    "istio": ISTIO_BUCKETS_MS,
    "gateway": ISTIO_BUCKETS_MS,  # Envoy's defaults, which Istio uses too
    "linkerd": LINKERD_BUCKETS_MS,
    "nginx": tuple(b * 1000 for b in NGINX_BUCKETS_S),
}
METRICS = ("request-count", "error-count", "error-rate", "mean-latency")
PERCENTILES = {"latency-p50": 0.5, "latency-p95": 0.95, "latency-p99": 0.99}


def source(prometheus: PrometheusServer, catalog: Catalog | None = None) -> PrometheusMetrics:
    client = PrometheusClient(PrometheusConfig(prometheus.url, timeout_seconds=5))
    return PrometheusMetrics(client, catalog or Catalog())


def observe(metrics: PrometheusMetrics, metric: str, version: str, traffic: Traffic) -> MetricValue:
    return metrics.observe(
        metric,
        version=version,
        namespace=NAMESPACE,
        elapsed_seconds=traffic.elapsed(),
        variables={},
    )


def count_tolerance(requests: float, version: str) -> float:
    """3 % of a count, or one second (one scrape interval) of the version's traffic."""
    return max(0.03 * requests, RATE * WEIGHTS[version] / 100 * 1.0)


def implied(library: str, metric: str, version: str, requests: float) -> tuple[float, float]:
    """The value the profile implies, and the tolerance (absolute) it is held to."""
    profile = PROFILES[version]
    if metric == "request-count":
        return requests, count_tolerance(requests, version)
    if metric == "error-count":
        tolerance = profile.error_rate * count_tolerance(requests, version) + 1
        return profile.error_rate * requests, tolerance
    if metric == "error-rate":
        return profile.error_rate, 2 / requests
    if metric == "mean-latency":
        return profile.mean_latency_ms, 0.03 * profile.mean_latency_ms
    expected = LatencyModel.of(profile).histogram_quantile(PERCENTILES[metric], BUCKETS_MS[library])
    return expected, 0.03 * expected


@pytest.mark.parametrize("version", sorted(WEIGHTS))
@pytest.mark.parametrize("metric", [*METRICS, *PERCENTILES])
def test_every_builtin_istio_metric_returns_what_the_profile_implies(
    warmed: Traffic, prometheus: PrometheusServer, metric: str, version: str
) -> None:
    check(warmed, prometheus, "istio", metric, version)


@pytest.mark.parametrize("library", ["gateway", "nginx", "linkerd"])
@pytest.mark.parametrize("version", sorted(WEIGHTS))
@pytest.mark.parametrize("metric", [*METRICS, *PERCENTILES])
def test_the_other_libraries_return_what_the_profile_implies_too(
    warmed: Traffic, prometheus: PrometheusServer, library: str, metric: str, version: str
) -> None:
    check(warmed, prometheus, library, metric, version)


def check(
    traffic: Traffic, prometheus: PrometheusServer, library: str, metric: str, version: str
) -> None:
    metrics = source(prometheus)
    requests = RATE * WEIGHTS[version] / 100 * traffic.elapsed()
    value = observe(metrics, f"{library}/{metric}", version, traffic)
    expected, tolerance = implied(library, metric, version, requests)
    assert value.status == "ok"
    assert value.value == pytest.approx(expected, abs=tolerance), (metric, version)
    assert value.sample_size == pytest.approx(requests, abs=count_tolerance(requests, version))


ITER8_METRICS = (Path(__file__).parent / "iter8-istio-metrics.yaml").read_bytes()
"""Iter8 v2alpha2 Metric documents in the shape of Iter8's Istio samples."""

SAME_AS = {
    "iter8-istio/request-count": "istio/request-count",
    "iter8-istio/error-count": "istio/error-count",
    "iter8-istio/error-rate": "istio/error-rate",
    "iter8-istio/mean-latency": "istio/mean-latency",
    "iter8-istio/95th-percentile-tail-latency": "istio/latency-p95",
    "iter8-system/latency-95th-percentile": "istio/latency-p95",
    "iter8-system/mean-latency": "istio/mean-latency",
}


@pytest.mark.parametrize("version", sorted(WEIGHTS))
@pytest.mark.parametrize("metric", sorted(SAME_AS))
def test_iter8_metric_documents_return_the_same_values_as_the_builtin_ones(
    warmed: Traffic, prometheus: PrometheusServer, metric: str, version: str
) -> None:
    catalog = Catalog.from_files([("metrics/iter8-istio.yaml", ITER8_METRICS)])
    assert catalog.problems
    assert all(p.severity == "warning" for p in catalog.problems)
    metrics = source(prometheus, catalog)
    started = time.monotonic()
    theirs = observe(metrics, metric, version, warmed)
    ours = observe(metrics, SAME_AS[metric], version, warmed)
    # Counts grow while the queries run: allow the traffic of that time plus one scrape.
    arrived = RATE * WEIGHTS[version] / 100 * (time.monotonic() - started + 1.0)
    assert theirs.status == ours.status == "ok"
    assert theirs.value is not None
    assert ours.value is not None
    if SAME_AS[metric].endswith("-count"):
        share = PROFILES[version].error_rate if "error" in metric else 1.0
        assert theirs.value == pytest.approx(ours.value, abs=share * arrived + 1)
    else:
        assert theirs.value == pytest.approx(ours.value, rel=0.02)
    if theirs.sample_size is not None:
        assert ours.sample_size is not None
        assert abs(theirs.sample_size - ours.sample_size) <= arrived


@pytest.mark.parametrize("version", sorted(WEIGHTS))
def test_a_custom_reward_metric_reads_the_profiles_reward(
    warmed: Traffic, prometheus: PrometheusServer, version: str
) -> None:
    catalog = Catalog.from_files([("metrics/iter8-istio.yaml", ITER8_METRICS)])
    value = observe(source(prometheus, catalog), "iter8-istio/user-engagement", version, warmed)
    assert value.value == pytest.approx(PROFILES[version].reward, rel=0.001)
