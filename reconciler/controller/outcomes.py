"""Outcomes on main: every recorded decision due becomes one commit, all in one push a tick.

A tick may have several outcomes due (decisions it took, and earlier ones whose push did
not land). ``push_outcomes`` builds one commit per outcome (invariant 3), each on the
tree the previous one left, and pushes them together with one compare-and-swap: on a
main that CI pushes to, every push is a window in which CI can win, and one window for
all is what lets them land while CI keeps pushing (``hack/bench.py race``). Main is
fetched afresh first, since its tip from the start of the tick is stale by then. On every
tip the plan is given, each outcome is first looked for by its ``Rollout-Id`` (exactly
once: one already there is not pushed again), and one whose edits cannot be applied (a
``set`` on a path main does not have, or anything else one experiment's edits raise) is
left out with its error, never holding up the others. ``find_decision`` names the state
commit a decision was recorded in, for the ``Rollout-State`` trailer. Reads and pushes go
through the ``EnvStore`` port only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from reconciler.controller import records
from reconciler.controller.isolation import REPO_WIDE, Faults, describe
from reconciler.controller.report import TickReport, announce
from reconciler.controller.traffic import Traffic
from reconciler.engine import experiment
from reconciler.engine.experiment import SetWeights, Transition
from reconciler.engine.state import ExperimentState
from reconciler.errors import PromotionError, ReconcilerError
from reconciler.ports import CommitSpec, EnvStore, EventSink, GitOpsOperator, Plan, UpdateResult
from reconciler.promote import edits

log = structlog.get_logger("reconciler.controller")

Due = tuple[ExperimentState, str | None]
"""A deciding state and the state commit that recorded its decision (None: not known)."""


@dataclass
class OutcomePush:
    """What one push of due outcomes did."""

    result: UpdateResult
    commits: dict[str, str] = field(default_factory=dict)
    """Run id to its outcome commit on main: pushed now, or found there already."""
    failed: dict[str, str] = field(default_factory=dict)
    """Run id to why its outcome commit could not be built (it stays due)."""


def push_outcomes(store: EnvStore, due: Sequence[Due]) -> OutcomePush:
    """Push every due outcome to main, one commit each, in one compare-and-swap push.

    Raises:
        ReconcilerError: the push did not land (rejected every time, or the network
            failed): every outcome stays due, recorded, for the next tick.
    """
    found: dict[str, str] = {}
    failed: dict[str, str] = {}
    planned: list[str] = []
    plan = outcomes_plan(store, due, found=found, failed=failed, planned=planned)
    result = store.update_branch(store.main_branch, plan, fresh=True)
    pushed = OutcomePush(result, dict(found), dict(failed))
    pushed.commits.update(zip(planned, result.commits, strict=True))
    return pushed


def outcomes_plan(
    store: EnvStore,
    due: Sequence[Due],
    *,
    found: dict[str, str],
    failed: dict[str, str],
    planned: list[str],
) -> Plan:
    """The plan for main that adds the commit of every due outcome not on it yet.

    On each tip it fills ``found`` (outcomes already on main, by ``Rollout-Id``),
    ``failed`` (outcomes whose edits do not apply) and ``planned`` (the run ids of the
    commits it returns, in order).
    """
    search = _Search(store, [state for state, _ in due])

    def plan(tip: str | None) -> list[CommitSpec]:
        failed.clear()
        planned.clear()
        if tip is None:
            found.clear()
            return []
        found.clear()
        found.update(search.up_to(tip))
        specs: list[CommitSpec] = []
        overlay: dict[str, bytes | None] = {}
        """Files as the commits planned so far left them."""
        for state, decision in due:
            if state.id in found:
                continue
            try:
                outcome = experiment.outcome_of(state)
                files = {
                    p: overlay[p] if p in overlay else store.read_file(tip, p)
                    for p in edits.needed_paths(state.spec, outcome)
                }
                changes = edits.apply(state.spec, outcome, state.winner, files)
                before = {
                    p: overlay[p] if p in overlay else store.read_file(tip, p) for p in changes
                }
                commit = records.outcome_commit(state, changes, decision, before=before)
            except REPO_WIDE:
                raise
            except PromotionError as exc:
                failed[state.id] = str(exc)
                continue
            except Exception as exc:  # invariant 9: this outcome's fault alone
                failed[state.id] = f"internal error (please report it): {describe(exc)}"
                log.error("outcome_bug", experiment=state.id, error=describe(exc), exc_info=exc)
                continue
            overlay.update(changes)
            specs.append(commit)
            planned.append(state.id)
        return specs

    return plan


@dataclass
class CleanupPush:
    """What one push of due cleanups did."""

    result: UpdateResult
    commits: dict[str, str | None] = field(default_factory=dict)
    """Run id to its cleanup commit on main (pushed now or found there; None: nothing was
    left to remove)."""
    failed: dict[str, str] = field(default_factory=dict)


def push_cleanups(store: EnvStore, due: Sequence[ExperimentState]) -> CleanupPush:
    """Push the cleanup commit of every due blue/green promotion, one each, in one push.

    Exactly once: main is searched first (back to each run's outcome commit) for a commit
    carrying its ``Rollout-Id`` and ``Rollout-Cleanup``; files already gone are left out,
    and a run with nothing left to remove gets no commit.

    Raises:
        ReconcilerError: the push did not land; every cleanup stays due.
    """
    found: dict[str, str | None] = {}
    failed: dict[str, str] = {}
    planned: list[str] = []

    def plan(tip: str | None) -> list[CommitSpec]:
        found.clear()
        failed.clear()
        planned.clear()
        if tip is None:
            return []
        specs: list[CommitSpec] = []
        for state in due:
            try:
                hit = _cleanup_on(store, tip, state)
                if hit is not None:
                    found[state.id] = hit
                    continue
                files = {p: store.read_file(tip, p) for p in state.spec.blue_green_cleanup}
                changes = edits.cleanup_changes(state.spec, files)
                if not changes:
                    found[state.id] = None
                    continue
                commit = records.cleanup_commit(state, changes)
            except REPO_WIDE:
                raise
            except Exception as exc:  # invariant 9: this cleanup's fault alone
                failed[state.id] = describe(exc)
                log.error("cleanup_bug", experiment=state.id, error=describe(exc), exc_info=exc)
                continue
            specs.append(commit)
            planned.append(state.id)
        return specs

    result = store.update_branch(store.main_branch, plan, fresh=True)
    pushed = CleanupPush(result, dict(found), dict(failed))
    pushed.commits.update(zip(planned, result.commits, strict=True))
    return pushed


def _cleanup_on(store: EnvStore, tip: str, state: ExperimentState) -> str | None:
    """The run's cleanup commit on main at ``tip``, searched back to its outcome commit."""
    for commit in store.log(tip, hide=state.outcome_commit):
        if commit.trailer(records.ID) == state.id and commit.trailer(records.CLEANUP):
            return commit.id
    return None


class _Search:
    """The outcome commits of some runs on main, found by ``Rollout-Id``, incrementally.

    The plan runs between reading main's tip and pushing on it, the window in which CI can
    win: it must not grow with main's history. The first search walks main once for all
    the runs, back to their decisions (it stops once every ``decided_on`` was passed);
    after a rejection only the commits added since the last tip are read.
    """

    def __init__(self, store: EnvStore, states: Sequence[ExperimentState]) -> None:
        self._store = store
        self._ids = {state.id for state in states}
        self._decided = {state.decided_on for state in states}
        self._found: dict[str, str] = {}
        # Every outcome is built on main as fetched after its decision, so it descends from
        # its run's ``decided_on``; nothing at or below their common ancestor can be one.
        # Hiding it bounds the first walk by what main gained since the oldest decision
        # (a topological walk reads all it can reach before yielding anything).
        decided = sorted(c for c in self._decided if c is not None)
        self._searched: str | None = None
        self._floor = store.merge_base(decided) if decided and None not in self._decided else None

    def up_to(self, tip: str) -> dict[str, str]:
        """Run id to outcome commit, for the runs whose outcome is on main at ``tip``."""
        if tip == self._searched:
            return dict(self._found)
        unseen = set(self._decided) if self._searched is None else set()
        hide = self._searched if self._searched is not None else self._floor
        for commit in self._store.log(tip, hide=hide):
            run = commit.trailer(records.ID)
            if run in self._ids and commit.trailer(records.OUTCOME):
                self._found.setdefault(run, commit.id)
            unseen.discard(commit.id)
            if self._searched is None and not unseen and None not in self._decided:
                break  # every decision passed: nothing older can hold their outcomes
        self._searched = tip
        return dict(self._found)


def find_outcome(store: EnvStore, main_tip: str, state: ExperimentState) -> str | None:
    """The outcome commit of ``state``'s run on main, if it landed.

    Searches main back to the commit the decision was taken on, by ``Rollout-Id``.
    """
    return _Search(store, [state]).up_to(main_tip).get(state.id)


def find_decision(store: EnvStore, state_tip: str, state: ExperimentState) -> str | None:
    """The state commit that recorded ``state``'s pending decision, for ``Rollout-State``.

    A decision taken by an earlier tick or process (whose outcome push failed or never
    happened) is the newest commit of the run in its deciding phase: nothing is recorded
    about a run between its decision and its outcome. The walk stops at the run's first
    other commit, so it reads only what was recorded since the decision.
    """
    for commit in store.log(state_tip):
        if commit.trailer(records.ID) != state.id:
            continue
        if commit.trailer(records.PHASE) == state.phase.value:
            return commit.id
        return None
    return None


class Finisher:
    """Pushes a tick's due outcomes to main, then records them landed and sets final weights.

    The outcomes go in one push (``push_outcomes``); those on main are recorded on the
    state branch, one commit each, in one push; then the weights their documents record
    (all on the baseline, or the winner's) are set. With a GitOps operator it is asked to
    sync each outcome commit, and the document waits for it.
    """

    def __init__(
        self,
        store: EnvStore,
        traffic: Traffic,
        faults: Faults,
        *,
        operator: GitOpsOperator | None,
        guard: Callable[[str], None],
        failpoint: Callable[[str], None],
        clock: Callable[[], float],
        events: EventSink | None,
    ) -> None:
        """Write through ``store`` and ``traffic``; ``guard`` before writing to main."""
        self._store, self._traffic, self._faults = store, traffic, faults
        self._operator, self._guard, self._failpoint = operator, guard, failpoint
        self._clock, self._events = clock, events

    def finish(self, due: list[Due], report: TickReport) -> None:
        """Push the due outcomes to main (once each, in one push), then record them landed."""
        if not due:
            return
        self._guard("push outcomes to main")
        try:
            pushed = push_outcomes(self._store, due)
        except ReconcilerError as exc:
            for state, _decision in due:
                _not_pushed(state, str(exc), report)
            return
        if pushed.result.commits:
            report.pushes.append((self._store.main_branch, pushed.result.attempts))
            self._failpoint("after-main-push")
        now = self._clock()
        landed: list[Transition] = []
        for state, _decision in due:
            with self._faults.boundary(state.key, "recording its outcome"):
                transition = self._landed(state, pushed, report, now)
                if transition is not None:
                    landed.append(transition)
        if landed:
            self._record(landed, report)

    def _landed(
        self, state: ExperimentState, pushed: OutcomePush, report: TickReport, now: float
    ) -> Transition | None:
        """``state``'s outcome-landed transition, if its outcome is on main."""
        commit = pushed.commits.get(state.id)
        if commit is None:
            _not_pushed(state, pushed.failed.get(state.id, "main branch is missing"), report)
            return None
        log.info(
            "outcome_on_main",
            experiment=state.id,
            outcome=experiment.outcome_of(state),
            commit=commit,
            attempts=pushed.result.attempts,
            already_there=commit not in pushed.result.commits,
        )
        if self._operator is not None:
            try:
                self._operator.request_sync(commit)
            except ReconcilerError as exc:
                log.warning("gitops_refresh_failed", experiment=state.id, error=str(exc))
        return experiment.outcome_landed(
            state,
            commit,
            now,
            await_sync=self._operator is not None,
            confirmed=self._traffic.converged(state.key),
        )

    def _record(self, landed: list[Transition], report: TickReport) -> None:
        """Record the outcomes on main (one commit each, one push), then set final weights."""
        encoded, commits = records.state_commits(landed, self._faults, "recording its outcome")
        if not encoded:
            return
        result = self._store.update_branch(self._store.state_branch, lambda _tip: commits)
        report.pushes.append((self._store.state_branch, result.attempts))
        self._failpoint("after-outcome-record")
        for transition, commit in zip(encoded, result.commits, strict=True):
            announce(transition, commit, report, self._events)
            report.outcomes.append((transition.state.id, transition.state.outcome_commit or ""))
        for transition in encoded:
            if any(isinstance(a, SetWeights) for a in transition.actions):
                with self._faults.boundary(transition.state.key, "setting weights"):
                    self._traffic.set(transition.state)

    def cleanups(
        self, due: list[ExperimentState], report: TickReport, now: float
    ) -> list[Transition]:
        """Push the due blue/green cleanups (one commit each, one push); their transitions.

        Each returned transition records its cleanup and archives the document; one whose
        cleanup did not land is left due, with its error in the report.
        """
        if not due:
            return []
        self._guard("push cleanups to main")
        try:
            pushed = push_cleanups(self._store, due)
        except ReconcilerError as exc:
            for state in due:
                _cleanup_failed(state, str(exc), report)
            return []
        if pushed.result.commits:
            report.pushes.append((self._store.main_branch, pushed.result.attempts))
            self._failpoint("after-cleanup-push")
        out: list[Transition] = []
        for state in due:
            if state.id not in pushed.commits:
                _cleanup_failed(state, pushed.failed.get(state.id, "main is missing"), report)
                continue
            commit = pushed.commits[state.id]
            log.info("cleanup_on_main", experiment=state.id, commit=commit)
            if commit is not None and self._operator is not None:
                try:
                    self._operator.request_sync(commit)
                except ReconcilerError as exc:
                    log.warning("gitops_refresh_failed", experiment=state.id, error=str(exc))
            out.append(experiment.cleaned(state, commit, now))
        return out


def _cleanup_failed(state: ExperimentState, why: str, report: TickReport) -> None:
    report.errors.append(f"{state.id}: cleanup not pushed: {why}")
    log.error("cleanup_failed", experiment=state.id, error=why, retried="next tick")


def _not_pushed(state: ExperimentState, why: str, report: TickReport) -> None:
    outcome = experiment.outcome_of(state)
    report.errors.append(f"{state.id}: outcome {outcome} not pushed: {why}")
    log.error("outcome_failed", experiment=state.id, outcome=outcome, error=why)
