"""Metric documents: Iter8 v2alpha2 files load as written; what we cannot honour is said."""

from __future__ import annotations

from reconciler.spec.metric import JQ_EXPRESSION, MetricType, load_metrics, looks_like_metric
from reconciler.spec.template import Context

ITER8 = b"""\
apiVersion: v1
kind: Namespace
metadata:
  name: iter8-istio
---
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: error-rate
  namespace: iter8-istio
spec:
  description: Fraction of requests with error responses
  jqExpression: .data.result[0].value[1] | tonumber
  params:
  - name: query
    value: |
      (sum(increase(istio_requests_total{response_code=~'5..',reporter='source',destination_workload='$name',destination_workload_namespace='$namespace'}[${elapsedTime}s])) or on() vector(0)) / (sum(increase(istio_requests_total{reporter='source',destination_workload='$name',destination_workload_namespace='$namespace'}[${elapsedTime}s])) or on() vector(0))
  provider: prometheus
  sampleSize: request-count
  type: Gauge
  urlTemplate: http://prometheus-operated.iter8-system:9090/api/v1/query
---
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: request-count
spec:
  description: Number of requests
  jqExpression: .data.result[0].value[1] | tonumber
  params:
  - name: query
    value: |
      sum(increase(istio_requests_total{reporter='source',destination_workload='$name',destination_workload_namespace='$namespace'}[${elapsedTime}s]))
  provider: prometheus
  type: Counter
"""  # noqa: E501 - Iter8's samples write each query on one line


def metric_doc(spec: str, api_version: str = "iter8.tools/v2alpha2") -> bytes:
    return (
        f"apiVersion: {api_version}\nkind: Metric\nmetadata:\n  name: m\nspec:\n{spec}"
    ).encode()


def test_iter8_documents_load_with_namespace_or_without() -> None:
    result = load_metrics("metrics/istio.yaml", ITER8)
    assert result.errors == ()
    error_rate, request_count = result.metrics
    assert (error_rate.ref, error_rate.metric_type, error_rate.sample_size) == (
        "iter8-istio/error-rate",
        MetricType.GAUGE,
        "request-count",
    )
    assert request_count.namespace is None
    assert request_count.metric_type is MetricType.COUNTER
    assert error_rate.query is not None
    assert {p.name for p in error_rate.query.placeholders} == {"name", "namespace", "elapsedTime"}
    assert all(
        p.context is Context.SINGLE
        for p in error_rate.query.placeholders
        if p.name != "elapsedTime"
    )


def test_url_template_is_not_used_and_a_warning_says_the_configured_prometheus_is() -> None:
    warnings = [p for p in load_metrics("m.yaml", ITER8).problems if p.severity == "warning"]
    assert [str(w) for w in warnings] == [
        (
            "m.yaml:21:3: warning: 'spec.urlTemplate' is not used: queries go to the Prometheus "
            "configured for the reconciler (--prometheus-url), never to a URL named in the Env repo"
        )
    ]


def test_any_other_jq_expression_is_an_error_that_says_so() -> None:
    result = load_metrics(
        "m.yaml",
        metric_doc(
            "  jqExpression: .data.result | length\n  params:\n  - name: query\n    value: sum(x)\n"
        ),
    )
    assert result.metrics == ()
    (error,) = result.errors
    assert (error.location.line, error.location.column) == (6, 3)
    assert "'.data.result | length' is not supported: jq is never run" in error.message
    assert JQ_EXPRESSION in error.message


def test_the_common_jq_expression_is_accepted_with_any_spacing() -> None:
    doc = metric_doc(
        "  jqExpression: ' .data.result[0].value[1]|tonumber '\n"
        "  params:\n  - name: query\n    value: sum(x)\n"
    )
    assert load_metrics("m.yaml", doc).errors == ()


def test_a_name_outside_quotes_is_an_error_at_its_line_and_column() -> None:
    doc = metric_doc(
        '  params:\n  - name: query\n    value: |\n      sum(x)\n      / sum(y{a="b"}) by ($name)\n'
    )
    (error,) = load_metrics("m.yaml", doc).errors
    assert str(error).startswith("m.yaml:10:27: error: 'spec.params[0].value': '$name' must be")


def test_a_name_outside_quotes_on_one_line_points_at_it() -> None:
    doc = metric_doc("  query: sum(x{$name})\n", api_version="reconciler/v1alpha1")
    (error,) = load_metrics("m.yaml", doc).errors
    assert (error.location.line, error.location.column) == (6, 16)


def test_another_provider_is_refused() -> None:
    doc = metric_doc("  provider: newrelic\n  params:\n  - name: nrql\n    value: SELECT 1\n")
    (error,) = load_metrics("m.yaml", doc).errors
    assert "provider 'newrelic' is not supported" in error.message


def test_our_own_format_is_a_query_and_little_else() -> None:
    doc = metric_doc(
        "  description: Mean latency\n  type: Gauge\n  units: milliseconds\n"
        "  sampleSize: istio/request-count\n"
        '  query: sum(increase(x_sum{w="$name"}[${elapsedTime}])) / '
        'sum(increase(x_count{w="$name"}[${elapsedTime}]))\n',
        api_version="reconciler/v1alpha1",
    )
    result = load_metrics("m.yaml", doc)
    assert result.problems == ()
    (metric,) = result.metrics
    assert (metric.units, metric.sample_size) == ("milliseconds", "istio/request-count")


def test_iter8_mock_metrics_load_with_a_warning_that_they_are_constants() -> None:
    doc = metric_doc(
        "  mock:\n  - name: productpage-v1\n    level: 15.0\n  - name: v2\n    level: '20'\n"
    )
    result = load_metrics("m.yaml", doc)
    (metric,) = result.metrics
    assert metric.mock == (("productpage-v1", 15.0), ("v2", 20.0))
    assert metric.query is None
    assert any("constants, not measurements" in p.message for p in result.problems)


def test_bad_type_bad_sample_size_and_missing_query_are_errors() -> None:
    cases = {
        "  type: Histogram\n  params: []\n": "'spec.type' must be one of Counter, Gauge, not",
        "  sampleSize: A/B/C\n  params: []\n": "'spec.sampleSize' must name a metric",
        "  params:\n  - name: other\n    value: x\n": "has no 'query' param",
    }
    for spec, message in cases.items():
        (error,) = load_metrics("m.yaml", metric_doc(spec)).errors
        assert message in error.message


def test_unknown_fields_refuse_our_metrics_and_other_kinds_are_skipped() -> None:
    doc = metric_doc("  query: sum(x)\n  qurey: sum(y)\n", api_version="reconciler/v1alpha1")
    result = load_metrics("m.yaml", doc + b"---\nkind: Experiment\napiVersion: x\n")
    assert result.metrics == ()
    (error,) = result.errors
    assert "unknown field 'spec.qurey' (did you mean 'query'?" in error.message
    assert (error.location.line, error.location.column) == (7, 3)


def test_unknown_fields_of_iter8_metrics_are_warnings_unless_strict() -> None:
    doc = ITER8.split(b"---\n")[2] + b"  kolour: x\n"
    result = load_metrics("m.yaml", doc)
    assert len(result.metrics) == 1
    assert [p.severity for p in result.problems if "kolour" in p.message] == ["warning"]
    strict = load_metrics("m.yaml", doc, strict=True)
    assert strict.metrics == ()
    assert [p.message for p in strict.errors if "kolour" in p.message]


def test_not_yaml_is_one_error_with_its_position() -> None:
    (error,) = load_metrics("m.yaml", b"kind: Metric\nspec: [\n").errors
    assert error.location.file == "m.yaml"
    assert "not valid YAML" in error.message


def test_the_prefilter_finds_metric_files_only() -> None:
    assert looks_like_metric(ITER8)
    assert not looks_like_metric(b"kind: MetricSomething\n")
    assert not looks_like_metric(b"kind: Experiment\n")
