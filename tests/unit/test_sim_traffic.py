"""The traffic simulator: weights decide who gets requests; profiles decide how they go."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.metrics.profile import Profile
from tests.sim.exposition import escape_label_value, render
from tests.sim.traffic import (
    ISTIO_BUCKETS_MS,
    LatencyModel,
    TrafficSimulator,
    histogram_quantile,
)

PROFILES = {
    "productpage-v1": Profile(error_rate=0.01, mean_latency_ms=50, p95_latency_ms=120, reward=1),
    "productpage-v2": Profile(error_rate=0.05, mean_latency_ms=80, p95_latency_ms=200, reward=3),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulator(
    weights: dict[str, int], clock: Clock, seed: int = 0, rate: float = 100.0
) -> TrafficSimulator:
    return TrafficSimulator(
        PROFILES,
        lambda v: weights.get(v, 0),
        namespace="bookinfo",
        clock=clock,
        requests_per_second=rate,
        seed=seed,
    )


def requests(sim: TrafficSimulator) -> dict[str, int]:
    return {v.name: v.requests for v in sim.snapshot()}


def test_traffic_starts_at_the_first_advance_and_follows_the_weights() -> None:
    clock, weights = Clock(), {"productpage-v1": 80, "productpage-v2": 20}
    sim = simulator(weights, clock)
    clock.now += 50
    sim.advance()
    assert requests(sim) == {"productpage-v1": 0, "productpage-v2": 0}
    assert sim.started_at == 1050.0
    clock.now += 10
    sim.advance()
    assert requests(sim) == {"productpage-v1": 800, "productpage-v2": 200}
    weights.update({"productpage-v1": 0, "productpage-v2": 100})
    clock.now += 10
    sim.advance()
    assert requests(sim) == {"productpage-v1": 800, "productpage-v2": 1200}


def test_fractions_of_a_request_carry_over_between_advances() -> None:
    clock = Clock()
    sim = simulator({"productpage-v2": 3}, clock, rate=10)  # 0.3 requests per second
    sim.advance()
    for _ in range(100):
        clock.now += 0.1
        sim.advance()
    assert requests(sim)["productpage-v2"] == 3


@given(seed=st.integers(0, 2**32), weight=st.integers(1, 100))
def test_the_error_rate_is_the_profiles_within_one_request(seed: int, weight: int) -> None:
    clock = Clock()
    sim = simulator({"productpage-v2": weight}, clock, seed=seed)
    sim.advance()
    clock.now += 30
    sim.advance()
    (_, v2) = sim.snapshot()
    assert abs(v2.errors.count - 0.05 * v2.requests) <= 1


def test_latencies_show_the_profiles_mean_and_percentiles_after_a_few_hundred_requests() -> None:
    clock = Clock()
    sim = simulator({"productpage-v2": 100}, clock)
    sim.advance()
    clock.now += 5
    sim.advance()
    (_, v2) = sim.snapshot()
    assert v2.requests == 500
    mean = (v2.ok.sum_ms + v2.errors.sum_ms) / v2.requests
    assert mean == pytest.approx(80, rel=0.02)
    counts = [
        a + b for a, b in zip(v2.ok.buckets["istio"], v2.errors.buckets["istio"], strict=True)
    ]
    measured = histogram_quantile(0.95, list(zip(ISTIO_BUCKETS_MS, counts, strict=True)), 500)
    implied = LatencyModel(80, 200).histogram_quantile(0.95, ISTIO_BUCKETS_MS)
    assert measured == pytest.approx(implied, rel=0.02)


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    def run(seed: int) -> str:
        clock = Clock()
        sim = simulator({"productpage-v1": 50, "productpage-v2": 50}, clock, seed=seed)
        sim.advance()
        clock.now += 3
        sim.advance()
        return render(sim)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_log_normal_latency_has_the_requested_mean_and_p95() -> None:
    model = LatencyModel(80, 200)
    assert model.quantile(0.95) == pytest.approx(200)
    assert model.cdf(model.quantile(0.3)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="mean < p95"):
        LatencyModel(100, 90)


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = [(10.0, 50.0), (100.0, 90.0), (1000.0, 100.0)]
    assert histogram_quantile(0.5, buckets, 100) == 10.0
    assert histogram_quantile(0.7, buckets, 100) == pytest.approx(55.0)
    assert histogram_quantile(0.25, buckets, 100) == pytest.approx(5.0)
    assert histogram_quantile(0.99, [(10.0, 50.0)], 100) == 10.0  # in +Inf: the last bound


_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-z_]+="(?:[^"\\\n]|\\[\\"n])*",?)*\} \S+$')


def test_the_metrics_page_is_prometheus_text_with_istio_names_and_labels() -> None:
    clock = Clock()
    sim = simulator({"productpage-v1": 70, "productpage-v2": 30}, clock)
    sim.advance()
    clock.now += 10
    sim.advance()
    page = render(sim, service="productpage")
    lines = page.splitlines()
    assert all(line.startswith("# ") or _SAMPLE.match(line) for line in lines)
    assert "# TYPE istio_requests_total counter" in lines
    assert "# TYPE istio_request_duration_milliseconds histogram" in lines
    v2_ok = (
        'istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'source_workload_namespace="istio-system",source_canonical_service="istio-ingressgateway",'
        'source_app="istio-ingressgateway",destination_workload="productpage-v2",'
        'destination_workload_namespace="bookinfo",'
        'destination_service="productpage.bookinfo.svc.cluster.local",'
        'destination_service_name="productpage",destination_service_namespace="bookinfo",'
        'destination_canonical_service="productpage",'
        'destination_canonical_revision="productpage-v2",destination_app="productpage",'
        'destination_version="productpage-v2",request_protocol="http",response_code="200",'
        'response_flags="-",connection_security_policy="unknown"} 285'
    )
    assert v2_ok in lines
    assert sum(
        line.startswith("istio_request_duration_milliseconds_bucket{") for line in lines
    ) == (
        2 * 2 * 2 * (len(ISTIO_BUCKETS_MS) + 1)  # versions x reporters x outcomes x (le + Inf)
    )


def test_several_simulators_share_one_page_each_family_declared_once() -> None:
    clock = Clock()
    sims = [
        TrafficSimulator(
            PROFILES,
            lambda v: {"productpage-v1": 100}.get(v, 0),
            namespace=namespace,
            clock=clock,
            requests_per_second=100.0,
        )
        for namespace in ("team-a", "team-b")
    ]
    for sim in sims:
        sim.advance()
    clock.now += 1
    for sim in sims:
        sim.advance()
    lines = render(sims, service="productpage").splitlines()
    types = [line for line in lines if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    for namespace in ("team-a", "team-b"):
        assert any(
            line.startswith("istio_requests_total{")
            and f'destination_workload_namespace="{namespace}"' in line
            and 'destination_workload="productpage-v1"' in line
            and 'reporter="source"' in line
            and 'response_code="200"' in line
            and int(line.rsplit(" ", 1)[1]) > 90  # 100 requests, 1 % of them errors
            for line in lines
        )
    assert render([]) == "\n"


def test_each_proxy_family_can_be_left_out() -> None:
    clock = Clock()
    sim = simulator({"productpage-v1": 100}, clock)
    page = render(sim, families=("linkerd",))
    assert "response_total{" in page
    assert "istio_requests_total" not in page
    with pytest.raises(ValueError, match="unknown proxy families"):
        render(sim, families=("consul",))


@given(value=st.text())
def test_label_values_are_escaped_for_the_text_format(value: str) -> None:
    escaped = escape_label_value(value)
    assert "\n" not in escaped
    assert re.fullmatch(r'(?:[^"\\]|\\[\\"n])*', escaped, flags=re.DOTALL)
    decoded = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), escaped)
    assert decoded == value
