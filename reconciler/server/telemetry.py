"""The process's own metrics (prometheus-client), and adapters that record them.

``Telemetry`` owns one registry with every metric the process exports (the process's own
resident memory, CPU and open file descriptors from prometheus-client's process collector,
and the Git cache's size read at each scrape among them); the wrappers
``InstrumentedMetrics`` and ``InstrumentedCluster`` sit between the loop and the real
adapters and count what crosses them (query latency and errors, Kubernetes request
errors) without the adapters knowing. prometheus-client was chosen over hand-written
exposition because it is the reference implementation of the text format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler.errors import ReconcilerError
from reconciler.ports import Cluster, MetricsSource, MetricValue, Readiness, WeightReading
from reconciler.spec.metric import MetricDefinition
from reconciler.spec.model import ObjectRef, WeightObjRef

TICK_PHASES = ("fetch", "load", "discover", "traffic", "record", "act", "outcomes", "archive")
"""The phases of a tick, in order: the only values of ``reconciler_tick_phase_seconds``'
``phase`` label (``controller.loop.TickReport.phases``)."""


class CacheStats(Protocol):
    """The Git cache on disk and its upkeep so far (``gitstore.repo.CacheStats``)."""

    @property
    def bytes(self) -> int:
        """Bytes of its packs."""

    @property
    def packs(self) -> int:
        """Pack files."""

    @property
    def merges(self) -> int:
        """Merges of small packs."""

    @property
    def repacks(self) -> int:
        """Repacks of everything reachable."""

    @property
    def failures(self) -> int:
        """Upkeep that failed."""


class _CacheCollector(Collector):
    """Reads each repo's cache figures at each scrape (a directory listing: cheap)."""

    def __init__(self) -> None:
        self.reads: dict[str, Callable[[], CacheStats]] = {}
        """Bounded by the repos served: a repo no longer served is dropped (``forget``)."""
        self.objects: Callable[[], tuple[int, int]] | None = None
        """The process's cache of parsed objects: (bytes held, bound)."""

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "reconciler_git_cache_bytes", "Bytes of the Git cache's packs on disk.", labels=["repo"]
        )
        packs = GaugeMetricFamily(
            "reconciler_git_cache_packs", "Pack files in the Git cache.", labels=["repo"]
        )
        upkeep = CounterMetricFamily(
            "reconciler_git_cache_maintenance",
            "Upkeep of the Git cache by kind: merged (small packs into one), repacked "
            "(everything reachable into one pack, the rest dropped), failed.",
            labels=["repo", "kind"],
        )
        for repo, read in sorted(dict(self.reads).items()):
            stats = read()
            size.add_metric([repo], stats.bytes)
            packs.add_metric([repo], stats.packs)
            for kind, count in (
                ("merged", stats.merges),
                ("repacked", stats.repacks),
                ("failed", stats.failures),
            ):
                upkeep.add_metric([repo, kind], count)
        yield from (size, packs, upkeep)
        if self.objects is not None:
            held, limit = self.objects()
            yield GaugeMetricFamily(
                "reconciler_git_object_cache_bytes",
                "Raw bytes of the Git objects libgit2 keeps parsed, every repo together (what it "
                "counts against its bound; the parsed objects take 2.5 to 4.7 times as much).",
                value=held,
            )
            yield GaugeMetricFamily(
                "reconciler_git_object_cache_limit_bytes",
                "The most reconciler_git_object_cache_bytes may reach.",
                value=limit,
            )


class Telemetry:
    """Every metric of the process, in one registry."""

    def __init__(self) -> None:
        """Create the registry and the metrics."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_resident_memory_bytes, process_open_fds, process_cpu_seconds_total...: a
        # registry of our own has none of the default registry's collectors.
        ProcessCollector(registry=r)
        self._cache = _CacheCollector()
        r.register(self._cache)
        self._corrected: set[tuple[str, str]] = set()
        self.tick_phase = Histogram(
            "reconciler_tick_phase_seconds",
            "Duration of each phase of a tick (fetch, load, discover, traffic, record, act, "
            "outcomes, archive), every repo together.",
            # no repo label: 8 phases x 16 series made 12,800 of the 19,000 lines of /metrics
            # at 100 repos (0.13 s of CPU a render); a slow repo shows in tick_duration
            ["phase"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.tick_duration = Histogram(
            "reconciler_tick_duration_seconds",
            "Duration of one reconcile tick.",
            ["repo"],
            registry=r,
        )
        self.ticks = Counter(
            "reconciler_ticks_total", "Ticks by result.", ["repo", "result"], registry=r
        )
        self.experiments = Gauge(
            "reconciler_experiments", "Live experiments by phase.", ["repo", "phase"], registry=r
        )
        self.pushes = Counter(
            "reconciler_git_pushes_total",
            "Pushes by branch and result (accepted, conflict, error).",
            ["repo", "branch", "result"],
            registry=r,
        )
        self.promotions = Counter(
            "reconciler_outcomes_total",
            "Outcome commits on main by outcome (promoted, rolled-back).",
            ["repo", "outcome"],
            registry=r,
        )
        self.query_duration = Histogram(
            "reconciler_prometheus_query_duration_seconds",
            "Time to evaluate one metric for one version.",
            registry=r,
        )
        self.query_errors = Counter(
            "reconciler_prometheus_query_errors_total",
            "Metric evaluations that ended unavailable.",
            registry=r,
        )
        self.kube_errors = Counter(
            "reconciler_kubernetes_request_errors_total",
            "Kubernetes requests that failed, by operation.",
            ["operation"],
            registry=r,
        )
        self.weight_corrections = Counter(
            "reconciler_weight_corrections_total",
            "Times the cluster was found carrying other weights than the state branch "
            "records, and they were set again, by live experiment (a finished one's series "
            "is dropped).",
            ["repo", "experiment"],
            registry=r,
        )
        self.experiment_errors = Counter(
            "reconciler_experiment_errors_total",
            "Errors stopped at one experiment's (or file's) boundary, each counted when first "
            "seen; the others went on. Label: the experiment, or the file it could not read.",
            ["repo", "experiment"],
            registry=r,
        )
        self.held = Gauge(
            "reconciler_experiments_held",
            "Experiments held because something keeps putting other weights back.",
            ["repo"],
            registry=r,
        )
        self.leader = Gauge(
            "reconciler_leader",
            "1 when this replica holds the repo's Lease.",
            ["repo"],
            registry=r,
        )
        self.repo_failures = Gauge(
            "reconciler_repo_failures",
            "Ticks in a row that failed for the repo (0: its last tick went well); from 3 on "
            "its circuit is open and it is tried again after a backoff.",
            ["repo"],
            registry=r,
        )
        self.notifications = Counter(
            "reconciler_notifications_total",
            "Notifications by target (webhook, apprise-N) and result: sent, failed (refused, "
            "or still failing after the retries), dropped (the target's queue was full, or "
            "still held when the process stopped).",
            ["repo", "target", "result"],
            registry=r,
        )

    def watch_cache(self, repo: str, read: Callable[[], CacheStats]) -> None:
        """Export the cache figures ``read`` gives for ``repo`` at every scrape."""
        self._cache.reads[repo] = read

    def watch_object_cache(self, read: Callable[[], tuple[int, int]]) -> None:
        """Export what ``read`` gives (bytes held, bound) for the object cache at every scrape."""
        self._cache.objects = read

    def forget(self, repo: str) -> None:
        """Drop every series of a repo no longer served, so labels stay bounded by the fleet."""
        self._cache.reads.pop(repo, None)
        for metric in self._by_repo:
            # prometheus-client lists a metric's children only through its collect()
            for family in metric.collect():
                stale = {
                    tuple(sample.labels[name] for name in metric._labelnames)  # noqa: SLF001
                    for sample in family.samples
                    if sample.labels.get("repo") == repo
                }
                for labels in stale:
                    metric.remove(*labels)
        self._corrected = {c for c in self._corrected if c[0] != repo}

    @property
    def _by_repo(self) -> tuple[Counter | Gauge | Histogram, ...]:
        return (
            self.tick_duration, self.ticks, self.experiments, self.pushes,
            self.promotions, self.weight_corrections, self.experiment_errors, self.held,
            self.leader, self.notifications, self.repo_failures,
        )  # fmt: skip

    def count_corrections(self, repo: str, corrected: Iterable[str], live: Iterable[str]) -> None:
        """Count a correction for each of ``corrected``; drop the series of the others gone.

        The label set stays bounded by the live experiments, not by every one ever run.
        """
        for experiment in corrected:
            self.weight_corrections.labels(repo, experiment).inc()
            self._corrected.add((repo, experiment))
        still = {(repo, key) for key in live}
        for gone in {c for c in self._corrected if c[0] == repo} - still:
            self.weight_corrections.remove(*gone)
            self._corrected.discard(gone)


class InstrumentedMetrics:
    """A ``MetricsSource`` that records latency and unavailable results of another one."""

    def __init__(
        self,
        inner: MetricsSource,
        telemetry: Telemetry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``inner``."""
        self._inner = inner
        self._telemetry = telemetry
        self._clock = clock

    def use_definitions(self, definitions: Sequence[MetricDefinition]) -> list[str]:
        """Hand the Metric documents to the wrapped source."""
        return self._inner.use_definitions(definitions)

    def observe(
        self,
        metric: str,
        *,
        version: str,
        namespace: str,
        elapsed_seconds: float,
        variables: Mapping[str, str],
    ) -> MetricValue:
        """Evaluate through the wrapped source, timing it."""
        started = self._clock()
        try:
            value = self._inner.observe(
                metric,
                version=version,
                namespace=namespace,
                elapsed_seconds=elapsed_seconds,
                variables=variables,
            )
        except ReconcilerError:
            self._telemetry.query_errors.inc()
            raise
        finally:
            self._telemetry.query_duration.observe(self._clock() - started)
        if value.status == "unavailable":
            self._telemetry.query_errors.inc()
        return value


class InstrumentedCluster:
    """A ``Cluster`` that counts the failed requests of another one."""

    def __init__(self, inner: Cluster, telemetry: Telemetry) -> None:
        """Wrap ``inner``."""
        self._inner = inner
        self._telemetry = telemetry

    def read_weights(self, refs: Sequence[WeightObjRef]) -> Mapping[WeightObjRef, WeightReading]:
        """Read through the wrapped cluster, counting each kind and namespace it failed for."""
        readings = self._inner.read_weights(refs)
        failed = {(r.api_version, r.kind, r.namespace) for r, v in readings.items() if v.error}
        if failed:
            self._telemetry.kube_errors.labels("read_weights").inc(len(failed))
        return readings

    def get_weight(self, ref: WeightObjRef) -> int | None:
        """Read through the wrapped cluster."""
        try:
            return self._inner.get_weight(ref)
        except ReconcilerError:
            self._telemetry.kube_errors.labels("get_weight").inc()
            raise

    def is_ready(self, ref: ObjectRef) -> Readiness:
        """Read readiness through the wrapped cluster."""
        try:
            return self._inner.is_ready(ref)
        except ReconcilerError:
            self._telemetry.kube_errors.labels("is_ready").inc()
            raise

    def set_weights(self, weights: Sequence[tuple[WeightObjRef, int]]) -> None:
        """Write through the wrapped cluster."""
        try:
            self._inner.set_weights(weights)
        except ReconcilerError:
            self._telemetry.kube_errors.labels("set_weights").inc()
            raise
