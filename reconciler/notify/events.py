"""Which state commits are worth telling people about, as values: the notifier's pure core.

A tick reports every state commit it made (``TickReport.recorded``: the transition and its
commit), the outcomes it landed on main (``outcomes``) and what failed (``errors``).
``events_of`` turns those lists into ``Event`` values, at most one per state commit, whose
id *is* that commit, so a receiver de-duplicates by it; ``kind_of`` says what one transition
announces, or None for the bookkeeping commits nobody needs to hear about (final weights
confirmed, a sync awaited, a cleanup). Only the lists of this process's own ticks are ever
given, so a restarted process never announces a commit recorded before it started.

A transition carries only the new state, so its kind is read from what that state says
happened at its own time (``updated_at``): the last iteration judged then, a gate opened
then, a skipped iteration recorded then, the commands it answers. That reading assumes the
clock moved between two transitions of one run, which a tick's clock always does.

Pure: no clock, no I/O, no logging; it reads the report's lists, never the controller's
report type (the layers forbid that import).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.engine.control import DONE, CommandRecord
from reconciler.engine.experiment import SetWeights, Transition
from reconciler.engine.state import ExperimentState, Pairs, Phase

__all__ = ["Event", "EventKind", "events_of", "kind_of", "parse_kinds"]


class EventKind(StrEnum):
    """What an event announces (the names ``notify.events`` takes)."""

    STARTED = "started"
    """A run found on main started shifting traffic (or was approved to start)."""
    STEP = "step"
    """An iteration was judged (the last one says what was decided)."""
    AWAITING_APPROVAL = "awaiting-approval"
    """The run waits at an approval gate (``reconciler approve``)."""
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTED = "aborted"
    PROMOTED = "promoted"
    """The promotion commit is on main."""
    ROLLED_BACK = "rolled-back"
    """The rollback commit is on main, or the run stopped unpromoted (preempted, withdrawn)."""
    DRIFT_CORRECTED = "drift-corrected"
    """The cluster carried other weights and the recorded ones were set again (or, when
    something keeps putting others back, the run is held)."""
    OUTCOME_PUSH_FAILED = "outcome-push-failed"
    """An outcome commit could not be pushed to main (tried again each tick)."""


_RUNNING = frozenset({Phase.PROGRESSING, Phase.AWAITING_APPROVAL})
_STOPPED = frozenset({Phase.PREEMPTED, Phase.WITHDRAWN})
_LANDED = {Phase.PROMOTED: EventKind.PROMOTED, Phase.ROLLED_BACK: EventKind.ROLLED_BACK}
_NOT_PUSHED = re.compile(
    r"(?P<run>\S+@[0-9a-f]+): outcome (?P<outcome>promoted|rolled-back) not pushed: (?P<why>.*)",
    re.DOTALL,
)
"""``controller.outcomes``' error for an outcome that did not reach main."""


@dataclass(frozen=True, slots=True)
class Event:
    """One notification, before it is worded for a target."""

    id: str
    """The state commit that recorded it (an outcome that failed to reach main, which no
    state commit records: ``outcome-push-failed:<Rollout-Id>``)."""
    kind: EventKind
    run_id: str
    """The ``Rollout-Id``: ``namespace/name@<spec blob>``."""
    experiment: str
    """``namespace/name``."""
    target: str
    phase: str
    iteration: int
    iterations: int
    weights: Pairs
    summary: str
    """The state commit's subject line (or what failed)."""
    reason: str
    time: float
    """When it happened (seconds since the epoch)."""
    commit: str | None
    """The state commit (None for an outcome that failed to reach main)."""
    winner: str | None = None
    outcome_commit: str | None = None
    command: CommandRecord | None = None
    """The answered command that made it (pause, resume, abort, approve)."""


def parse_kinds(names: Iterable[str]) -> frozenset[EventKind]:
    """The kinds ``names`` spell (none: every kind).

    Raises:
        ValueError: a name is not a kind; the message lists the kinds.
    """
    known = {kind.value: kind for kind in EventKind}
    wanted = [name.strip().lower() for name in names if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(
            f"unknown event {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        )
    return frozenset(known[name] for name in wanted) if wanted else frozenset(EventKind)


def kind_of(  # noqa: PLR0911 - one return per kind
    transition: Transition, *, landed: bool = False
) -> EventKind | None:
    """What a recorded transition announces; None when it announces nothing.

    ``landed``: the transition records its outcome commit on main (``events_of`` tells from
    ``TickReport.outcomes``; a later commit of the finished run carries the same outcome).
    """
    state = transition.state
    if state.phase.final:
        if landed:
            return _LANDED.get(state.phase)
        return EventKind.ROLLED_BACK if _stopping(transition) else None
    answered = _answered(transition)
    if answered:
        return _commanded(state, {r.command for r in answered if r.result == DONE})
    if _gate_opened(state):
        return EventKind.AWAITING_APPROVAL
    if _judged(state):
        return EventKind.STEP
    if state.phase in _RUNNING and (_skipped(state) or state.held is not None):
        return EventKind.DRIFT_CORRECTED
    if _starts(state):
        return EventKind.STARTED
    return None


def events_of(
    recorded: Sequence[tuple[Transition, str]],
    outcomes: Sequence[tuple[str, str]] = (),
    errors: Sequence[str] = (),
) -> list[Event]:
    """The events of one tick: one per announcing state commit, in order, then the failures.

    Args:
        recorded: ``TickReport.recorded``, each transition with its state commit.
        outcomes: ``TickReport.outcomes``, (Rollout-Id, outcome commit) of the outcomes
            landed this tick: the first later transition of that run carrying that commit
            is the one that records it.
        errors: ``TickReport.errors``; an outcome not pushed to main is an event.
    """
    pending = set(outcomes)
    out: list[Event] = []
    for transition, commit in recorded:
        state = transition.state
        mark = (state.id, state.outcome_commit or "")
        landed = state.phase.final and mark in pending
        pending.discard(mark)
        kind = kind_of(transition, landed=landed)
        if kind is not None:
            out.append(_event(commit, kind, transition))
    decided = {t.state.id: t for t, _ in recorded if t.state.phase.deciding}
    seen: set[str] = set()
    for error in errors:
        found = _NOT_PUSHED.fullmatch(error)
        if found is None or found["run"] in seen:
            continue
        seen.add(found["run"])
        out.append(_not_pushed(found["run"], found["outcome"], found["why"], decided))
    return out


def _event(commit: str, kind: EventKind, transition: Transition) -> Event:
    state = transition.state
    answered = _answered(transition)
    return Event(
        id=commit,
        kind=kind,
        run_id=state.id,
        experiment=state.key,
        target=state.spec.target,
        phase=state.phase.value,
        iteration=state.iteration,
        iterations=state.spec.duration.iterations,
        weights=state.weights,
        summary=transition.summary,
        reason=state.reason,
        time=state.updated_at,
        commit=commit,
        winner=state.winner,
        outcome_commit=state.outcome_commit,
        command=_deciding_command(answered),
    )


def _not_pushed(run_id: str, outcome: str, why: str, decided: dict[str, Transition]) -> Event:
    """An outcome that did not reach main; the run's decision when this tick recorded it."""
    experiment, _, _blob = run_id.partition("@")
    transition = decided.get(run_id)
    state = transition.state if transition is not None else None
    return Event(
        id=f"{EventKind.OUTCOME_PUSH_FAILED.value}:{run_id}",
        kind=EventKind.OUTCOME_PUSH_FAILED,
        run_id=run_id,
        experiment=experiment,
        target=state.spec.target if state else "",
        phase=state.phase.value if state else "",
        iteration=state.iteration if state else 0,
        iterations=state.spec.duration.iterations if state else 0,
        weights=state.weights if state else (),
        summary=f"{experiment}: outcome {outcome} not pushed to main: {why}",
        reason=why,
        time=state.updated_at if state else 0.0,
        commit=None,
        winner=state.winner if state else None,
    )


def _answered(transition: Transition) -> tuple[CommandRecord, ...]:
    """The records of the commands this transition answered (the last ones it appended)."""
    count = len(transition.commands)
    return transition.state.commands[-count:] if count else ()


def _deciding_command(answered: Sequence[CommandRecord]) -> CommandRecord | None:
    done = [r for r in answered if r.result == DONE]
    return done[-1] if done else None


def _commanded(state: ExperimentState, done: set[str]) -> EventKind | None:
    """A transition that answers commands: what the ones carried out did."""
    if "abort" in done:
        return EventKind.ABORTED
    if "pause" in done and state.paused is not None:
        return EventKind.PAUSED
    if "resume" in done and state.paused is None:
        return EventKind.RESUMED
    if "promote" in done and _gate_opened(state):  # its promotion waits for an approval
        return EventKind.AWAITING_APPROVAL
    if "approve" in done and _starts(state, approved=True):
        return EventKind.STARTED
    # Refused or ignored ones, and a promotion decided: its outcome is announced on main.
    return None


def _stopping(transition: Transition) -> bool:
    """The commit that stops an unpromoted run (later ones of it only confirm its weights)."""
    state = transition.state
    if state.phase not in _STOPPED:
        return False
    return not state.weights or any(isinstance(a, SetWeights) for a in transition.actions)


def _gate_opened(state: ExperimentState) -> bool:
    gate = state.gate
    return (
        state.phase is Phase.AWAITING_APPROVAL
        and gate is not None
        and gate.opened_at == state.updated_at
    )


def _judged(state: ExperimentState) -> bool:
    """An iteration was judged at this transition (decisions taken on it included)."""
    if not state.history or state.phase.final:
        return False
    last = state.history[-1]
    return last.iteration == state.iteration and last.time == state.updated_at


def _skipped(state: ExperimentState) -> bool:
    """This transition recorded a skipped iteration: the recorded weights were set again."""
    return bool(state.skipped) and state.skipped[-1].time == state.updated_at


def _starts(state: ExperimentState, *, approved: bool = False) -> bool:
    """The run begins iterating now: found on main, or its start gate passed.

    A hold released at iteration 0 also sets ``last_iteration_at`` but follows skipped
    iterations (``skipped``), and is not a start. An approval starts the run even when it is
    paused (it then waits for a resume).
    """
    return (
        state.phase is Phase.PROGRESSING
        and state.iteration == 0
        and not state.history
        and state.gate is None
        and state.last_iteration_at == state.updated_at
        and (approved or (not state.skipped and state.paused is None))
    )
