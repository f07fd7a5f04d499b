"""Which metric an experiment's name means: builtin, document, Iter8's builtin ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.metrics.builtin import BUILTIN, LIBRARIES
from reconciler.metrics.catalog import Catalog, MetricNotFoundError
from reconciler.spec.metric import load_metrics


def doc(name: str, namespace: str | None = None, query: str = "sum(x)") -> bytes:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return (
        f"apiVersion: reconciler/v1alpha1\nkind: Metric\nmetadata:\n  name: {name}{ns}\n"
        f"spec:\n  query: {query}\n"
    ).encode()


def catalog(*files: tuple[str, bytes], library: str = "istio") -> Catalog:
    return Catalog.from_files(files, iter8_system_library=library)


def test_every_library_has_the_same_seven_metrics() -> None:
    names = {"request-count", "error-count", "error-rate", "mean-latency"}
    names |= {"latency-p50", "latency-p95", "latency-p99"}
    for library in LIBRARIES:
        assert {d.name for d in BUILTIN.values() if d.namespace == library.name} == names


def test_istio_queries_use_istios_metric_names_and_labels() -> None:
    text = " ".join(d.query.text for d in BUILTIN.values() if d.namespace == "istio" and d.query)
    for word in (
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_duration_milliseconds_sum",
        'destination_workload="$name"',
        'destination_workload_namespace="$namespace"',
        'response_code=~"5.."',
        'reporter="source"',
    ):
        assert word in text


def test_builtin_names_resolve_whatever_the_experiment_namespace() -> None:
    resolved = catalog().resolve("istio/error-rate", "bookinfo")
    assert resolved.definition is BUILTIN["istio/error-rate"]
    assert resolved.definition.sample_size == "istio/request-count"


def test_a_document_without_namespace_answers_to_any_namespace() -> None:
    cat = catalog(("m.yaml", doc("error-rate")))
    resolved = cat.resolve("iter8-istio/error-rate", "default")
    assert resolved.definition.path == "m.yaml"
    assert resolved.namespace == "iter8-istio"


def test_a_bare_name_resolves_in_the_experiment_namespace() -> None:
    cat = catalog(("a.yaml", doc("latency", "team-a")), ("b.yaml", doc("latency", "team-b")))
    assert cat.resolve("latency", "team-b").definition.path == "b.yaml"
    with pytest.raises(MetricNotFoundError, match="no metric team-c/latency"):
        cat.resolve("latency", "team-c")


def test_two_unscoped_documents_with_one_name_are_ambiguous() -> None:
    cat = catalog(("a.yaml", doc("x")), ("b.yaml", doc("x")))
    with pytest.raises(MetricNotFoundError, match=r"ambiguous.*a\.yaml, b\.yaml"):
        cat.resolve("ns/x", "default")


def test_iter8_builtin_metrics_map_to_the_configured_library_where_the_meaning_is_the_same() -> (
    None
):
    assert (
        catalog().resolve("iter8-system/latency-95th-percentile", "d").definition
        is BUILTIN["istio/latency-p95"]
    )
    nginx = catalog(library="nginx").resolve("iter8-system/request-count", "d")
    assert nginx.definition is BUILTIN["nginx/request-count"]


def test_iter8_error_metrics_are_not_mapped_because_they_counted_4xx() -> None:
    with pytest.raises(MetricNotFoundError, match="no builtin equivalent"):
        catalog().resolve("iter8-system/error-rate", "d")


def test_builtin_namespaces_are_reserved() -> None:
    cat = catalog(("m.yaml", doc("error-rate", "istio")))
    assert cat.resolve("istio/error-rate", "d").definition.builtin
    (warning,) = cat.problems
    assert "reserved for the builtin library" in warning.message
    with pytest.raises(MetricNotFoundError, match="has no metric 'latency-p90'"):
        cat.resolve("istio/latency-p90", "d")


def test_a_document_defined_twice_keeps_the_first_and_warns() -> None:
    cat = catalog(("a.yaml", doc("x", "ns")), ("b.yaml", doc("x", "ns")))
    assert cat.resolve("ns/x", "d").definition.path == "a.yaml"
    assert "defined again" in cat.problems[0].message


def test_load_problems_are_kept_and_broken_documents_left_out() -> None:
    cat = catalog(("a.yaml", doc("x", query="sum(y{$name})")))
    assert [p.severity for p in cat.problems] == ["error"]
    assert cat.documents == ()


@pytest.mark.parametrize("reference", ["", "A/B", "a/b/c", "-x"])
def test_malformed_references_are_refused(reference: str) -> None:
    with pytest.raises(MetricNotFoundError, match="not a metric reference"):
        catalog().resolve(reference, "d")


def test_catalog_accepts_loaded_documents_directly() -> None:
    loaded = load_metrics("m.yaml", doc("x", "ns")).metrics
    assert Catalog(loaded).resolve("ns/x", "d").definition == loaded[0]
    with pytest.raises(ValueError, match="iter8_system_library"):
        Catalog(iter8_system_library="consul")


def test_docs_show_every_builtin_query_exactly_as_sent() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for reference, definition in BUILTIN.items():
        assert definition.query is not None
        assert f"```promql\n{definition.query.text}\n```" in docs, reference
