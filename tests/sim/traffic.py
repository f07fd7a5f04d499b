"""Simulated traffic: each version gets its share of requests, with errors and latencies.

Each time it is advanced, a ``TrafficSimulator`` gives every version
``requests_per_second * weight/100 * seconds since the last advance`` more requests
(fractions carry over), where the weight comes from a callable (the demo's in-memory
cluster, or the test cluster). A version's ``Profile`` (``reconciler.metrics.profile``)
sets its error rate, its log-normal latency (mean and 95th percentile) and a reward per
request. Draws are deterministic: seeded low-discrepancy sequences rather than
independent random numbers, so a few hundred requests already show the profile's error
rate and latency quantiles closely, and tests can use tight tolerances. Counts are kept
per latency bucket set of each proxy family (``tests.sim.exposition`` turns them
into Prometheus text). No network, no clock of its own: the clock is passed in.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from reconciler.metrics.profile import Profile

ISTIO_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
"""Istio's (and Envoy's) default buckets for request durations, in milliseconds."""
LINKERD_BUCKETS_MS = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000,
    5000, 10000, 20000, 30000, 40000, 50000,
)  # fmt: skip
"""linkerd2-proxy's ``response_latency_ms`` buckets."""
NGINX_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""ingress-nginx's ``request_duration_seconds`` buckets (the Prometheus client's defaults)."""

_Z95 = NormalDist().inv_cdf(0.95)
_GOLDEN = (math.sqrt(5) - 1) / 2
_EDGE = 1e-9


@dataclass(frozen=True)
class LatencyModel:
    """Log-normal request durations with a given mean and 95th percentile (milliseconds)."""

    mean_ms: float
    p95_ms: float

    def __post_init__(self) -> None:
        ratio = self.p95_ms / self.mean_ms if self.mean_ms > 0 else 0.0
        if not (self.mean_ms > 0 and 1 < ratio <= math.exp(_Z95**2 / 2)):
            raise ValueError(
                f"a log-normal latency needs 0 < mean < p95 <= {math.exp(_Z95**2 / 2):.2f} x "
                f"mean; got mean {self.mean_ms} ms, p95 {self.p95_ms} ms"
            )

    @classmethod
    def of(cls, profile: Profile) -> LatencyModel:
        """The latency a demo ``Profile`` describes."""
        return cls(profile.mean_latency_ms, profile.p95_latency_ms)

    @property
    def sigma(self) -> float:
        """Standard deviation of the log of the latency."""
        # mean = exp(mu + s²/2) and p95 = exp(mu + z·s)  =>  s²/2 - z·s + ln(p95/mean) = 0
        return _Z95 - math.sqrt(_Z95**2 - 2 * math.log(self.p95_ms / self.mean_ms))

    @property
    def mu(self) -> float:
        """Mean of the log of the latency."""
        return math.log(self.mean_ms) - self.sigma**2 / 2

    def quantile(self, q: float) -> float:
        """The true ``q`` quantile, in milliseconds."""
        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(q))

    def cdf(self, ms: float) -> float:
        """Fraction of requests that take at most ``ms`` milliseconds."""
        if ms <= 0:
            return 0.0
        return NormalDist().cdf((math.log(ms) - self.mu) / self.sigma)

    def histogram_quantile(self, q: float, bounds: Sequence[float]) -> float:
        """What Prometheus' ``histogram_quantile`` reports for this latency over ``bounds``.

        A percentile from a histogram is interpolated linearly inside a bucket, so it
        differs from ``quantile`` by up to the bucket's width; this is the value a
        correct query returns when the buckets hold exactly this distribution.
        """
        return histogram_quantile(q, [(b, self.cdf(b)) for b in bounds], 1.0)


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]], total: float) -> float:
    """Prometheus' interpolation over (upper bound, cumulative count) pairs, ascending.

    ``total`` is the count of the implied ``+Inf`` bucket. Inside a bucket the value is
    interpolated linearly (the first bucket starts at 0); a rank in the ``+Inf`` bucket
    gives the highest finite bound, as Prometheus does.
    """
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            width = count - previous_count
            inside = (rank - previous_count) / width if width > 0 else 1.0
            return previous_bound + (bound - previous_bound) * inside
        previous_bound, previous_count = bound, count
    return previous_bound


BUCKET_SETS: Mapping[str, tuple[float, ...]] = {
    "istio": tuple(float(b) for b in ISTIO_BUCKETS_MS),
    "linkerd": tuple(float(b) for b in LINKERD_BUCKETS_MS),
    "nginx": tuple(float(b) for b in NGINX_BUCKETS_S),
}
"""Bucket bounds per proxy family, in the unit each family exports."""


@dataclass
class Tally:
    """Requests of one version with one outcome (success or error), as a proxy counts them."""

    count: int = 0
    sum_ms: float = 0.0
    reward: float = 0.0
    buckets: dict[str, list[int]] = field(default_factory=dict)
    """Per bucket set (``istio``, ``linkerd``, ``nginx``): requests at most each bound."""

    def add(self, latency_ms: float, reward: float) -> None:
        """Count one request that took ``latency_ms`` and earned ``reward``."""
        self.count += 1
        self.sum_ms += latency_ms
        self.reward += reward
        for family, bounds in BUCKET_SETS.items():
            counts = self.buckets.setdefault(family, [0] * len(bounds))
            value = latency_ms if family != "nginx" else latency_ms / 1000
            for index in range(bisect.bisect_left(bounds, value), len(bounds)):
                counts[index] += 1


@dataclass(frozen=True)
class VersionTraffic:
    """A snapshot of one version's simulated traffic."""

    name: str
    ok: Tally
    errors: Tally

    @property
    def requests(self) -> int:
        """All requests so far."""
        return self.ok.count + self.errors.count


class TrafficSimulator:
    """Requests for each version, following the weights the cluster currently carries."""

    def __init__(
        self,
        profiles: Mapping[str, Profile],
        weight_of: Callable[[str], int],
        *,
        namespace: str,
        clock: Callable[[], float],
        requests_per_second: float = 100.0,
        seed: int = 0,
        load_per_version: float = 0.0,
    ) -> None:
        """``profiles`` in order: the first version is the stable one (for ingress-nginx).

        Counters start at zero at the first ``advance``: the time before it has no traffic.
        ``load_per_version``: requests a second each version gets whatever the weights (a
        load generator aimed at each version's own Service, as a blue/green test needs).
        """
        if not profiles:
            raise ValueError("give at least one version's profile")
        self.namespace = namespace
        self.profiles = dict(profiles)
        self.latency = {name: LatencyModel.of(p) for name, p in self.profiles.items()}
        self._weight_of = weight_of
        self._clock = clock
        self._rate = requests_per_second
        self._load = load_per_version
        self._last: float | None = None
        self._started: float | None = None
        self._carry = dict.fromkeys(self.profiles, 0.0)
        self._offsets = {name: _offsets(seed, name) for name in self.profiles}
        self._ok = {name: Tally() for name in self.profiles}
        self._errors = {name: Tally() for name in self.profiles}
        self._lock = threading.Lock()

    @property
    def started_at(self) -> float | None:
        """Clock time of the first ``advance``, when traffic began (None: not yet)."""
        return self._started

    @property
    def versions(self) -> tuple[str, ...]:
        """Version names, the stable one first."""
        return tuple(self.profiles)

    def advance(self) -> None:
        """Add the requests each version received since the previous call."""
        with self._lock:
            now = self._clock()
            if self._last is None:
                self._last = self._started = now
                return
            seconds = max(0.0, now - self._last)
            self._last = now
            for name in self.profiles:
                share = min(100, max(0, self._weight_of(name))) / 100
                expected = (self._rate * share + self._load) * seconds + self._carry[name]
                count = math.floor(expected)
                self._carry[name] = expected - count
                for _ in range(count):
                    self._request(name)

    def _request(self, name: str) -> None:
        profile = self.profiles[name]
        error_offset, latency_offset = self._offsets[name]
        k = self._ok[name].count + self._errors[name].count
        rate = min(1.0, max(0.0, profile.error_rate))
        failed = math.floor(rate * (k + 1) + error_offset) > math.floor(rate * k + error_offset)
        u = (latency_offset + (k + 1) * _GOLDEN) % 1.0
        latency = self.latency[name].quantile(min(1 - _EDGE, max(_EDGE, u)))
        (self._errors if failed else self._ok)[name].add(latency, profile.reward)

    def snapshot(self) -> tuple[VersionTraffic, ...]:
        """Every version's counts so far (copies, safe to read while traffic goes on)."""
        with self._lock:
            return tuple(
                VersionTraffic(name, _copy(self._ok[name]), _copy(self._errors[name]))
                for name in self.profiles
            )


def _offsets(seed: int, name: str) -> tuple[float, float]:
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 - simulation, not security
    return rng.random(), rng.random()


def _copy(tally: Tally) -> Tally:
    return Tally(
        tally.count, tally.sum_ms, tally.reward, {k: list(v) for k, v in tally.buckets.items()}
    )
