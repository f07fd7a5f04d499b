"""What a person's command does to a running experiment, and what an unanswered gate does.

``answer`` takes a running run's state and the commands pending for it (in the order they
were pushed) and returns one transition: every command answered (done, refused, with the
reason recorded in the document and cited by the commit), the run's new state, and what to
do (weights, an outcome). The semantics follow Argo Rollouts':

- ``pause`` freezes weights and iterations (nothing automatic happens: no iteration, no
  readiness or gate timeout); ``resume`` goes on, the next iteration a full interval later;
- ``abort`` returns traffic to the baseline and pushes the rollback outcome;
- ``promote`` ends the run now with the leading candidate *if* its last judged iteration
  met the objectives (refused otherwise; ``force`` skips the objectives and is recorded as
  forced); where ``spec.approval`` gates the promotion, a promote that would not count as
  an approval opens the gate instead;
- ``approve`` passes the gate the run waits at; with ``requireSigned`` only a command whose
  commit carries a signature of an allowed signer counts (others are refused and recorded).

A command that is not for the live run (another ``Rollout-Id``, a run that is over) never
reaches here: the loop records it as ignored. ``gate_timeout`` is the plan's other rule.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from reconciler.engine import experiment
from reconciler.engine.analysis import PASS
from reconciler.engine.control import COMMANDS_LIMIT, DONE, REFUSED, Command, CommandRecord, Gate
from reconciler.engine.experiment import Action, PushOutcome, SetWeights, Transition
from reconciler.engine.state import ExperimentState, Phase
from reconciler.spec.model import GateName, OnTimeout, TestingPattern

__all__ = ["answer", "gate_timeout", "running"]


def running(state: ExperimentState) -> bool:
    """Whether commands act on this run (it runs or waits at a gate; no outcome is due)."""
    return state.phase in {Phase.PROGRESSING, Phase.AWAITING_APPROVAL}


def answer(
    state: ExperimentState, commands: Sequence[Command], now: float, *, confirmed: bool
) -> Transition:
    """Answer ``commands`` (all for this run, oldest first) in one transition.

    ``confirmed``: the cluster was just seen carrying ``state.weights``. Once one command
    decided an outcome, the ones after it are refused (the run is over).
    """
    current = state
    outcome: PushOutcome | None = None
    summaries: list[str] = []
    for command in commands:
        if outcome is not None:
            why = "the run was already ended by an earlier command"
            current, text = _refuse(current, command, why, now)
        else:
            current, text, outcome = _one(current, command, now, confirmed=confirmed)
        summaries.append(text)
    actions: list[Action] = []
    if current.weights != state.weights:
        actions.append(SetWeights(current.weights))
    elif outcome is not None and current.weights:
        actions.append(SetWeights(current.weights))  # as decide does: set, idempotent
    if outcome is not None:
        actions.append(outcome)
    summary = f"{experiment.short(state.spec)}: " + "; ".join(summaries)
    return Transition(current, tuple(actions), summary, commands=tuple(commands))


def gate_timeout(state: ExperimentState, now: float) -> Transition | None:
    """A gate nobody answered within ``spec.approval.timeoutSeconds``: roll back, or proceed."""
    gate, approval = state.gate, state.spec.approval
    if (
        state.phase is not Phase.AWAITING_APPROVAL
        or gate is None
        or state.paused is not None
        or now - gate.opened_at < approval.timeout_seconds
    ):
        return None
    waited = f"no approval within {approval.timeout_seconds} s"
    name = experiment.short(state.spec)
    if approval.on_timeout is OnTimeout.PROCEED:
        passed, text = _pass_gate(state, now, f"{waited}, proceeding (onTimeout)", confirmed=True)
        return Transition(passed.state, passed.actions, f"{name}: {text}")
    return experiment.decide(
        replace(state, updated_at=now),
        None,
        f"{waited} (before {gate.before}), rolled back (onTimeout)",
        f"{name}: {waited} before {gate.before}",
    )


def _one(  # noqa: PLR0911 - one return per verb and refusal
    state: ExperimentState, command: Command, now: float, *, confirmed: bool
) -> tuple[ExperimentState, str, PushOutcome | None]:
    """One command's effect: the new state, a summary clause, the outcome it decided."""
    who = command.author or "someone"
    said = f": {command.reason}" if command.reason else ""
    verb = command.verb
    if verb == "pause":
        if state.paused is not None:
            return (*_refuse(state, command, f"already paused by {state.paused.author}", now), None)
        record = _record(command, now, DONE, "weights and iterations frozen")
        paused = replace(
            _with(state, record), paused=record, updated_at=now, reason=f"paused by {who}{said}"
        )
        return paused, f"paused by {who}", None
    if verb == "resume":
        if state.paused is None:
            return (*_refuse(state, command, "it is not paused", now), None)
        record = _record(command, now, DONE, "iterations go on, the next a full interval from now")
        resumed = replace(
            _with(state, record),
            paused=None,
            last_iteration_at=now,
            updated_at=now,
            reason=f"resumed by {who}{said}",
        )
        return resumed, f"resumed by {who}", None
    if verb == "abort":
        record = _record(command, now, DONE, "traffic back to the baseline, rollback pushed")
        decided = experiment.decide(
            replace(_with(state, record), updated_at=now),
            None,
            f"aborted by {who}{said}",
            "",
            confirmed=confirmed,
        )
        return decided.state, f"aborted by {who}, rolling back", _outcome(decided)
    if verb == "promote":
        return _promote(state, command, now, confirmed=confirmed)
    return _approve(state, command, now, confirmed=confirmed)


def _promote(
    state: ExperimentState, command: Command, now: float, *, confirmed: bool
) -> tuple[ExperimentState, str, PushOutcome | None]:
    who = command.author or "someone"
    if state.phase is Phase.AWAITING_APPROVAL:
        gate = state.gate.before if state.gate else "a gate"
        why = f"it waits for an approval before {gate}: use approve"
        return (*_refuse(state, command, why, now), None)
    winner, problem = _leader(state)
    if problem is not None and not command.force:
        return (*_refuse(state, command, f"{problem} (--force promotes anyway)", now), None)
    forced = problem is not None
    how = f"forced by {who} ({problem})" if forced else f"promoted by {who}"
    said = f": {command.reason}" if command.reason else ""
    approval = state.spec.approval
    if approval.gates(GateName.PROMOTION) and not _counts_as_approval(state, command):
        record = _record(command, now, DONE, f"{winner} awaits approval for promotion", forced)
        waiting = _gate_for_promotion(_with(state, record), winner, f"{how}{said}", now)
        return waiting, f"promotion of {winner} asked by {who}, awaiting approval", None
    record = _record(command, now, DONE, f"{winner} promoted now", forced)
    decided = experiment.decide(
        replace(_with(state, record), updated_at=now),
        winner,
        f"{how}{said}",
        "",
        confirmed=confirmed,
    )
    return decided.state, f"{how}, promoting {winner}", _outcome(decided)


def _approve(
    state: ExperimentState, command: Command, now: float, *, confirmed: bool
) -> tuple[ExperimentState, str, PushOutcome | None]:
    who = command.author or "someone"
    if state.phase is not Phase.AWAITING_APPROVAL or state.gate is None:
        return (*_refuse(state, command, "it does not wait for an approval", now), None)
    if not _counts_as_approval(state, command):
        why = (
            "spec.approval.requireSigned: the commit is not signed by an allowed key "
            f"({command.signature})"
        )
        return (*_refuse(state, command, why, now), None)
    signed = f", signed by {command.signer}" if command.signer else ""
    record = _record(command, now, DONE, f"gate before {state.gate.before} passed{signed}")
    passed, text = _pass_gate(
        _with(state, record), now, f"approved by {who}{signed}", confirmed=confirmed
    )
    return passed.state, text, _outcome(passed)


def _pass_gate(
    state: ExperimentState, now: float, how: str, *, confirmed: bool
) -> tuple[Transition, str]:
    """The gate is passed: the run starts, or its promotion is decided."""
    gate = state.gate
    assert gate is not None  # noqa: S101 - callers checked
    if gate.before == GateName.START.value:
        initial = experiment.initial_weights(state.spec, None)
        started = replace(
            state,
            phase=Phase.PROGRESSING,
            gate=None,
            weights=initial,
            last_iteration_at=now,
            updated_at=now,
            reason=f"{how}; started",
            applied=initial == state.weights and state.applied,
            applied_at=state.applied_at if initial == state.weights else None,
        )
        actions: tuple[Action, ...] = (SetWeights(initial),) if initial != state.weights else ()
        return Transition(started, actions, ""), f"{how}, started"
    decided = experiment.decide(
        replace(state, updated_at=now),
        gate.winner,
        f"{gate.reason}; {how}" if gate.reason else how,
        "",
        confirmed=confirmed,
    )
    return decided, f"{how}, promoting {gate.winner}"


def _gate_for_promotion(
    state: ExperimentState, winner: str, reason: str, now: float
) -> ExperimentState:
    return replace(
        state,
        phase=Phase.AWAITING_APPROVAL,
        gate=Gate(before=GateName.PROMOTION.value, opened_at=now, winner=winner, reason=reason),
        updated_at=now,
        reason=f"{reason}; the promotion of {winner} waits for an approval (spec.approval)",
    )


def _counts_as_approval(state: ExperimentState, command: Command) -> bool:
    return not state.spec.approval.require_signed or command.signer is not None


def _leader(state: ExperimentState) -> tuple[str, str | None]:
    """The version a promote ends the run with, and why it falls short of its objectives.

    The candidates that passed the last judged iteration, the one carrying most traffic
    first; forced, without one, the candidate carrying most traffic (Conformance: the one
    version it tests).
    """
    spec = state.spec
    judged = spec.candidates or (spec.baseline,)
    last = state.history[-1] if state.history else None
    verdicts = dict(last.verdicts) if last is not None else {}
    carried = dict(state.weights)
    order = {v.name: i for i, v in enumerate(judged)}

    def rank(name: str) -> tuple[int, int]:
        return (-carried.get(name, 0), order[name])

    passed = sorted((v.name for v in judged if verdicts.get(v.name) == PASS), key=rank)
    if passed:
        return passed[0], None
    fallback = min((v.name for v in judged), key=rank)
    if spec.testing_pattern is TestingPattern.CONFORMANCE:
        fallback = spec.baseline.name
    if last is None:
        return fallback, "no iteration has been judged yet"
    said = ", ".join(f"{name} {verdicts.get(name, 'no-data')}" for name in sorted(order, key=rank))
    return fallback, f"no candidate met its objectives at iteration {last.iteration} ({said})"


def _refuse(
    state: ExperimentState, command: Command, why: str, now: float
) -> tuple[ExperimentState, str]:
    record = _record(command, now, REFUSED, why)
    return _with(state, record), f"{command.verb} by {command.author or 'someone'} refused: {why}"


def _record(
    command: Command, now: float, result: str, why: str, forced: bool = False
) -> CommandRecord:
    return CommandRecord(
        commit=command.commit,
        command=command.verb,
        author=command.author,
        time=now,
        result=result,
        why=why,
        reason=command.reason,
        forced=forced,
        signer=command.signer,
    )


def _with(state: ExperimentState, record: CommandRecord) -> ExperimentState:
    return replace(state, commands=(*state.commands, record)[-COMMANDS_LIMIT:])


def _outcome(transition: Transition) -> PushOutcome | None:
    return next((a for a in transition.actions if isinstance(a, PushOutcome)), None)
