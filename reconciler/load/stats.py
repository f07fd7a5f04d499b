"""What the built-in load measured for one version, as Iter8's nine built-in metrics.

``VersionStats`` counts every finished request of one version of one run since the run
started loading: the request count, the error count and a latency histogram, from which
``metric`` answers ``request-count``, ``error-count``, ``error-rate``, ``mean-latency`` and
``latency-<50|75|90|95|99>th-percentile``. A request is counted when it finishes (an answer
read to its end, or a failure); one still in flight is not counted yet.

**What an error is.** Iter8 v0.7 defines ``error-count`` as the responses with an HTTP status
of 4xx or 5xx (``mkdocs/docs/metrics/builtin.md`` and the ``iter8-system`` Metric files of
``install/builtin-metrics/metrics.yaml`` at v0.7.30), and Iter8's later Go code says the same
as ``errorRanges`` defaulting to ``{lower: 400}`` (``base/collect.go`` at v0.8.0). So a status
of 400 or above is an error; 1xx, 2xx and 3xx are not (a redirect is never followed: its 3xx
is the answer). Iter8 measured with fortio, which records a request that got no HTTP answer
(a timeout, a refused or reset connection, a name that does not resolve) with the pseudo
status -1, in its request count and in its duration histogram. We count such a failure as a
request *and* as an error: a version that does not answer must never look healthier than
one that answers 500 (Iter8 v0.8's ``errorCode`` let -1 through under its default range;
we do not follow that gap). Its latency is the time until it failed (a timeout: the
timeout), as fortio records it; ``sample_size`` is the request count for every metric.

**Latency.** In milliseconds, from the request's start to the end of the answer's body. The
histogram (``Histogram``) keeps integer microseconds, exact below 8.192 ms and to within
1/8192 of the value above (HDR-style buckets: under 1 ms of error up to 4.19 s, which covers
every latency an objective is written for, 2 ms up to 16.7 s); the mean is exact (a sum of
microseconds).
Percentiles are by the **nearest-rank** method: the p-th percentile of n values is the
``ceil(p/100 * n)``-th smallest, reported as the lower bound of its bucket.

What it must never do: I/O, clocks or locks (the generator records and reads it under its
own lock), or count a request twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.ports import MetricValue

__all__ = [
    "BUILTIN_METRICS",
    "EXACT_BELOW_MICROS",
    "MAX_MICROS",
    "PERCENTILES",
    "Histogram",
    "VersionStats",
    "bucket_of",
    "bucket_width",
    "is_error",
    "nearest_rank",
]

PERCENTILES: Mapping[str, int] = {
    "latency-50th-percentile": 50,
    "latency-75th-percentile": 75,
    "latency-90th-percentile": 90,
    "latency-95th-percentile": 95,
    "latency-99th-percentile": 99,
}
BUILTIN_METRICS: tuple[str, ...] = (
    "request-count",
    "error-count",
    "error-rate",
    "mean-latency",
    *PERCENTILES,
)
"""Iter8's built-in metrics (``iter8-system/<name>``), by their names without namespace."""

_SUB_BITS = 13
EXACT_BELOW_MICROS = 1 << _SUB_BITS
"""Latencies under this many microseconds (8.192 ms) are kept exactly."""
MAX_MICROS = 1 << 36
"""About 19 hours: a longer latency is kept as this (the overflow bucket)."""
ERROR_STATUS = 400
"""The lowest HTTP status that is an error (Iter8's 4xx and 5xx)."""


def is_error(status: int | None) -> bool:
    """Whether a finished request is an error: no HTTP answer (None), or a 4xx or 5xx status."""
    return status is None or status >= ERROR_STATUS


def bucket_of(micros: int) -> int:
    """The bucket holding ``micros``, named by its lowest value (negative values: 0)."""
    value = min(max(micros, 0), MAX_MICROS)
    shift = value.bit_length() - _SUB_BITS
    if shift <= 0:
        return value
    return (value >> shift) << shift


def bucket_width(micros: int) -> int:
    """How many microseconds the bucket holding ``micros`` spans (1 below 8.192 ms)."""
    value = min(max(micros, 0), MAX_MICROS)
    return 1 << max(0, value.bit_length() - _SUB_BITS)


def nearest_rank(percentile: float, count: int) -> int:
    """The 1-based rank of the ``percentile``-th percentile of ``count`` values (nearest rank)."""
    if count <= 0:
        raise ValueError("no values")
    # round() first: 0.95 * 100 is 95.00000000000001, whose ceil would be one rank too far
    return min(count, max(1, math.ceil(round(percentile / 100 * count, 9))))


@dataclass
class Histogram:
    """Latencies in integer microseconds, counted per bucket (sparse: only buckets seen)."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    """How many values were added."""
    sum_micros: int = 0
    """Their exact sum (each value as given, before bucketing)."""

    def add(self, micros: int) -> None:
        """Count one latency."""
        value = min(max(micros, 0), MAX_MICROS)
        key = bucket_of(value)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        self.sum_micros += value

    def percentile(self, percentile: float) -> int:
        """The nearest-rank ``percentile`` in microseconds (its bucket's lowest value).

        Raises:
            ValueError: the histogram is empty.
        """
        rank = nearest_rank(percentile, self.total)
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                return key
        raise AssertionError("counts do not add up to total")  # pragma: no cover

    def copy(self) -> Histogram:
        """An independent copy (read outside the lock that guards the original)."""
        return Histogram(dict(self.counts), self.total, self.sum_micros)


@dataclass
class VersionStats:
    """Every finished request of one version of one run: counts and latencies."""

    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    """Finished requests by HTTP status; ``-1``: no HTTP answer (fortio's pseudo status)."""
    latency: Histogram = field(default_factory=Histogram)

    def record(self, status: int | None, micros: int) -> None:
        """Count one finished request: its status (None: no HTTP answer) and its latency."""
        self.requests += 1
        if is_error(status):
            self.errors += 1
        key = -1 if status is None else status
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self.latency.add(micros)

    def copy(self) -> VersionStats:
        """An independent copy (read outside the lock that guards the original)."""
        return VersionStats(self.requests, self.errors, dict(self.statuses), self.latency.copy())

    def metric(self, name: str) -> MetricValue:
        """One of ``BUILTIN_METRICS``: ``no-data`` before the first finished request.

        An unknown name is ``unavailable``: no value can ever be given for it.
        """
        if name not in BUILTIN_METRICS:
            return MetricValue(None, None, "unavailable")
        n = self.requests
        if n == 0:
            return MetricValue(None, 0, "no-data")
        if name == "request-count":
            value = float(n)
        elif name == "error-count":
            value = float(self.errors)
        elif name == "error-rate":
            value = self.errors / n
        elif name == "mean-latency":
            value = self.latency.sum_micros / self.latency.total / 1000
        else:
            value = self.latency.percentile(PERCENTILES[name]) / 1000
        return MetricValue(value, n)
