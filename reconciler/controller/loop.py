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
from collections.abc import Callable, Mapping
from dataclasses import replace

import structlog

from reconciler.controller import records
from reconciler.controller.command_reader import CommandReader
from reconciler.controller.discovery import Discovery, Scan
from reconciler.controller.isolation import Fault, Faults, LeadershipLostError
from reconciler.controller.load_plans import Loads
from reconciler.controller.observe import Observer
from reconciler.controller.outcomes import Due, Finisher, find_decision
from reconciler.controller.report import TickReport, announce, event_object
from reconciler.controller.traffic import Traffic
from reconciler.engine import experiment, planner
from reconciler.engine.experiment import PushOutcome, SetWeights, Transition
from reconciler.engine.planner import Candidate
from reconciler.engine.state import DUE, ExperimentState, as_recorded, experiment_id, from_json
from reconciler.gitstore.state_branch import archive_path, with_readme
from reconciler.ports import (
    Cluster,
    CommitSpec,
    EnvStore,
    EventSink,
    GitOpsOperator,
    LoadGenerator,
    MetricsSource,
    SignatureVerifier,
)
from reconciler.spec.limits import Limits
from reconciler.spec.metric import MetricDefinition
from reconciler.spec.model import DeploymentPattern

log = structlog.get_logger("reconciler.controller")

LIVE_PREFIX = "experiments"

__all__ = ["LIVE_PREFIX", "LeadershipLostError", "Reconciler", "TickReport"]


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
        operator: GitOpsOperator | None = None,
        sync_timeout: float = 120.0,
        may_act: Callable[[], bool] = lambda: True,
        events: EventSink | None = None,
        limits: Limits | None = None,
        timer: Callable[[], float] = time.perf_counter,
        verifier: SignatureVerifier | None = None,
        load: LoadGenerator | None = None,
    ) -> None:
        """Wire the loop to its three adapters and a clock (seconds since the epoch).

        ``failpoint`` is called with the name of each step boundary the tick crosses
        (``after-fetch``, ``after-state-push``, ``after-weights``, ``after-main-push``,
        ``after-outcome-record``, ``after-cleanup-push``); the crash tests make it exit the
        process there.
        ``metrics`` is given the Metric documents on main whenever they change, before
        any metric is observed. With an ``operator`` (Argo CD or Flux), an outcome
        commit is handed to it and the experiment waits, up to ``sync_timeout`` seconds,
        until it is applied. ``may_act`` is asked before every write (leader election):
        when it says no, the tick stops where it is. ``events`` hears of every transition.
        ``limits`` bounds what discovery reads from main (the documented defaults when None).
        ``timer`` times the tick's phases (``TickReport.phases``). ``verifier`` checks the
        SSH signatures of approvals (None: no approval counts as signed). ``load`` is the
        built-in load generator (None: an experiment that asks for load gets no data for the
        built-in metrics it measures).
        """
        self._timer = timer
        self._sync_timeout = sync_timeout
        self._may_act = may_act
        self._events = events
        self._metrics_seen: tuple[MetricDefinition, ...] | None = None
        self._failpoint = failpoint
        self._store = store
        self._cluster = cluster
        self._metrics = metrics
        self._clock = clock
        self._discovery = Discovery(store, paths, limits)
        self._commands = CommandReader(store, verifier)
        self._reported: set[tuple[str, str]] = set()
        self._documents: dict[str, ExperimentState | None] = {}
        """State documents of the last state tip read, parsed, by blob id (None: invalid)."""
        self._faults = Faults()
        self._live: dict[str, ExperimentState] = {}
        """The live documents of the current tick, by key (to say what a fault is about)."""
        self._traffic = Traffic(cluster, guard=self._guard, faults=self._faults)
        self._loads = Loads(load, store, self._faults) if load is not None else None
        self._observer = Observer(
            cluster,
            metrics,
            traffic=self._traffic,
            faults=self._faults,
            operator=operator,
            store=store,
            loads=self._loads,
        )
        self._finisher = Finisher(
            store, self._traffic, self._faults, operator=operator, guard=self._guard,
            failpoint=failpoint, clock=clock, events=events,
        )  # fmt: skip

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
        about = event_object(state) if state is not None and self._events else None
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
        self._use_metrics(scan)
        mark = self._lap(report, "discover", mark)
        for state in states.values():
            report.live[state.phase.value] = report.live.get(state.phase.value, 0) + 1
        self._traffic.observe(states, self._clock())
        if states:
            self._guard("converge the cluster's weights")
        self._traffic.converge(states, self._clock())
        if self._loads is not None:
            self._loads.converge(states)
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
        self._finisher.finish(due, report)
        mark = self._lap(report, "outcomes", mark)
        self._archive_settled(states, report)
        self._lap(report, "archive", mark)
        return report

    def _use_metrics(self, scan: Scan) -> None:
        """Give the metrics source main's Metric documents when they changed."""
        if scan.metrics == self._metrics_seen:
            return
        with self._faults.boundary("Metric documents", "loading them") as loading:
            for problem in self._metrics.use_definitions(scan.metrics):
                log.warning("metric_document_problem", problem=problem)
        if not loading.failed:
            self._metrics_seen = scan.metrics

    def _archive_settled(self, states: dict[str, ExperimentState], report: TickReport) -> None:
        """Archive the finished documents whose final weights the cluster now carries.

        They stayed live until then, so that a process stopped in between (or an API server
        that refused) sets the weights at a later tick.
        """
        latest = dict(states)
        latest.update((t.state.key, t.state) for t, _ in report.recorded)
        now = self._clock()
        settled: list[Transition] = []
        cleanups: list[ExperimentState] = []
        for key, state in sorted(latest.items()):
            if not (state.settling and self._traffic.converged(key)):
                continue
            if state.cleanup == DUE:  # the baseline serves again: now the cleanup commit
                cleanups.append(state)
                continue
            settled.append(experiment.traffic_settled(state, now, why="traffic on the baseline"))
        settled.extend(self._finisher.cleanups(cleanups, report, now))
        settled, commits = records.state_commits(settled, self._faults, "archiving it")
        if not settled:
            return
        self._guard("archive finished experiments")
        result = self._store.update_branch(self._store.state_branch, lambda _tip: commits)
        report.pushes.append((self._store.state_branch, result.attempts))
        for transition, commit in zip(settled, result.commits, strict=True):
            announce(transition, commit, report, self._events)

    def _record(
        self,
        scan: Scan,
        states: dict[str, ExperimentState],
        state_tip: str | None,
        report: TickReport,
    ) -> list[tuple[Transition, str]]:
        """Plan and push this tick's transitions, one commit each, in one push.

        What the plan needs from outside Git is read once, before the push; on each state
        tip the push is tried on, the loop reads only that tip (its live documents and
        archived runs), and the plan itself (``engine.planner``) reads nothing.
        """
        self._guard("record transitions")
        now = self._clock()
        observed = self._observer.observe(states, now)
        files = self._candidates(scan, states, state_tip)
        planned: list[Transition] = []
        specs: list[CommitSpec] = []

        def plan(tip: str | None) -> list[CommitSpec]:
            current = states if tip == state_tip else self._load(tip)
            inputs = planner.Inputs(
                states=current,
                files=files if tip == state_tip else self._archived(tip, files, current),
                seen=self._observer.seen(current, observed, now),
                main=scan.main,
                now=now,
                sync_timeout=self._sync_timeout,
                commands=self._commands.pending(tip),
            )
            decided = planner.plan(inputs)
            self._note(decided)
            planned.clear()
            specs.clear()
            for transition in decided.transitions:
                with self._faults.boundary(transition.state.key, "recording a transition"):
                    specs.append(records.state_commit(transition))
                    planned.append(transition)
            if specs and tip is None:
                first = specs[0]
                specs[0] = CommitSpec(first.message, with_readme(None, first.changes))
            ignored = [records.ignored_commit(decided.ignored)] if decided.ignored else []
            return [*specs, *ignored]

        result = self._store.update_branch(self._store.state_branch, plan)
        for transition, spec in zip(planned, specs, strict=True):
            blob = records.live_blob(spec.changes)
            if blob is not None:  # the next tick's load finds it parsed already
                with self._faults.boundary(transition.state.key, "keeping its document"):
                    self._documents[blob] = as_recorded(transition.state)
        # An ignored command's commit comes last, after those of the transitions.
        recorded = list(zip(planned, result.commits[: len(planned)], strict=True))
        if result.commits:
            report.pushes.append((self._store.state_branch, result.attempts))
            self._failpoint("after-state-push")
        for transition, commit in recorded:
            announce(transition, commit, report, self._events)
        return recorded

    def _note(self, decided: planner.Plan) -> None:
        """Record a plan's faults; log the files it shadowed and the commands it ignored."""
        for key, stage, exc in decided.faults:
            self._faults.record(key, stage, exc)
        for target, starting, ignored in decided.shadowed:
            log.warning(
                "experiments_share_target", target=target, starting=starting, ignored=ignored
            )
        for command, why in decided.ignored:
            log.warning("command_ignored", path=command.path, commit=command.commit, why=why)

    def _candidates(
        self, scan: Scan, states: Mapping[str, ExperimentState], state_tip: str | None
    ) -> list[Candidate]:
        """The experiment files on main, with their runs' ids, archived at ``state_tip`` or not.

        For a fixed split that may start, the weights the cluster carries now.
        """
        named: list[Candidate] = []
        for found in scan.experiments:
            run_id = None
            with self._faults.boundary(found.spec.key, "naming its run"):
                run_id = experiment_id(found.spec, found.blob)
            named.append(Candidate(found.spec, found.blob, run_id))
        files = self._archived(state_tip, named, states)
        live_ids = {s.id for s in states.values()}
        for i, file in enumerate(files):
            fixed = file.spec.deployment_pattern is DeploymentPattern.FIXED_SPLIT
            if fixed and file.run_id not in live_ids | {None} and not file.archived:
                files[i] = replace(file, current=self._observer.current_weights(file.spec))
        return files

    def _archived(
        self, tip: str | None, files: list[Candidate], states: Mapping[str, ExperimentState]
    ) -> list[Candidate]:
        """``files``, with those whose run the state branch at ``tip`` archived marked so."""
        if tip is None:
            return files
        live_ids = {s.id for s in states.values()}
        out = []
        for found in files:
            archived = False
            if found.run_id is not None and found.run_id not in live_ids:
                path = archive_path(found.spec.namespace, found.spec.name, found.blob[:12])
                archived = self._store.blob_id(tip, path) is not None
            out.append(replace(found, archived=True, current=None) if archived else found)
        return out

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

    # -- act -------------------------------------------------------------------------

    def _act(self, transition: Transition) -> None:
        """Set the weights a recorded transition asks for (its outcome goes with the others)."""
        if any(isinstance(a, SetWeights) for a in transition.actions):
            self._traffic.set(transition.state)
            self._failpoint("after-weights")
