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

from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from reconciler.controller import records
from reconciler.controller.isolation import REPO_WIDE, describe
from reconciler.engine import experiment
from reconciler.engine.state import ExperimentState
from reconciler.errors import PromotionError
from reconciler.ports import CommitSpec, EnvStore, Plan, UpdateResult
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
                commit = records.outcome_commit(state, changes, decision)
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
