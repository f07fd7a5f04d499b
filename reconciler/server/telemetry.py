"""The process's own metrics (prometheus-client), and adapters that record them.

``Telemetry`` owns one registry with every metric the process exports; the wrappers
``InstrumentedMetrics`` and ``InstrumentedCluster`` sit between the loop and the real
adapters and count what crosses them (query latency and errors, Kubernetes request
errors) without the adapters knowing. prometheus-client was chosen over hand-written
exposition because it is the reference implementation of the text format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.errors import ReconcilerError
from reconciler.ports import Cluster, MetricsSource, MetricValue, Readiness, WeightReading
from reconciler.spec.model import ObjectRef, WeightObjRef


class Telemetry:
    """Every metric of the process, in one registry."""

    def __init__(self) -> None:
        """Create the registry and the metrics."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
            "records, and they were set again, by experiment.",
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
