"""Metric values for the demo, derived from each version's weight and a profile.

A ``Profile`` says how a version behaves (error rate, mean latency, a reward); the request
count follows the traffic the version actually gets from the cluster (its current weight
times a request rate, accumulated over time). Metric names are matched by their last
segment (``iter8-istio/error-rate`` and ``istio/error-rate`` are both ``error-rate``).
Deterministic for a given sequence of calls; never touches a network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.ports import MetricValue
from reconciler.spec.metric import MetricDefinition


@dataclass(frozen=True)
class Profile:
    """How one version behaves under traffic."""

    error_rate: float = 0.001
    mean_latency_ms: float = 50.0
    p95_latency_ms: float = 120.0
    reward: float = 1.0


class ProfileMetrics:
    """A ``MetricsSource`` whose numbers come from profiles and the cluster's weights."""

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        weight_of: Callable[[str], int],
        clock: Callable[[], float],
        requests_per_second: float = 100.0,
        load_per_version: float = 0.0,
    ) -> None:
        """Versions not in ``profiles`` report no data.

        ``load_per_version`` is traffic each version gets whatever its weight, as a load
        generator aimed at each version's own Service would send (what a blue/green
        candidate at 0 % is validated with).
        """
        self._profiles = dict(profiles)
        self._weight_of = weight_of
        self._clock = clock
        self._rate = requests_per_second
        self._load = load_per_version
        self._requests: dict[str, float] = {}
        self._last = clock()
        self._lock = threading.Lock()

    def _advance(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        for version in self._profiles:
            share = self._weight_of(version) / 100
            gained = (share * self._rate + self._load) * elapsed
            self._requests[version] = self._requests.get(version, 0.0) + gained
        self._last = now

    def use_definitions(self, definitions: Sequence[MetricDefinition]) -> list[str]:
        """Nothing to resolve: a profile names its metrics as the experiment does."""
        del definitions
        return []

    def observe(
        self,
        metric: str,
        *,
        version: str,
        namespace: str,
        elapsed_seconds: float,
        variables: Mapping[str, str],
    ) -> MetricValue:
        """The value of ``metric`` for ``version`` so far."""
        del namespace, elapsed_seconds, variables
        with self._lock:
            self._advance()
            profile = self._profiles.get(version)
            requests = int(self._requests.get(version, 0.0))
        if profile is None:
            return MetricValue(None, None, "no-data")
        name = metric.rsplit("/", 1)[-1]
        if name == "request-count":
            return MetricValue(float(requests), requests)
        if requests == 0:
            return MetricValue(None, 0, "no-data")
        values = {
            "error-rate": profile.error_rate,
            "error-count": profile.error_rate * requests,
            "mean-latency": profile.mean_latency_ms,
            "latency-p95": profile.p95_latency_ms,
            "user-engagement": profile.reward,
            "reward": profile.reward,
        }
        if name not in values:
            return MetricValue(None, None, "no-data")
        return MetricValue(values[name], requests)
