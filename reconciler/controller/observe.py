"""What the plan needs to know of each live experiment, read before the plan is made.

``Observer.observe`` asks, for each live experiment: the GitOps operator whether it applied
an outcome that waits for it, the cluster whether the readiness objects of a first
iteration are ready, and the metrics source for the metrics of an iteration that is due.
Only experiments whose weights the cluster was just seen carrying (``Traffic``) are
measured (invariant 8). ``seen`` joins that with this tick's traffic into the
``engine.planner.Seen`` of each document, which is all the plan reads. A failing metric
query is a missing value (the engine's no-data rules apply); anything else one experiment
raises is that experiment's fault (invariant 9).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import structlog

from reconciler.controller.isolation import Faults
from reconciler.controller.load_plans import Loads, measured_by_load
from reconciler.controller.traffic import Traffic
from reconciler.engine import experiment, traffic
from reconciler.engine.planner import OffRecord, Seen
from reconciler.engine.state import ExperimentState
from reconciler.errors import ReconcilerError
from reconciler.ports import Cluster, EnvStore, GitOpsOperator, MetricsSource, MetricValue
from reconciler.spec.model import Experiment

log = structlog.get_logger("reconciler.controller")

__all__ = ["Observer", "metrics_of"]


class Observer:
    """Reads the operator, readiness and metrics for the plan of one Env repo."""

    def __init__(
        self,
        cluster: Cluster,
        metrics: MetricsSource,
        *,
        traffic: Traffic,
        faults: Faults,
        operator: GitOpsOperator | None = None,
        store: EnvStore | None = None,
        loads: Loads | None = None,
    ) -> None:
        """Read through these ports; ``traffic`` says which weights were confirmed.

        ``store``: the Env repo, to accept an applied commit that came after the outcome.
        ``loads``: the built-in load, which measures Iter8's built-in metrics of the
        experiments that send it.
        """
        self._loads = loads
        self._store = store
        self._cluster = cluster
        self._metrics = metrics
        self._traffic = traffic
        self._faults = faults
        self._operator = operator

    def observe(self, states: Mapping[str, ExperimentState], now: float) -> dict[str, Seen]:
        """What each live experiment's plan needs from outside Git (traffic aside)."""
        out: dict[str, Seen] = {}
        for key, state in states.items():
            with self._faults.boundary(key, "observing it"):
                seen = self._observe_one(state, now)
                if seen is not None:
                    out[key] = seen
        return out

    def seen(
        self, states: Mapping[str, ExperimentState], observed: Mapping[str, Seen], now: float
    ) -> dict[str, Seen]:
        """``observed`` joined with this tick's traffic, for each document of ``states``."""
        out: dict[str, Seen] = {}
        for key, state in states.items():
            episode = self._traffic.episode(state)
            out[key] = replace(
                observed.get(key, Seen()),
                confirmed=self._traffic.converged(key),
                assessed=self._traffic.assess(state),
                off_record=None if episode is None else OffRecord(episode.found, episode.counts),
                resumable=state.held is not None and self._traffic.resumable(state, now),
            )
        return out

    def _observe_one(self, state: ExperimentState, now: float) -> Seen | None:
        if state.phase.final and state.sync == "waiting":
            synced = self._poll_sync(state)
            if not experiment.holds_traffic(state):
                return Seen(synced=synced)
            pending = self._not_ready(state)  # the baseline rolling out the winner's version
            return Seen(synced=synced, waiting=pending, ready=pending is None)
        if not self._traffic.converged(state.key) or self._traffic.episode(state) is not None:
            return None
        if not experiment.is_due(state, now):
            return None
        if state.iteration == 0:
            pending = self._not_ready(state)
            if pending:
                return Seen(waiting=pending)
        elapsed = now - state.started_at
        return Seen(
            observations={
                version.name: {
                    metric: self._measure(state, metric, version.name, elapsed)
                    for metric in metrics_of(state.spec)
                }
                for version in state.spec.versions
            }
        )

    def _not_ready(self, state: ExperimentState) -> str | None:
        """Why the experiment's readiness objects are not all ready (None: they are)."""
        reasons = []
        for ref in state.spec.readiness.objects:
            resolved = replace(ref, namespace=ref.namespace or state.spec.namespace)
            try:
                verdict = self._cluster.is_ready(resolved)
            except ReconcilerError as exc:
                reasons.append(f"{resolved}: {exc}")
                continue
            if not verdict.ready:
                reasons.append(f"{resolved}: {verdict.reason}")
        return "; ".join(reasons) or None

    def _poll_sync(self, state: ExperimentState) -> str | None:
        """The revision the operator applied that holds the outcome (None: not yet).

        The outcome itself, or a later commit on main that contains it: with CI pushing to
        main, the operator may never report the outcome on its own.
        """
        outcome = state.outcome_commit
        if self._operator is None or outcome is None:
            return None
        try:
            found = self._operator.synced(outcome)
            if found is not None or self._store is None:
                return found
            for commit in self._operator.applied_commits():
                if self._store.merge_base([outcome, commit]) == outcome:
                    log.info("gitops_synced_later", experiment=state.id, applied=commit)
                    return commit
        except ReconcilerError as exc:
            log.warning("gitops_sync_unknown", experiment=state.id, error=str(exc))
        return None

    def _measure(
        self, state: ExperimentState, metric: str, version: str, elapsed: float
    ) -> MetricValue:
        variables = {}
        for v in state.spec.versions:
            if v.name == version:
                variables = dict(v.variables)
        builtin = measured_by_load(state.spec, metric) if self._loads is not None else None
        try:
            if builtin is not None and self._loads is not None:
                return self._loads.observe(state, version, builtin)
            return self._metrics.observe(
                metric,
                version=version,
                namespace=state.spec.namespace,
                elapsed_seconds=elapsed,
                variables=variables,
            )
        except ReconcilerError as exc:
            log.warning("metric_unavailable", experiment=state.id, metric=metric, error=str(exc))
            return MetricValue(None, None, "unavailable")

    def current_weights(self, spec: Experiment) -> dict[str, int] | None:
        """The weights the cluster carries now for ``spec``'s versions (None: any unknown).

        A fixed split starts from them rather than from the spec's defaults.
        """
        found: dict[str, int] = {}
        for version in spec.versions:
            ref = version.weight_obj_ref
            if ref is None:
                return None
            try:
                weight = self._cluster.get_weight(traffic.resolve(ref, spec))
            except ReconcilerError as exc:
                log.warning("weights_unreadable", experiment=spec.key, error=str(exc))
                return None
            if weight is None:
                return None
            found[version.name] = weight
        return found


def metrics_of(spec: Experiment) -> list[str]:
    """The metrics an iteration of ``spec`` measures, each once, in the spec's order."""
    names = [spec.criteria.request_count] if spec.criteria.request_count else []
    names += [o.metric for o in spec.criteria.objectives]
    names += [r.metric for r in spec.criteria.rewards]
    names += list(spec.criteria.indicators)
    return list(dict.fromkeys(names))
