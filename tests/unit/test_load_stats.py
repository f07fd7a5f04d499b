from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.load.stats import (
    BUILTIN_METRICS,
    EXACT_BELOW_MICROS,
    MAX_MICROS,
    PERCENTILES,
    Histogram,
    VersionStats,
    bucket_of,
    bucket_width,
    is_error,
    nearest_rank,
)

MICROS = st.integers(min_value=0, max_value=30_000_000)
STATUSES = st.one_of(st.none(), st.integers(min_value=100, max_value=599))


def exact_percentile(values: list[int], percentile: float) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(percentile / 100 * len(ordered)) - 1]


@pytest.mark.parametrize(
    ("status", "error"),
    [(None, True), (200, False), (204, False), (302, False), (399, False), (400, True),
     (404, True), (429, True), (500, True), (503, True)],
)  # fmt: skip
def test_an_error_is_a_4xx_or_5xx_status_or_no_answer_at_all(
    status: int | None, *, error: bool
) -> None:
    assert is_error(status) is error


@pytest.mark.parametrize(
    ("percentile", "count", "rank"),
    [(50, 4, 2), (50, 5, 3), (95, 20, 19), (95, 100, 95), (99, 100, 99), (99, 1, 1),
     (75, 8, 6), (90, 10, 9), (100, 7, 7)],
)  # fmt: skip
def test_nearest_rank_is_the_ceiling_of_p_times_n(percentile: int, count: int, rank: int) -> None:
    assert nearest_rank(percentile, count) == rank


@given(MICROS)
def test_a_bucket_holds_its_value_and_is_narrower_than_a_millisecond_below_4_seconds(
    micros: int,
) -> None:
    low, width = bucket_of(micros), bucket_width(micros)
    assert low <= micros < low + width
    assert bucket_of(low) == low
    if micros < EXACT_BELOW_MICROS:
        assert (low, width) == (micros, 1)
    if micros < 4_194_304:
        assert width <= 1000


@settings(max_examples=300)
@given(st.lists(MICROS, min_size=1, max_size=400))
def test_percentiles_are_the_nearest_rank_value_rounded_down_to_its_bucket(
    values: list[int],
) -> None:
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for percentile in PERCENTILES.values():
        exact = exact_percentile(values, percentile)
        got = histogram.percentile(percentile)
        assert got == bucket_of(exact)
        assert 0 <= exact - got < bucket_width(exact)
    assert histogram.total == len(values)
    assert histogram.sum_micros == sum(values)


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=EXACT_BELOW_MICROS - 1), min_size=1))
def test_percentiles_of_latencies_under_8_ms_are_exact(values: list[int]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for percentile in PERCENTILES.values():
        assert histogram.percentile(percentile) == exact_percentile(values, percentile)


@settings(max_examples=300)
@given(st.lists(st.tuples(STATUSES, MICROS), min_size=1, max_size=300))
def test_the_nine_metrics_follow_from_every_finished_request(
    requests: list[tuple[int | None, int]],
) -> None:
    stats = VersionStats()
    for status, micros in requests:
        stats.record(status, micros)
    n = len(requests)
    errors = sum(1 for status, _ in requests if status is None or status >= 400)
    latencies = [micros for _, micros in requests]
    values = {name: stats.metric(name) for name in BUILTIN_METRICS}
    assert all(v.status == "ok" and v.sample_size == n for v in values.values())
    assert values["request-count"].value == n
    assert values["error-count"].value == errors
    assert values["error-rate"].value == pytest.approx(errors / n)
    assert values["mean-latency"].value == pytest.approx(sum(latencies) / n / 1000)
    ordered = [values[name].value for name in PERCENTILES]
    assert ordered == sorted(ordered)  # type: ignore[type-var]
    for name, percentile in PERCENTILES.items():
        exact = exact_percentile(latencies, percentile) / 1000
        got = values[name].value
        assert got is not None
        assert 0 <= exact - got < bucket_width(exact_percentile(latencies, percentile)) / 1000
    assert sum(stats.statuses.values()) == n
    assert stats.statuses.get(-1, 0) == sum(1 for status, _ in requests if status is None)


def test_no_data_before_the_first_finished_request_and_unknown_names_are_unavailable() -> None:
    stats = VersionStats()
    for name in BUILTIN_METRICS:
        value = stats.metric(name)
        assert (value.value, value.sample_size, value.status) == (None, 0, "no-data")
    assert stats.metric("iter8-system/request-count").status == "unavailable"
    assert stats.metric("latency-42nd-percentile").status == "unavailable"


def test_transport_failures_count_as_requests_and_errors_with_their_time() -> None:
    stats = VersionStats()
    stats.record(200, 2_000)
    stats.record(None, 1_000_000)  # a 1 s timeout
    stats.record(503, 3_000)
    stats.record(302, 1_500)
    assert stats.metric("request-count").value == 4
    assert stats.metric("error-count").value == 2
    assert stats.metric("error-rate").value == 0.5
    assert stats.metric("mean-latency").value == pytest.approx(1_006.5 / 4)
    assert stats.metric("latency-50th-percentile").value == 2.0
    assert stats.metric("latency-99th-percentile").value == bucket_of(1_000_000) / 1000
    assert stats.statuses == {200: 1, -1: 1, 503: 1, 302: 1}


def test_a_latency_past_the_overflow_bound_is_kept_at_the_bound() -> None:
    histogram = Histogram()
    histogram.add(MAX_MICROS * 4)
    histogram.add(-5)
    assert histogram.percentile(99) == bucket_of(MAX_MICROS)
    assert histogram.percentile(50) == 0
    assert histogram.sum_micros == MAX_MICROS


def test_a_copy_is_independent_of_the_original() -> None:
    stats = VersionStats()
    stats.record(200, 10)
    copy = stats.copy()
    stats.record(500, 20)
    assert (copy.requests, copy.errors, copy.latency.total) == (1, 0, 1)
    assert copy.statuses == {200: 1}
