"""The reconcile loop of DESIGN.md section 5: fetch, discover, load, observe, plan, record, act.

The only module that sequences I/O. Write-ahead everywhere: every transition is committed
and pushed to the state branch before its weights are set or its outcome is pushed to
main, and a rejected state push acts on nothing. Outcomes are exactly-once: before an
outcome commit is built, main is searched (back to the commit the decision was taken on)
for one carrying the experiment's ``Rollout-Id``. Level-triggered (invariant 8): every tick
reads every live experiment's weights and sets the recorded ones where the cluster carries
others (``controller.traffic``), so a fresh process, a rebuilt cluster under a running one
and a person with kubectl all meet the same code; no iteration is judged on weights the
cluster was not seen carrying. The clock is passed in; nothing here sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from reconciler.controller import records
from reconciler.controller.discovery import Discovery, Found, Scan
from reconciler.controller.isolation import Fault, Faults, LeadershipLostError
from reconciler.controller.outcomes import Due, OutcomePush, find_decision, push_outcomes
from reconciler.controller.traffic import Traffic
from reconciler.engine import experiment, traffic
from reconciler.engine.experiment import Observations, PushOutcome, SetWeights, Transition
from reconciler.engine.state import ExperimentState, as_recorded, experiment_id, from_json
from reconciler.engine.traffic import DRIFTED
from reconciler.errors import ReconcilerError
from reconciler.gitstore.state_branch import archive_path, with_readme
from reconciler.ports import (
    Cluster,
    CommitSpec,
    EnvStore,
    EventSink,
    GitOpsOperator,
    Heads,
    MetricsSource,
    MetricValue,
)
from reconciler.spec.limits import Limits
from reconciler.spec.loader import Problem
from reconciler.spec.metric import MetricDefinition
from reconciler.spec.model import DeploymentPattern, Experiment, ObjectRef

log = structlog.get_logger("reconciler.controller")

LIVE_PREFIX = "experiments"

__all__ = ["LIVE_PREFIX", "LeadershipLostError", "Reconciler", "TickReport"]


@dataclass
class TickReport:
    """What one tick saw and did (for logs, the demo's progress and tests)."""

    heads: Heads
    recorded: list[tuple[Transition, str]] = field(default_factory=list)
    """Each transition with the state commit that records it, in order."""
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    """(experiment id, outcome commit on main) for outcomes landed or confirmed."""
    problems: list[Problem] = field(default_factory=list)
    """Problems in experiment files seen for the first time by this process."""
    errors: list[str] = field(default_factory=list)
    pushes: list[tuple[str, int]] = field(default_factory=list)
    """(branch, attempts) of every accepted push; attempts above 1 were conflicts."""
    live: dict[str, int] = field(default_factory=dict)
    """Live experiments by phase at the start of the tick."""
    corrections: list[tuple[str, str]] = field(default_factory=list)
    """(experiment key, what the cluster carried) each time recorded weights were set again."""
    held: int = 0
    """Live experiments held because something keeps putting other weights back."""
    faults: list[Fault] = field(default_factory=list)
    """Steps that raised for one experiment or file, first seen this tick (invariant 9)."""
    experiments: set[str] = field(default_factory=set)
    """Keys of the live experiments at the start of the tick."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds each phase of the tick took (``server.telemetry.TICK_PHASES``)."""


class Reconciler:
    """Drives every experiment of one Env repo through the loop."""

    def __init__(
        self,
        store: EnvStore,
        cluster: Cluster,
        metrics: MetricsSource,
        *,
        clock: Callable[[], float],
        paths: tuple[str, ...] = ("",),
        failpoint: Callable[[str], None] = lambda _name: None,
        metric_documents: Callable[[tuple[MetricDefinition, ...]], None] = lambda _docs: None,
        operator: GitOpsOperator | None = None,
        sync_timeout: float = 120.0,
        may_act: Callable[[], bool] = lambda: True,
        events: EventSink | None = None,
        limits: Limits | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Wire the loop to its three adapters and a clock (seconds since the epoch).

        ``failpoint`` is called with the name of each step boundary the tick crosses
        (``after-fetch``, ``after-state-push``, ``after-weights``, ``after-main-push``,
        ``after-outcome-record``); the crash tests make it exit the process there.
        ``metric_documents`` receives the Metric documents on main whenever they change,
        before any metric is observed. With an ``operator`` (Argo CD or Flux), an outcome
        commit is handed to it and the experiment waits, up to ``sync_timeout`` seconds,
        until it is applied. ``may_act`` is asked before every write (leader election):
        when it says no, the tick stops where it is. ``events`` hears of every transition.
        ``limits`` bounds what discovery reads from main (the documented defaults when None).
        ``timer`` times the tick's phases (``TickReport.phases``).
        """
        self._timer = timer
        self._operator = operator
        self._sync_timeout = sync_timeout
        self._may_act = may_act
        self._events = events
        self._waiting: dict[str, str] = {}
        """Experiments not yet ready to start iterating, with why (this tick)."""
        self._synced: dict[str, str | None] = {}
        """Experiments waiting for the operator: the revision it applied (this tick)."""
        self._metric_documents = metric_documents
        self._metrics_seen: tuple[MetricDefinition, ...] | None = None
        self._failpoint = failpoint
        self._store = store
        self._cluster = cluster
        self._metrics = metrics
        self._clock = clock
        self._discovery = Discovery(store, paths, limits)
        self._reported: set[tuple[str, str]] = set()
        self._documents: dict[str, ExperimentState | None] = {}
        """State documents of the last state tip read, parsed, by blob id (None: invalid)."""
        self._faults = Faults()
        self._live: dict[str, ExperimentState] = {}
        """The live documents of the current tick, by key (to say what a fault is about)."""
        self._traffic = Traffic(cluster, guard=self._guard, faults=self._faults)

    def tick(self) -> TickReport:
        """One pass of the loop; raises only for faults of the Env repo as a whole.

        A tick that raised (a push that may or may not have landed, say) leaves nothing to
        remember: the next one reads the cluster and the state branch afresh.
        """
        self._faults.start_tick()
        report = self._tick()
        report.corrections = self._traffic.report.corrections
        report.errors.extend(self._traffic.report.errors)
        report.held = self._traffic.report.held
        report.faults = list(self._faults.new)
        report.errors.extend(str(f) for f in report.faults)
        for fault in report.faults:
            self._fault_event(fault)
        return report

    def _fault_event(self, fault: Fault) -> None:
        """A warning Event on the object carrying the faulted experiment's weights."""
        state = self._live.get(fault.subject)
        about = _event_object(state) if state is not None and self._events else None
        if about is not None and self._events is not None:
            self._events.record(about, "RolloutFault", str(fault), warning=True)

    def _lap(self, report: TickReport, phase: str, since: float) -> float:
        """Add the time since ``since`` to ``phase``; return now."""
        now = self._timer()
        report.phases[phase] = report.phases.get(phase, 0.0) + now - since
        return now

    def _tick(self) -> TickReport:
        mark = self._timer()
        heads = self._store.fetch()
        self._failpoint("after-fetch")
        report = TickReport(heads)
        mark = self._lap(report, "fetch", mark)
        if heads.main is None:
            log.warning("main_missing", branch=self._store.main_branch)
            return report
        states = self._load(heads.state)
        self._live = states
        report.experiments = set(states)
        mark = self._lap(report, "load", mark)
        # Each live state holds its experiment's normalised spec: discovery takes a file
        # whose blob a state names from there instead of parsing it again (a restarted
        # process would otherwise re-read every experiment file).
        scan = self._discovery.scan(
            heads.main, known=[(s.spec_blob, s.spec) for s in states.values()]
        )
        self._report_problems(scan, report)
        if scan.metrics != self._metrics_seen:
            with self._faults.boundary("Metric documents", "loading them") as loading:
                self._metric_documents(scan.metrics)
            if not loading.failed:
                self._metrics_seen = scan.metrics
        mark = self._lap(report, "discover", mark)
        for state in states.values():
            report.live[state.phase.value] = report.live.get(state.phase.value, 0) + 1
        self._traffic.observe(states, self._clock())
        if states:
            self._guard("converge the cluster's weights")
        self._traffic.converge(states, self._clock())
        mark = self._lap(report, "traffic", mark)
        recorded = self._record(scan, states, heads.state, report)
        mark = self._lap(report, "record", mark)
        due: list[Due] = []
        for transition, commit in recorded:
            with self._faults.boundary(transition.state.key, "setting weights"):
                self._act(transition)
            if any(isinstance(a, PushOutcome) for a in transition.actions):
                due.append((transition.state, commit))
        mark = self._lap(report, "act", mark)
        acted = {t.state.key for t, _ in recorded}
        for state in states.values():
            if state.phase.deciding and state.key not in acted:
                with self._faults.boundary(state.key, "finding its decision"):
                    decision = (
                        find_decision(self._store, heads.state, state) if heads.state else None
                    )
                    due.append((state, decision))
        self._finish(due, report)
        mark = self._lap(report, "outcomes", mark)
        self._archive_settled(states, report)
        self._lap(report, "archive", mark)
        return report

    def _archive_settled(self, states: dict[str, ExperimentState], report: TickReport) -> None:
        """Archive the finished documents whose final weights the cluster now carries.

        They stayed live until then, so that a process stopped in between (or an API server
        that refused) sets the weights at a later tick.
        """
        latest = dict(states)
        latest.update((t.state.key, t.state) for t, _ in report.recorded)
        now = self._clock()
        settled: list[Transition] = []
        commits: list[CommitSpec] = []
        for key, state in sorted(latest.items()):
            if not (state.settling and self._traffic.converged(key)):
                continue
            with self._faults.boundary(key, "archiving it"):
                transition = experiment.traffic_settled(state, now, why="traffic on the baseline")
                encoded = records.state_commit(transition)
                settled.append(transition)
                commits.append(encoded)
        if not settled:
            return
        self._guard("archive finished experiments")
        result = self._store.update_branch(self._store.state_branch, lambda _tip: commits)
        report.pushes.append((self._store.state_branch, result.attempts))
        for transition, commit in zip(settled, result.commits, strict=True):
            report.recorded.append((transition, commit))
            self._log_transition(transition, commit)

    def _record(
        self,
        scan: Scan,
        states: dict[str, ExperimentState],
        state_tip: str | None,
        report: TickReport,
    ) -> list[tuple[Transition, str]]:
        """Plan and push this tick's transitions, one commit each, in one push."""
        self._guard("record transitions")
        now = self._clock()
        observations = self._observe(states, now)
        planned: list[Transition] = []
        specs: list[CommitSpec] = []

        def plan(tip: str | None) -> list[CommitSpec]:
            current = states if tip == state_tip else self._load(tip)
            planned.clear()
            specs.clear()
            for transition in self._plan(scan, current, observations, now, tip):
                with self._faults.boundary(transition.state.key, "recording a transition"):
                    specs.append(records.state_commit(transition))
                    planned.append(transition)
            if specs and tip is None:
                first = specs[0]
                specs[0] = CommitSpec(first.message, with_readme(None, first.changes))
            return list(specs)

        result = self._store.update_branch(self._store.state_branch, plan)
        for transition, spec in zip(planned, specs, strict=True):
            blob = records.live_blob(spec.changes)
            if blob is not None:  # the next tick's load finds it parsed already
                with self._faults.boundary(transition.state.key, "keeping its document"):
                    self._documents[blob] = as_recorded(transition.state)
        recorded = list(zip(planned, result.commits, strict=True))
        if result.commits:
            report.pushes.append((self._store.state_branch, result.attempts))
            self._failpoint("after-state-push")
        report.recorded.extend(recorded)
        for transition, commit in recorded:
            self._log_transition(transition, commit)
        return recorded

    def _guard(self, what: str) -> None:
        """Stop the tick when this replica may no longer act (leader election)."""
        if not self._may_act():
            raise LeadershipLostError(
                f"not acting ({what}): this replica no longer holds the Env repo's Lease"
            )

    # -- load, discover, observe -------------------------------------------------------

    def _load(self, tip: str | None) -> dict[str, ExperimentState]:
        states: dict[str, ExperimentState] = {}
        if tip is None:
            return states
        documents: dict[str, ExperimentState | None] = {}
        for path, blob in self._store.list_files(tip, LIVE_PREFIX):
            if blob in self._documents:
                state = self._documents[blob]
            else:
                raw = self._store.read_file(tip, path) or b""
                state = None
                content = (ValueError, KeyError, TypeError)
                reading = self._faults.boundary(
                    path, "reading the state document", expected=content
                )
                with reading:
                    state = from_json(raw)
            documents[blob] = state
            if state is not None:
                states[state.key] = state
        # Only the documents of the last tip read are kept: most are unchanged next tick.
        self._documents = documents
        return states

    def _report_problems(self, scan: Scan, report: TickReport) -> None:
        """Log each problem once, when first seen; forget those no longer on main."""
        current: set[tuple[str, str]] = set()
        for blob, problem in scan.problems:
            marker = (blob, str(problem))
            if marker in current:
                continue
            current.add(marker)
            if marker in self._reported:
                continue
            report.problems.append(problem)
            emit = log.error if problem.severity == "error" else log.warning
            emit("experiment_file_problem", problem=str(problem))
        self._reported = current

    def _observe(self, states: dict[str, ExperimentState], now: float) -> dict[str, Observations]:
        """Metrics of due experiments; readiness before the first iteration; operator syncs.

        Only experiments whose weights the cluster was just seen carrying are measured:
        the others are not judged this tick (invariant 8).
        """
        out: dict[str, Observations] = {}
        self._waiting, self._synced = {}, {}
        for key, state in states.items():
            with self._faults.boundary(key, "observing it"):
                self._observe_one(state, now, out)
        return out

    def _observe_one(
        self, state: ExperimentState, now: float, out: dict[str, Observations]
    ) -> None:
        key = state.key
        if state.phase.final and state.sync == "waiting":
            self._synced[key] = self._poll_sync(state)
            return
        if not self._traffic.converged(key) or self._traffic.episode(state) is not None:
            return
        if experiment.is_due(state, now) and state.iteration == 0:
            pending = self._not_ready(state)
            if pending:
                self._waiting[key] = pending
                return
        if experiment.is_due(state, now):
            elapsed = now - state.started_at
            out[key] = {
                version.name: {
                    metric: self._measure(state, metric, version.name, elapsed)
                    for metric in _metrics_of(state.spec)
                }
                for version in state.spec.versions
            }

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
        if self._operator is None or state.outcome_commit is None:
            return None
        try:
            return self._operator.synced(state.outcome_commit)
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
        try:
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

    # -- plan ------------------------------------------------------------------------

    def _plan(
        self,
        scan: Scan,
        states: dict[str, ExperimentState],
        observations: dict[str, Observations],
        now: float,
        state_tip: str | None,
    ) -> list[Transition]:
        to_start = self._new_runs(scan, states, state_tip)
        on_main = {f.spec.key: f for f in scan.experiments}
        running = {s.spec.target for s in states.values() if not s.phase.final}
        transitions: list[Transition] = []
        busy: set[str] = set()
        for key in sorted(states):
            state = states[key]
            if state.phase.deciding:
                busy.update((key, state.spec.target))
                continue
            planned = None
            with self._faults.boundary(key, "planning its next step"):
                if state.settling:
                    if state.spec.target in running or state.spec.target in to_start:
                        why = "another run sets the target's traffic now"
                        planned = experiment.traffic_settled(state, now, why=why)
                else:
                    planned = self._plan_running(
                        state, to_start, on_main, observations, main=scan.main, now=now
                    )
            if planned is not None:
                transitions.append(planned)
        for found in to_start.values():
            if found.spec.key in busy or found.spec.target in busy:
                continue  # starts once the pending outcome for its target has landed
            with self._faults.boundary(found.spec.key, "starting it"):
                current = None
                if found.spec.deployment_pattern is DeploymentPattern.FIXED_SPLIT:
                    current = self._read_weights(found.spec)
                transitions.append(
                    experiment.start(
                        found.spec,
                        spec_blob=found.blob,
                        source_commit=scan.main,
                        now=now,
                        current=current,
                    )
                )
        return transitions

    def _plan_running(
        self,
        state: ExperimentState,
        to_start: dict[str, Found],
        on_main: dict[str, Found],
        observations: dict[str, Observations],
        *,
        main: str,
        now: float,
    ) -> Transition | None:
        """The next transition of a live experiment: synced, preempted, withdrawn or stepped."""
        key = state.key
        if state.phase.final:  # waiting for the GitOps operator to apply its outcome
            return self._plan_settling(state, now)
        newer = to_start.get(state.spec.target) or next(
            (f for f in to_start.values() if f.spec.key == key), None
        )
        if newer is not None:
            return experiment.preempt(state, experiment_id(newer.spec, newer.blob), now)
        confirmed = self._traffic.converged(key)
        if key not in on_main or on_main[key].blob != state.spec_blob:
            return experiment.withdraw(state, now, confirmed=confirmed)
        if state.held is not None or not confirmed or self._traffic.episode(state) is not None:
            return self._plan_off_record(state, now, confirmed=confirmed)
        stepped = None
        if key in self._waiting:
            if now - state.started_at >= state.spec.readiness.timeout_seconds:
                stepped = experiment.not_ready(state, now, self._waiting[key], confirmed=True)
        elif key in observations:
            stepped = experiment.step(state, observations[key], now)
        if stepped is not None and stepped.state.phase.deciding:
            stepped = replace(stepped, state=replace(stepped.state, decided_on=main))
        return stepped

    def _plan_off_record(
        self, state: ExperimentState, now: float, *, confirmed: bool
    ) -> Transition | None:
        """A running experiment whose cluster is (or was, since its last iteration) off the record.

        Held: it resumes once the weights stayed for a full interval. Someone else's
        weights that would be the ``HOLD_AFTER``-th correction in a row: it is held now.
        Otherwise, once the recorded weights are back on the cluster, what happened is
        recorded (the iteration due waits a full interval); until then, and while the
        weights cannot be read, nothing is recorded and nothing judged.
        """
        if state.held is not None:
            return experiment.resume(state, now) if self._traffic.resumable(state, now) else None
        episode = self._traffic.episode(state)
        if episode is None:
            return None  # unreadable: nothing is judged on weights nobody saw
        found = self._traffic.assess(state)
        if found.status == DRIFTED and experiment.would_hold(state, counts=episode.counts):
            return experiment.drifted(state, found, now, counts=True)
        if not confirmed:
            return None
        return experiment.drifted(state, episode.found, now, counts=episode.counts)

    def _plan_settling(self, state: ExperimentState, now: float) -> Transition | None:
        revision = self._synced.get(state.key)
        if revision is not None or now - state.updated_at >= self._sync_timeout:
            confirmed = self._traffic.converged(state.key)
            return experiment.sync_settled(state, now, revision=revision, confirmed=confirmed)
        return None

    def _new_runs(
        self, scan: Scan, states: dict[str, ExperimentState], state_tip: str | None
    ) -> dict[str, Found]:
        """Experiments on main not yet run, by target; the last one per target wins."""
        live_ids = {s.id for s in states.values()}
        to_start: dict[str, Found] = {}
        for found in scan.experiments:
            with self._faults.boundary(found.spec.key, "naming its run") as naming:
                run_id = experiment_id(found.spec, found.blob)
            if naming.failed or run_id in live_ids or self._archived(state_tip, found):
                continue
            previous = to_start.get(found.spec.target)
            if previous is not None:
                log.warning(
                    "experiments_share_target",
                    target=found.spec.target,
                    starting=found.spec.key,
                    ignored=previous.spec.key,
                )
            to_start[found.spec.target] = found
        return to_start

    def _read_weights(self, spec: Experiment) -> dict[str, int] | None:
        """The weights the cluster carries now, or None when any cannot be read."""
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

    def _archived(self, state_tip: str | None, found: Found) -> bool:
        if state_tip is None:
            return False
        path = archive_path(found.spec.namespace, found.spec.name, found.blob[:12])
        return self._store.blob_id(state_tip, path) is not None

    # -- act -------------------------------------------------------------------------

    def _act(self, transition: Transition) -> None:
        """Set the weights a recorded transition asks for (its outcome goes with the others)."""
        if any(isinstance(a, SetWeights) for a in transition.actions):
            self._traffic.set(transition.state)
            self._failpoint("after-weights")

    def _finish(self, due: list[Due], report: TickReport) -> None:
        """Push the due outcomes to main (once each, in one push), then record them landed."""
        if not due:
            return
        self._guard("push outcomes to main")
        try:
            pushed = push_outcomes(self._store, due)
        except ReconcilerError as exc:
            for state, _decision in due:
                outcome = experiment.outcome_of(state)
                report.errors.append(f"{state.id}: outcome {outcome} not pushed: {exc}")
                log.error("outcome_failed", experiment=state.id, outcome=outcome, error=str(exc))
            return
        if pushed.result.commits:
            report.pushes.append((self._store.main_branch, pushed.result.attempts))
            self._failpoint("after-main-push")
        now = self._clock()
        landed: list[Transition] = []
        for state, _decision in due:
            with self._faults.boundary(state.key, "recording its outcome"):
                self._landed(state, pushed, report, landed, now)
        if landed:
            self._record_landed(landed, report)

    def _landed(
        self,
        state: ExperimentState,
        pushed: OutcomePush,
        report: TickReport,
        landed: list[Transition],
        now: float,
    ) -> None:
        """Add ``state``'s outcome-landed transition to ``landed`` if its outcome is on main."""
        outcome = experiment.outcome_of(state)
        commit = pushed.commits.get(state.id)
        if commit is None:
            why = pushed.failed.get(state.id, "main branch is missing")
            report.errors.append(f"{state.id}: outcome {outcome} not pushed: {why}")
            log.error("outcome_failed", experiment=state.id, outcome=outcome, error=why)
            return
        log.info(
            "outcome_on_main",
            experiment=state.id,
            outcome=outcome,
            commit=commit,
            attempts=pushed.result.attempts,
            already_there=commit not in pushed.result.commits,
        )
        if self._operator is not None:
            try:
                self._operator.request_sync(commit)
            except ReconcilerError as exc:
                log.warning("gitops_refresh_failed", experiment=state.id, error=str(exc))
        landed.append(
            experiment.outcome_landed(
                state,
                commit,
                now,
                await_sync=self._operator is not None,
                confirmed=self._traffic.converged(state.key),
            )
        )

    def _record_landed(self, landed: list[Transition], report: TickReport) -> None:
        """Record the outcomes on main (one commit each, one push), then set final weights."""
        encoded: list[Transition] = []
        commits: list[CommitSpec] = []
        for transition in landed:
            with self._faults.boundary(transition.state.key, "recording its outcome"):
                commits.append(records.state_commit(transition))
                encoded.append(transition)
        landed = encoded
        if not landed:
            return
        result = self._store.update_branch(self._store.state_branch, lambda _tip: commits)
        report.pushes.append((self._store.state_branch, result.attempts))
        self._failpoint("after-outcome-record")
        for transition, commit in zip(landed, result.commits, strict=True):
            report.recorded.append((transition, commit))
            report.outcomes.append((transition.state.id, transition.state.outcome_commit or ""))
            self._log_transition(transition, commit)
        for transition in landed:
            if any(isinstance(a, SetWeights) for a in transition.actions):
                with self._faults.boundary(transition.state.key, "setting weights"):
                    self._traffic.set(transition.state)

    def _log_transition(self, transition: Transition, commit: str) -> None:
        state = transition.state
        if self._events is not None:
            about = _event_object(state)
            if about is not None:
                failed = state.phase.value in {"RollingBack", "RolledBack"} or state.failures > 0
                self._events.record(
                    about, f"Rollout{state.phase.value}", transition.summary, warning=failed
                )
        log.info(
            "transition_recorded",
            experiment=state.id,
            phase=state.phase.value,
            iteration=state.iteration,
            weights=dict(state.weights),
            commit=commit,
            summary=transition.summary,
        )


def _metrics_of(spec: Experiment) -> list[str]:
    names = [spec.criteria.request_count] if spec.criteria.request_count else []
    names += [o.metric for o in spec.criteria.objectives]
    names += [r.metric for r in spec.criteria.rewards]
    names += list(spec.criteria.indicators)
    return list(dict.fromkeys(names))


def _event_object(state: ExperimentState) -> ObjectRef | None:
    """The object an experiment's Events are about: the one carrying its weights."""
    for version in state.spec.versions:
        ref = version.weight_obj_ref
        if ref is not None:
            resolved = traffic.resolve(ref, state.spec)
            return ObjectRef(resolved.api_version, resolved.kind, resolved.name, resolved.namespace)
    return None
