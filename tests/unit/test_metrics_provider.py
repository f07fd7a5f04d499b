"""What the engine receives: a value with its sample size, no data, or unavailable.

Prometheus is replaced here by a recorded answer per query (the real server is in
tests/integration/prometheus); what is checked is how answers and faults become
``MetricValue``s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.metrics.catalog import Catalog
from reconciler.metrics.prometheus import (
    REUSED_MAX,
    Evaluation,
    PrometheusMetrics,
    PrometheusPermanentError,
    PrometheusTemporaryError,
    first_value,
)
from reconciler.metrics.transport import read_environment
from reconciler.ports import MetricValue


def vector(value: str) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [1700000000.0, value]}]


class Answers:
    """A QueryClient that answers by the metric name found in the query."""

    def __init__(self, answers: dict[str, Callable[[], Any] | Any]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    def query(self, promql: str) -> Any:
        self.queries.append(promql)
        for key, answer in self.answers.items():
            if key in promql:
                return answer() if callable(answer) else answer
        return []


def raise_(error: Exception) -> Callable[[], Any]:
    def answer() -> Any:
        raise error

    return answer


def observe(source: PrometheusMetrics, metric: str, version: str = "v2") -> MetricValue:
    return source.observe(
        metric, version=version, namespace="bookinfo", elapsed_seconds=60, variables={}
    )


def provider(answers: dict[str, Any], *files: tuple[str, bytes]) -> PrometheusMetrics:
    return PrometheusMetrics(Answers(answers), Catalog.from_files(files))


ERRORS = 'response_code=~"5.."'


def test_a_value_comes_with_the_request_count_as_its_sample_size() -> None:
    source = provider({"quantile": vector("123.5"), "istio_requests_total": vector("812")})
    assert observe(source, "istio/latency-p95") == MetricValue(123.5, 812, "ok")
    assert observe(source, "istio/request-count") == MetricValue(812.0, 812, "ok")


def test_no_series_is_no_data_not_zero() -> None:
    source = provider({"istio_requests_total": []})
    assert observe(source, "istio/request-count") == MetricValue(None, None, "no-data")


def test_zero_requests_is_a_value_of_zero() -> None:
    source = provider({"istio_requests_total": vector("0")})
    assert observe(source, "istio/request-count") == MetricValue(0.0, 0, "ok")


def test_nan_from_a_window_without_requests_is_no_data() -> None:
    source = provider({ERRORS: vector("NaN"), "istio_requests_total": vector("0")})
    assert observe(source, "istio/error-rate") == MetricValue(None, 0, "no-data")


def test_infinities_are_no_data_because_no_limit_can_judge_them() -> None:
    assert first_value(vector("+Inf")) == (None, "the value is +Inf")


def test_a_scalar_result_is_read_like_a_vector() -> None:
    assert first_value([1700000000.0, "2.5"]) == (2.5, None)


def test_a_range_vector_is_a_permanent_error() -> None:
    with pytest.raises(PrometheusPermanentError, match="range vector"):
        first_value([{"metric": {}, "values": [[1, "1"]]}])


def test_prometheus_failing_is_unavailable_never_a_value() -> None:
    source = provider({"istio": raise_(PrometheusTemporaryError("cannot connect to http://p"))})
    evaluation = source.evaluate(
        "istio/error-rate", version="v2", namespace="bookinfo", elapsed_seconds=60, variables={}
    )
    assert evaluation.result == MetricValue(None, None, "unavailable")
    assert evaluation.reason == "cannot connect to http://p"
    assert evaluation.query is not None
    assert "istio_requests_total" in evaluation.query


def test_an_unknown_metric_is_unavailable_with_the_reason() -> None:
    evaluation = provider({}).evaluate(
        "istio/apdex", version="v2", namespace="bookinfo", elapsed_seconds=60, variables={}
    )
    assert evaluation.result.status == "unavailable"
    assert evaluation.reason is not None
    assert "has no metric 'apdex'" in evaluation.reason


def test_a_query_needing_a_variable_the_version_lacks_is_unavailable() -> None:
    metric = b"""\
apiVersion: reconciler/v1alpha1
kind: Metric
metadata: {name: by-image, namespace: team}
spec:
  query: sum(x{image="$image"})
"""
    source = provider({"sum(x": vector("1")}, ("m.yaml", metric))
    assert observe(source, "team/by-image").status == "unavailable"
    with_variable = source.observe(
        "team/by-image",
        version="v2",
        namespace="bookinfo",
        elapsed_seconds=60,
        variables={"image": 'repo/app:"2"'},
    )
    assert with_variable == MetricValue(1.0, None, "ok")


ITER8 = b"""\
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: mean-latency
spec:
  params:
  - name: query
    value: sum(increase(lat_sum{w='$name'}[${elapsedTime}s])) / sum(increase(lat_count{w='$name'}[${elapsedTime}s]))
  sampleSize: request-count
---
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: request-count
spec:
  params:
  - name: query
    value: sum(increase(reqs{w='$name'}[${elapsedTime}s]))
---
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: user-engagement
spec:
  mock:
  - {name: v1, level: 15.0}
  - {name: v2, level: 20.0}
"""  # noqa: E501 - Iter8's samples write each query on one line


def test_sample_size_without_namespace_resolves_next_to_its_metric() -> None:
    answers = Answers({"lat_sum": vector("80"), "reqs": vector("400.4")})
    source = PrometheusMetrics(answers, Catalog.from_files([("m.yaml", ITER8)]))
    assert observe(source, "iter8-istio/mean-latency") == MetricValue(80.0, 400, "ok")
    assert answers.queries == [
        "sum(increase(lat_sum{w='v2'}[60s])) / sum(increase(lat_count{w='v2'}[60s]))",
        "sum(increase(reqs{w='v2'}[60s]))",
    ]


def test_a_failing_sample_size_keeps_the_value_without_a_sample_size() -> None:
    source = provider(
        {
            "quantile": vector("99"),
            "istio_requests_total": raise_(PrometheusTemporaryError("down")),
        }
    )
    assert observe(source, "istio/latency-p99") == MetricValue(99.0, None, "ok")


def test_mock_metrics_give_their_level_and_nothing_for_other_versions() -> None:
    source = PrometheusMetrics(Answers({}), Catalog.from_files([("m.yaml", ITER8)]))
    assert observe(source, "iter8-istio/user-engagement") == MetricValue(20.0, None, "ok")
    assert observe(source, "iter8-istio/user-engagement", "v3").status == "no-data"


def test_the_json_shape_of_an_evaluation() -> None:
    evaluation = Evaluation("istio/error-rate", "v2", MetricValue(0.01, 800, "ok"), "q")
    assert evaluation.as_json() == {
        "metric": "istio/error-rate",
        "version": "v2",
        "value": 0.01,
        "sample_size": 800,
        "status": "ok",
        "query": "q",
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_versions_request_count_is_asked_once_a_tick_for_its_value_and_sample_sizes() -> None:
    answers = Answers({"istio_requests_total": vector("120"), "response_code": vector("3")})
    source = PrometheusMetrics(answers, Catalog.from_files(()), clock=Clock())
    count = observe(source, "istio/request-count")
    rate = observe(source, "istio/error-rate")
    assert (count.value, rate.sample_size) == (120, 120)
    assert len(answers.queries) == len(set(answers.queries))  # nothing asked twice


def test_an_answer_is_asked_again_once_it_is_a_second_old() -> None:
    clock = Clock()
    answers = Answers({"istio_requests_total": vector("120")})
    source = PrometheusMetrics(answers, Catalog.from_files(()), clock=clock)
    observe(source, "istio/request-count")
    clock.now = 0.9
    observe(source, "istio/request-count")
    assert len(answers.queries) == 1
    clock.now = 1.0
    answers.answers["istio_requests_total"] = vector("150")
    assert observe(source, "istio/request-count").value == 150
    assert len(answers.queries) == 2


def test_a_failed_query_is_not_remembered() -> None:
    answers = Answers({"istio_requests_total": raise_(PrometheusTemporaryError("down"))})
    source = PrometheusMetrics(answers, Catalog.from_files(()), clock=Clock())
    assert observe(source, "istio/request-count").status == "unavailable"
    answers.answers["istio_requests_total"] = vector("7")
    assert observe(source, "istio/request-count").value == 7


def test_at_most_a_bounded_number_of_answers_are_kept() -> None:
    answers = Answers({"istio_requests_total": vector("1")})
    source = PrometheusMetrics(answers, Catalog.from_files(()), clock=Clock())
    for version in range(REUSED_MAX + 10):
        observe(source, "istio/request-count", version=f"v{version}")
    assert len(source._recent) <= REUSED_MAX  # noqa: SLF001 - the bound is the point
    observe(source, "istio/request-count", version="v0")  # the oldest went first
    assert answers.queries[-1] == answers.queries[0]


def test_the_environment_is_read_once_for_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "prometheus.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine prometheus.example login reader password s3cret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    proxied = read_environment("https://prometheus.example")
    assert proxied.proxy == "http://proxy.example:3128"
    assert proxied.ca_bundle == "/etc/ssl/corp.pem"
    assert proxied.basic_auth == ("reader", "s3cret")
    direct = read_environment("https://prometheus.internal")
    assert direct.proxy is None
    assert direct.basic_auth is None  # no netrc entry for it
    own_ca = read_environment("https://prometheus.example", ca_file=Path("/etc/ca.pem"))
    assert own_ca.ca_bundle == "/etc/ca.pem"  # the setting wins
    in_url = read_environment("https://ops:p%40ss@prometheus.example")
    assert in_url.basic_auth == ("ops", "p@ss")  # the URL's wins over netrc, unquoted
    token = read_environment("https://ops:pw@prometheus.example", token_file=netrc)
    assert token.basic_auth is None  # the bearer token is the only credential sent
