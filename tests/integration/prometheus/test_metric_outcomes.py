"""No data, Prometheus down, slow or refusing a query: each has its outcome, never a pass.

And version names that try to rewrite a query: with the real PromQL parser and engine,
they only ever select series whose label is exactly that name.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli.metrics_cmd import metrics as metrics_group
from reconciler.engine.analysis import PASS, default_min_requests, judge_version
from reconciler.metrics.catalog import Catalog
from reconciler.metrics.prometheus import (
    ATTEMPTS,
    Evaluation,
    PrometheusClient,
    PrometheusConfig,
    PrometheusMetrics,
    PrometheusPermanentError,
)
from reconciler.metrics.promql import Bindings, render
from reconciler.ports import MetricValue
from reconciler.spec.model import Objective
from reconciler.spec.template import parse_query
from tests.fixtures.net import free_port
from tests.fixtures.prometheus import (
    HOSTILE,
    NAMESPACE,
    RATE,
    FaultyProxy,
    PrometheusServer,
    Traffic,
)

# One worker warms Prometheus up (``warmed``, about 14 s of traffic), not both.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("prometheus")]

OBJECTIVES = (
    Objective("istio/error-rate", upper_limit=0.02),
    Objective("istio/mean-latency", upper_limit=300),
)


def source(url: str, catalog: Catalog | None = None, timeout: float = 5.0) -> PrometheusMetrics:
    client = PrometheusClient(PrometheusConfig(url, timeout_seconds=timeout))
    return PrometheusMetrics(client, catalog or Catalog())


def ask(
    metrics: PrometheusMetrics,
    traffic: Traffic,
    metric: str = "istio/request-count",
    *,
    version: str = "productpage-v1",
) -> Evaluation:
    """``metric`` for ``version`` over the time the traffic ran, as an experiment asks."""
    return metrics.evaluate(
        metric,
        version=version,
        namespace=NAMESPACE,
        elapsed_seconds=traffic.elapsed(),
        variables={},
    )


def observe_all(
    metrics: PrometheusMetrics, version: str, traffic: Traffic
) -> dict[str, MetricValue]:
    names = ["istio/request-count", *(o.metric for o in OBJECTIVES)]
    return {name: ask(metrics, traffic, name, version=version).result for name in names}


def verdict(values: dict[str, MetricValue]) -> str:
    """What the engine decides on these values (a healthy version passes)."""
    return judge_version(
        OBJECTIVES,
        values,
        request_count="istio/request-count",
        method="exact",
        confidence=0.95,
        min_requests=default_min_requests(OBJECTIVES, 0.95),
    ).verdict


def test_a_healthy_version_passes_so_the_checks_below_mean_something(
    warmed: Traffic, prometheus: PrometheusServer
) -> None:
    values = observe_all(source(prometheus.url), "productpage-v1", warmed)
    assert verdict(values) == PASS


def test_a_version_without_traffic_has_zero_requests_and_no_data_for_rates(
    warmed: Traffic, prometheus: PrometheusServer
) -> None:
    values = observe_all(source(prometheus.url), "productpage-v3", warmed)
    assert values["istio/request-count"] == MetricValue(0.0, 0, "ok")
    assert values["istio/error-rate"] == MetricValue(None, 0, "no-data")
    assert values["istio/mean-latency"] == MetricValue(None, 0, "no-data")
    assert verdict(values) != PASS


def test_a_version_prometheus_never_saw_is_no_data_not_zero(
    warmed: Traffic, prometheus: PrometheusServer
) -> None:
    values = observe_all(source(prometheus.url), "productpage-v9", warmed)
    assert {v.status for v in values.values()} == {"no-data"}
    assert {v.value for v in values.values()} == {None}
    assert verdict(values) != PASS


def test_prometheus_down_is_unavailable_after_bounded_retries(warmed: Traffic) -> None:
    started = time.monotonic()
    values = observe_all(
        source(f"http://127.0.0.1:{free_port()}", timeout=1), "productpage-v1", warmed
    )
    assert {v.status for v in values.values()} == {"unavailable"}
    assert verdict(values) != PASS
    assert time.monotonic() - started < len(values) * 3.0


def test_prometheus_slower_than_the_timeout_is_unavailable(
    warmed: Traffic, proxy: FaultyProxy
) -> None:
    proxy.delay = 1.0
    metrics = source(proxy.url, timeout=0.3)
    started = time.monotonic()
    evaluation = ask(metrics, warmed, "istio/error-rate")
    took = time.monotonic() - started
    assert evaluation.result == MetricValue(None, None, "unavailable")
    assert evaluation.reason is not None
    assert "did not answer within 0.3 s" in evaluation.reason
    assert len(proxy.requests) == ATTEMPTS
    assert took < ATTEMPTS * 0.3 + 2.5  # attempts plus tenacity's waits, nothing more
    assert verdict({"istio/error-rate": evaluation.result}) != PASS


def ticks_apart() -> Callable[[], float]:
    """A clock ten seconds further at each look: queries asked a tick apart."""
    return itertools.count(0.0, 10.0).__next__


def test_a_prometheus_that_keeps_failing_is_not_asked_again_until_the_cooldown_ends(
    warmed: Traffic, proxy: FaultyProxy
) -> None:
    proxy.delay = 1.0  # hangs past the timeout
    now = [0.0]
    client = PrometheusClient(
        PrometheusConfig(proxy.url, timeout_seconds=0.3),
        clock=lambda: now[0],
        trip_after=2,
        cooldown_seconds=30.0,
    )
    # each evaluation a tick apart: no answer is reused, every one is asked of the server
    metrics = PrometheusMetrics(client, Catalog(), clock=ticks_apart())

    def evaluate() -> tuple[str, str]:
        evaluation = ask(metrics, warmed)
        return evaluation.result.status, evaluation.reason or ""

    assert [evaluate()[0] for _ in range(2)] == ["unavailable", "unavailable"]
    assert len(proxy.requests) == 2 * ATTEMPTS
    # the circuit is open: unavailable at once, and nothing reaches the server
    status, reason = evaluate()
    assert status == "unavailable"
    assert "is not asked for 30 s more: 2 queries in a row failed" in reason
    now[0] = 29.0
    assert evaluate()[0] == "unavailable"
    assert len(proxy.requests) == 2 * ATTEMPTS
    # after the cooldown one query goes out; Prometheus answers again, so all do
    proxy.delay = 0.0
    now[0] = 30.5
    assert [evaluate()[0] for _ in range(2)] == ["ok", "ok"]
    assert len(proxy.requests) == 2 * ATTEMPTS + 2


def test_after_the_cooldown_one_failed_query_opens_the_circuit_again(
    warmed: Traffic, proxy: FaultyProxy
) -> None:
    proxy.fail_first = 100  # 503 for every request
    now = [0.0]
    client = PrometheusClient(
        PrometheusConfig(proxy.url), clock=lambda: now[0], trip_after=2, cooldown_seconds=10.0
    )
    metrics = PrometheusMetrics(client, Catalog())
    for _ in range(3):
        assert ask(metrics, warmed).result.status == "unavailable"
    assert len(proxy.requests) == 2 * ATTEMPTS
    now[0] = 11.0
    for _ in range(3):
        value = ask(metrics, warmed).result
        assert value.status == "unavailable"
    assert len(proxy.requests) == 3 * ATTEMPTS  # one query half-opened it, and failed


BAD_QUERY = b"""\
apiVersion: reconciler/v1alpha1
kind: Metric
metadata: {name: broken, namespace: team}
spec:
  query: sum(rate(istio_requests_total{destination_workload="$name"}[${elapsedTime}])
"""


def test_a_query_prometheus_rejects_is_unavailable_at_once_without_retries(
    warmed: Traffic, proxy: FaultyProxy
) -> None:
    metrics = source(proxy.url, Catalog.from_files([("m.yaml", BAD_QUERY)]))
    evaluation = ask(metrics, warmed, "team/broken")
    assert evaluation.result.status == "unavailable"
    assert evaluation.reason is not None
    assert "rejected the query: bad_data" in evaluation.reason
    assert len(proxy.requests) == 1


def test_a_temporary_overload_is_retried_and_then_answers(
    warmed: Traffic, proxy: FaultyProxy
) -> None:
    proxy.fail_first = ATTEMPTS - 1
    metrics = source(proxy.url)
    value = ask(metrics, warmed).result
    assert value.status == "ok"
    assert len(proxy.requests) == ATTEMPTS


def test_the_token_file_and_headers_reach_prometheus_and_a_new_token_is_used(
    warmed: Traffic, proxy: FaultyProxy, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = PrometheusConfig(
        proxy.url, bearer_token_file=token, headers=(("X-Scope-OrgID", "team-a"),)
    )
    metrics = PrometheusMetrics(PrometheusClient(config), Catalog(), clock=ticks_apart())
    for content in ("first", "second"):
        token.write_text(content)
        assert ask(metrics, warmed).result.status == "ok"
    assert [r["Authorization"] for r in proxy.requests] == ["Bearer first", "Bearer second"]
    assert {r["X-Scope-OrgID"] for r in proxy.requests} == {"team-a"}


def test_credentials_in_the_url_reach_prometheus_as_basic_auth_and_never_a_message(
    warmed: Traffic, proxy: FaultyProxy
) -> None:
    url = proxy.url.replace("http://", "http://ops:p%40ss@")
    metrics = source(url)
    assert ask(metrics, warmed).result.status == "ok"
    sent = proxy.requests[0]["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"ops:p@ss"
    proxy.fail_first = 100  # the message of a failure names the URL without them
    reason = ask(metrics, warmed, "istio/error-rate").reason
    assert reason is not None
    assert proxy.url in reason
    assert "p%40ss" not in reason
    assert "ops" not in reason


def test_queries_go_through_the_proxy_the_environment_names_with_its_credentials(
    warmed: Traffic,
    proxy: FaultyProxy,
    prometheus: PrometheusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://relay:r%3Ak@"))
    metrics = source(prometheus.url)  # read once, as the client is built
    assert ask(metrics, warmed).result.status == "ok"
    assert len(proxy.requests) == 1
    sent = proxy.requests[0]["Proxy-Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"relay:r:k"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert ask(source(prometheus.url), warmed).result.status == "ok"
    assert len(proxy.requests) == 1  # NO_PROXY: straight to Prometheus


def test_an_answer_past_the_size_bound_is_refused_at_once_and_the_next_query_answers(
    proxy: FaultyProxy,
) -> None:
    # each label_join doubles the label: 2 KiB after 1, past 16 MiB after 14; the real
    # Prometheus builds and sends that answer
    query = 'label_replace(vector(1), "l0", "' + "x" * 1024 + '", "", "")'
    for n in range(1, 15):
        query = f'label_join({query}, "l{n}", "", "l{n - 1}", "l{n - 1}")'
    client = PrometheusClient(PrometheusConfig(proxy.url))
    with pytest.raises(PrometheusPermanentError, match=r"answered more than 16 MiB"):
        client.query(query)
    assert len(proxy.requests) == 1  # permanent: not retried
    assert client.query("vector(1)")[0]["value"][1] == "1"  # the client carries on


def test_https_with_the_configured_ca_file_works_and_without_it_fails_at_once(
    warmed: Traffic, tls_proxy: FaultyProxy
) -> None:
    def evaluate(config: PrometheusConfig) -> tuple[MetricValue, str | None]:
        evaluation = PrometheusMetrics(PrometheusClient(config), Catalog()).evaluate(
            "istio/request-count",
            version="productpage-v1",
            namespace=NAMESPACE,
            elapsed_seconds=warmed.elapsed(),
            variables={},
        )
        return evaluation.result, evaluation.reason

    trusted, _ = evaluate(PrometheusConfig(tls_proxy.url, ca_file=tls_proxy.ca_file))
    assert trusted.status == "ok"
    untrusted, reason = evaluate(PrometheusConfig(tls_proxy.url))
    assert untrusted.status == "unavailable"
    assert reason is not None
    assert "TLS verification failed: [SSL: CERTIFICATE_VERIFY_FAILED]" in reason
    assert len(tls_proxy.requests) == 1  # the trusted query; the untrusted one never got in


# -- injection -----------------------------------------------------------------------


@pytest.mark.parametrize("library", ["istio", "gateway", "nginx", "linkerd"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_version_name_selects_exactly_its_own_series(
    warmed: Traffic, prometheus: PrometheusServer, library: str, name: str
) -> None:
    value = source(prometheus.url).observe(
        f"{library}/request-count",
        version=name,
        namespace=NAMESPACE,
        elapsed_seconds=warmed.elapsed(),
        variables={},
    )
    per_second = RATE * HOSTILE[name] / 100
    assert value.status == "ok"  # its own series: not vector(1), not another version's
    assert value.value == pytest.approx(
        per_second * warmed.elapsed(), abs=max(0.03 * per_second * warmed.elapsed(), per_second)
    )


@pytest.mark.parametrize("library", ["istio", "gateway", "nginx", "linkerd"])
@pytest.mark.parametrize(
    "name",
    [
        'b"}or vector(1)#',
        "b'}) or vector(1) or sum(x{y='",
        'x"} or on() vector(1) or x{y="',
        "productpage-v.*",
        "productpage-v[0-9]",
        "productpage-v1|productpage-v2",
        'a"}or vector(1)#.*',
    ],
)
def test_a_hostile_version_name_cannot_make_a_query_return_data(
    warmed: Traffic, prometheus: PrometheusServer, library: str, name: str
) -> None:
    metrics = source(prometheus.url)
    for metric in ("request-count", "error-rate", "latency-p95"):
        evaluation = ask(metrics, warmed, f"{library}/{metric}", version=name)
        assert evaluation.result == MetricValue(None, None, "no-data"), evaluation


ORACLE = {
    '"': 'absent(nonexistent_metric{x="$name"})',
    "'": "absent(nonexistent_metric{x='$name'})",
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(min_size=1), quote=st.sampled_from(sorted(ORACLE)))
def test_prometheus_parses_every_rendered_value_back_to_itself(
    prometheus: PrometheusServer, value: str, quote: str
) -> None:
    # absent() returns the labels of its selector's equality matchers: Prometheus' own
    # parse of the literal we wrote.
    query = render(parse_query(ORACLE[quote]), Bindings.for_version(value, "ns", 1, {}))
    client = PrometheusClient(PrometheusConfig(prometheus.url))
    (sample,) = client.query(query)
    assert sample["metric"] == {"x": value}


# -- the command line ------------------------------------------------------------------


def test_metrics_query_prints_the_documented_json(
    warmed: Traffic, prometheus: PrometheusServer
) -> None:
    result = CliRunner().invoke(
        metrics_group,
        [
            "query",
            "istio/error-rate",
            "--version",
            "productpage-v2",
            "--namespace",
            NAMESPACE,
            "--elapsed",
            str(warmed.elapsed()),
            "--prometheus-url",
            prometheus.url,
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"metric", "version", "value", "sample_size", "status", "query"}
    assert printed["status"] == "ok"
    assert printed["value"] == pytest.approx(0.05, abs=0.005)
    assert printed["sample_size"] > 0
    assert 'destination_workload="productpage-v2"' in printed["query"]


def test_metrics_query_exits_1_when_prometheus_is_unavailable(warmed: Traffic) -> None:
    result = CliRunner().invoke(
        metrics_group,
        [
            "query",
            "istio/request-count",
            "--version=productpage-v1",
            f"--namespace={NAMESPACE}",
            f"--elapsed={warmed.elapsed()}",
            f"--prometheus-url=http://127.0.0.1:{free_port()}",
            "--prometheus-timeout=0.5",
        ],
    )
    assert result.exit_code == 1
    assert "status       unavailable" in result.stdout
    assert "reason       cannot connect to" in result.stdout
