"""The pure decision engine for every testing and deployment pattern.

``start``, ``step``, ``outcome_landed``, ``preempt`` and ``withdraw`` take values (spec,
state, observations, the time) and return a ``Transition``: the new state, the actions to
take once it is recorded, and a one-line summary for the commit. No clock, no I/O, no
logging: the same inputs always give the same transition.

Testing patterns decide who may win (``verdicts``): **Canary** validates its one
candidate against the objectives; **A/B** and **A/B/n** pick, among the candidates that
meet every objective and beat the baseline on the first reward with probability strictly
above the confidence shared among them, the one most likely best (otherwise the baseline
stays); **Conformance** validates one version and shifts no traffic. Deployment patterns
decide traffic: **Progressive** grows the leading candidate (one that passed, else one on
track: within its limits, short of evidence) by at most ``maxCandidateWeightIncrement`` up
to ``maxCandidateWeight`` after each iteration it leads; **FixedSplit** keeps the split it
started with; **BlueGreen** keeps candidates at 0 until one is validated, then switches
all traffic to it at once. A version that fails never gains traffic, and a failing A/B/n
candidate loses its traffic to the baseline. ``failureLimit`` consecutive failed
iterations, or ``noDataLimit`` consecutive iterations without data (and nobody on track),
end the experiment with no winner (fail safe). Weights always sum to 100.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.engine import traffic, verdicts, weights
from reconciler.engine.analysis import FAIL, NO_DATA, PASS, Judgement
from reconciler.engine.control import Command, Gate
from reconciler.engine.state import (
    DUE,
    HISTORY_LIMIT,
    SKIPPED_LIMIT,
    ExperimentState,
    IterationRecord,
    Pairs,
    Phase,
    SkipRecord,
)
from reconciler.engine.verdicts import choose_winner, compare, judge, leader
from reconciler.ports import MetricValue
from reconciler.spec.model import (
    DeploymentPattern,
    Experiment,
    GateName,
    TestingPattern,
    Version,
)

Observations = Mapping[str, Mapping[str, MetricValue]]
"""Version name to metric name to value."""

PROMOTED, ROLLED_BACK = "promoted", "rolled-back"
HOLD_AFTER = 3
"""Corrections in a row (no iteration judged in between) after which an experiment is held:
something keeps putting other weights back, and fighting it silently helps nobody."""
_WORDS = {PASS: "objectives met", FAIL: "objectives failed", NO_DATA: "not enough data"}


@dataclass(frozen=True)
class SetWeights:
    """Set these weights on the cluster (after the state that names them is pushed)."""

    weights: Pairs


@dataclass(frozen=True)
class PushOutcome:
    """Build and push the promotion or rollback commit on main."""

    outcome: str
    """``promoted`` (a candidate won, or a Conformance run passed) or ``rolled-back``."""
    winner: str | None


Action = SetWeights | PushOutcome


@dataclass(frozen=True)
class Transition:
    """A new state, what to do once it is recorded, and the commit's subject line."""

    state: ExperimentState
    actions: tuple[Action, ...]
    summary: str
    commands: tuple[Command, ...] = ()
    """The commands this transition answers: its commit removes their files."""


def shifts_traffic(spec: Experiment) -> bool:
    """Whether the experiment sets weights at all (Conformance does not)."""
    return spec.testing_pattern is not TestingPattern.CONFORMANCE


def start(
    spec: Experiment,
    *,
    spec_blob: str,
    source_commit: str,
    now: float,
    current: Mapping[str, int] | None = None,
) -> Transition:
    """Begin an experiment at iteration 0.

    Args:
        spec: the experiment.
        spec_blob: blob id of its file on main.
        source_commit: the main commit it was found in.
        now: the time.
        current: weights the cluster carries now, used by FixedSplit when they are valid.
    """
    initial = initial_weights(spec, current)
    state = ExperimentState(
        spec=spec,
        spec_blob=spec_blob,
        source_commit=source_commit,
        phase=Phase.PROGRESSING,
        iteration=0,
        weights=initial,
        started_at=now,
        updated_at=now,
        last_iteration_at=now,
        reason="experiment found on main",
        applied=not initial,
    )
    if spec.approval.gates(GateName.START):
        return _await_start(state, now)
    actions: tuple[Action, ...] = (SetWeights(initial),) if initial else ()
    split = f", {_describe(spec, initial)}" if initial else ""
    summary = (
        f"{short(spec)}: started {spec.testing_pattern.value} "
        f"{spec.deployment_pattern.value}, {spec.duration.iterations} iterations{split}"
    )
    return Transition(state, actions, summary)


def _await_start(state: ExperimentState, now: float) -> Transition:
    """Found on main, but it waits for an approval before the candidate gets any traffic."""
    spec = state.spec
    hold = weights.baseline_only(spec) if shifts_traffic(spec) else ()
    planned = ", then " + _describe(spec, state.weights) if state.weights else ""
    waiting = replace(
        state,
        phase=Phase.AWAITING_APPROVAL,
        weights=hold,
        reason="experiment found on main; it starts once approved (spec.approval)",
        applied=not hold,
        gate=Gate(before=GateName.START.value, opened_at=now),
    )
    actions: tuple[Action, ...] = (SetWeights(hold),) if hold else ()
    return Transition(waiting, actions, f"{short(spec)}: awaiting approval before start{planned}")


def is_due(state: ExperimentState, now: float) -> bool:
    """Whether the next iteration's interval has passed (never while paused or at a gate)."""
    interval = state.spec.duration.interval_seconds
    return (
        state.phase is Phase.PROGRESSING
        and state.held is None
        and state.paused is None
        and now >= state.last_iteration_at + interval
    )


def step(state: ExperimentState, observations: Observations, now: float) -> Transition | None:
    """Run one iteration if it is due; None when there is nothing to do yet.

    Called only when the cluster was just seen carrying ``state.weights`` (invariant 8:
    no iteration is judged on a split the cluster did not carry), so weights that stay as
    they are count as confirmed at ``now``.
    """
    if not is_due(state, now):
        return None
    spec = state.spec
    judged = {v.name: judge(spec, observations.get(v.name, {})) for v in spec.versions}
    iteration = state.iteration + 1
    final = iteration >= spec.duration.iterations
    comparison = compare(spec, observations, judged, final=final)
    chances = dict(comparison.beats) if comparison is not None else {}
    record = IterationRecord(
        iteration=iteration,
        time=now,
        weights=tuple(sorted(state.weights)),
        verdicts=tuple(sorted((name, j.verdict) for name, j in judged.items())),
        metrics=tuple(
            sorted(
                (version, metric, value.value if value.status == "ok" else None)
                for version, values in observations.items()
                for metric, value in values.items()
            )
        ),
        chances=tuple(sorted(chances.items())),
    )
    overall = _overall(spec, judged)
    failures = state.failures + 1 if overall == FAIL else 0
    # A candidate that is measured and within its limits, only short of evidence, is
    # gathering it: that is progress, not an iteration without data.
    on_track = any(judged[v.name].on_track for v in _judged_versions(spec))
    no_data = state.no_data + 1 if overall == NO_DATA and not on_track else 0
    base = replace(
        state,
        iteration=iteration,
        failures=failures,
        no_data=no_data,
        history=(*state.history, record)[-HISTORY_LIMIT:],
        evidence=verdicts.evidence(spec, iteration, judged, comparison),
        updated_at=now,
        last_iteration_at=now,
        corrections=0,
        applied=True,
        applied_at=now,
    )
    of_total = f"iteration {iteration}/{spec.duration.iterations}"
    if failures >= spec.criteria.failure_limit:
        reason = f"{failures} consecutive failed iterations (failureLimit)"
        return decide(base, None, reason, f"{short(spec)}: {of_total}, {_WORDS[FAIL]}")
    if no_data >= spec.criteria.no_data_limit:
        reason = f"{no_data} consecutive iterations without enough data (noDataLimit)"
        return decide(base, None, reason, f"{short(spec)}: {of_total}, {_WORDS[NO_DATA]}")
    if final:
        winner, reason = choose_winner(spec, judged, comparison)
        summary = f"{short(spec)}: {of_total}, {_WORDS[overall]}"
        if (
            spec.approval.gates(GateName.PROMOTION)
            and outcome_of(replace(base, winner=winner)) == PROMOTED
        ):
            return _await_promotion(base, winner, reason, summary, now)
        return decide(base, winner, reason, summary)
    leader_name = leader(spec, judged, comparison)
    failing = {c.name for c in spec.candidates if judged[c.name].verdict == FAIL}
    new_weights = _next_weights(spec, state.weights, leader_name, failing)
    new_state = _confirm(
        replace(base, weights=new_weights, reason=_reason(judged)), base, now, confirmed=True
    )
    actions: tuple[Action, ...] = (SetWeights(new_weights),) if new_weights != state.weights else ()
    traffic = f", {_describe(spec, new_weights)}" if new_weights else ""
    words = _WORDS[overall]
    needs = [judged[v.name].needs for v in spec.versions if judged[v.name].needs]
    if overall == NO_DATA and needs:
        words += f", needs ~{max(n for n in needs if n):,} more requests"
    return Transition(new_state, actions, f"{short(spec)}: {of_total}{traffic}, {words}")


def _await_promotion(
    state: ExperimentState, winner: str | None, reason: str, summary: str, now: float
) -> Transition:
    """A promotion is decided, but waits for an approval: weights hold, main is not touched."""
    gated = replace(
        state,
        phase=Phase.AWAITING_APPROVAL,
        gate=Gate(before=GateName.PROMOTION.value, opened_at=now, winner=winner, reason=reason),
        reason=f"{reason}; the promotion of {winner} waits for an approval (spec.approval)",
    )
    return Transition(gated, (), f"{summary}, {winner} awaits approval for promotion")


def outcome_of(state: ExperimentState) -> str:
    """``promoted`` when the recorded winner is a candidate or a passed Conformance run."""
    spec = state.spec
    if state.winner is None:
        return ROLLED_BACK
    if (
        state.winner == spec.baseline.name
        and spec.testing_pattern is not TestingPattern.CONFORMANCE
    ):
        return ROLLED_BACK
    return PROMOTED


def outcome_landed(
    state: ExperimentState,
    commit: str,
    now: float,
    *,
    await_sync: bool = False,
    confirmed: bool = False,
) -> Transition:
    """Record that the outcome commit is on main: the experiment is over.

    With ``await_sync`` (a GitOps operator is configured) the traffic stays as it is until
    the operator has applied the commit (``sync_settled``); otherwise it returns to the
    baseline now. Either way the baseline is, by then or soon, what the outcome made it.
    ``confirmed``: the cluster was seen carrying ``state.weights`` (or they were set
    without error) in this tick; a document is archived only once its final weights are.
    """
    phase = Phase.PROMOTED if state.phase is Phase.PROMOTING else Phase.ROLLED_BACK
    word = f"{state.winner} promoted" if phase is Phase.PROMOTED else "rolled back"
    summary = f"{short(state.spec)}: {word} in {commit[:12]}"
    landed = replace(state, phase=phase, outcome_commit=commit, updated_at=now)
    if holds_traffic(landed):
        # Blue/green: the winner serves until the baseline runs its version (sync_settled,
        # once the operator applied the outcome, or syncTimeout passed, and the readiness
        # objects are ready); its manifests go in a cleanup commit after that.
        cleanup = DUE if state.spec.blue_green_cleanup else None
        waiting = _confirm(
            replace(landed, sync="waiting", cleanup=cleanup), state, now, confirmed=confirmed
        )
        return Transition(waiting, (), f"{summary}, serving until the baseline runs it")
    if await_sync:
        waiting = _confirm(replace(landed, sync="waiting"), state, now, confirmed=confirmed)
        return Transition(waiting, (), f"{summary}, waiting for the GitOps operator")
    final = weights.baseline_only(state.spec) if shifts_traffic(state.spec) else ()
    actions: tuple[Action, ...] = (SetWeights(final),) if final != state.weights else ()
    new_state = _confirm_final(
        replace(state, phase=phase, outcome_commit=commit, updated_at=now, weights=final),
        state,
        now,
        confirmed=confirmed,
    )
    return Transition(new_state, actions, summary)


def sync_settled(
    state: ExperimentState, now: float, *, revision: str | None, confirmed: bool = False
) -> Transition:
    """The operator applied the outcome (``revision``), or did not in time (None).

    The traffic returns to the baseline either way: after a promotion the baseline runs the
    winner's version once synced; on timeout the outcome is on main regardless, and the
    operator will apply it. ``confirmed`` as for ``outcome_landed``.
    """
    final = weights.baseline_only(state.spec) if shifts_traffic(state.spec) else ()
    sync = "synced" if revision else "timeout"
    reason = f"synced at {revision}" if revision else "not synced in time by the GitOps operator"
    actions: tuple[Action, ...] = (SetWeights(final),) if final != state.weights else ()
    new_state = _confirm_final(
        replace(state, sync=sync, weights=final, updated_at=now, reason=reason),
        state,
        now,
        confirmed=confirmed,
    )
    return Transition(new_state, actions, f"{short(state.spec)}: {reason}")


def holds_traffic(state: ExperimentState) -> bool:
    """A blue/green winner whose promotion landed, still serving the traffic of its decision.

    The traffic returns to the baseline only once the baseline runs the winner's version:
    the outcome applied by the GitOps operator (or ``syncTimeout`` passed without one) and
    every readiness object ready (a Deployment rolled out).
    """
    spec = state.spec
    return (
        state.phase is Phase.PROMOTED
        and spec.deployment_pattern is DeploymentPattern.BLUE_GREEN
        and shifts_traffic(spec)
        and state.weights != weights.baseline_only(spec)
    )


def cleaned(state: ExperimentState, commit: str | None, now: float) -> Transition:
    """A blue/green promotion's cleanup commit is on main (None: nothing was left to remove).

    Called once the baseline's weights are confirmed on the cluster: the document is then
    archived.
    """
    done = commit or "done"
    what = f"in {commit[:12]}" if commit else "(already gone)"
    return Transition(
        replace(state, cleanup=done, applied=True, applied_at=now, updated_at=now),
        (),
        f"{short(state.spec)}: the candidate's manifests removed {what}",
    )


def traffic_settled(state: ExperimentState, now: float, *, why: str) -> Transition:
    """A finished experiment's final weights are set (or another run owns the target now).

    Until this transition its document stays live, so a process that stopped between
    recording the final weights and setting them sets them on restart; after it, the
    document is archived. ``why`` ends the summary.
    """
    return Transition(
        replace(state, applied=True, applied_at=now, updated_at=now),
        (),
        f"{short(state.spec)}: {why}",
    )


def not_ready(
    state: ExperimentState, now: float, why: str, *, confirmed: bool = False
) -> Transition:
    """The versions were not ready by the readiness deadline: no winner, fail safe."""
    base = replace(state, updated_at=now)
    summary = f"{short(state.spec)}: not ready after {state.spec.readiness.timeout_seconds} s"
    return decide(base, None, f"not ready: {why}", summary, confirmed=confirmed)


def preempt(state: ExperimentState, by: str, now: float) -> Transition:
    """A newer experiment for the same target takes over; this one is never promoted."""
    return _stop(state, Phase.PREEMPTED, f"preempted by {by}", now, preempted_by=by)


def withdraw(state: ExperimentState, now: float, *, confirmed: bool = False) -> Transition:
    """The experiment file left main: stop, traffic back to the baseline, never promote."""
    reason = "experiment file removed from main"
    return _stop(state, Phase.WITHDRAWN, reason, now, confirmed=confirmed)


def _stop(
    state: ExperimentState,
    phase: Phase,
    reason: str,
    now: float,
    preempted_by: str | None = None,
    *,
    confirmed: bool = False,
) -> Transition:
    final = weights.baseline_only(state.spec) if shifts_traffic(state.spec) else ()
    actions: tuple[Action, ...] = (SetWeights(final),) if final else ()
    new_state = _confirm_final(
        replace(
            state,
            phase=phase,
            weights=final,
            updated_at=now,
            reason=reason,
            preempted_by=preempted_by,
            held=None,
        ),
        state,
        now,
        confirmed=confirmed,
    )
    if preempted_by is not None:
        # A preempting run sets the target's weights itself, right after this one.
        new_state = replace(new_state, applied=True, applied_at=None)
    return Transition(new_state, actions, f"{short(state.spec)}: {reason}")


def would_hold(state: ExperimentState, *, counts: bool) -> bool:
    """Whether one more correction of someone else's weights holds the experiment."""
    return counts and state.corrections + 1 >= HOLD_AFTER


def drifted(
    state: ExperimentState, found: traffic.Assessment, now: float, *, counts: bool
) -> Transition:
    """The cluster did not carry the recorded weights (``found``); they are back now, or held.

    Recorded once the loop has set the recorded weights again: the iteration that was due
    is not judged (its traffic was not the recorded split), it waits a full interval from
    ``now``, and the document says which one and why. ``counts`` is False when it was not
    someone else's doing (our own write still due, an object that was only missing): it
    then does not count towards a hold. When it counts and ``would_hold``, the experiment
    is held instead (the loop did not set the weights): it neither iterates nor fights, and
    ``held`` says which field, who keeps writing it, and the fix.
    """
    spec = state.spec
    corrections = state.corrections + 1 if counts else state.corrections
    if would_hold(state, counts=counts):
        why = traffic.hold_reason(found, corrections)
        who = ", ".join(traffic.culprits(found)) or "an unknown writer"
        held = replace(
            state,
            corrections=corrections,
            held=why,
            reason=why,
            updated_at=now,
            applied=False,
            applied_at=None,
        )
        summary = f"{short(spec)}: held: {who} keeps setting other weights"
        return Transition(held, (), summary)
    waits = state.iteration + 1
    if found.status == traffic.MISSING:
        why = "the object that carries the weights did not exist (a rebuilt cluster?)"
        summary = (
            f"{short(spec)}: weights set on a re-created object, iteration {waits} waits a "
            "full interval"
        )
    elif counts:
        why = f"the cluster carried other weights: {traffic.describe(found)}"
        summary = (
            f"{short(spec)}: weights set again (the cluster carried "
            f"{_describe(spec, found.seen)}), iteration {waits} waits a full interval"
        )
    else:
        why = f"the recorded weights were not confirmed on the cluster: {traffic.describe(found)}"
        summary = (
            f"{short(spec)}: {_describe(spec, state.weights)} set late, iteration {waits} "
            "waits a full interval"
        )
    skip = SkipRecord(iteration=waits, time=now, seen=found.seen, reason=why)
    new_state = replace(
        state,
        corrections=corrections,
        last_iteration_at=now,
        updated_at=now,
        skipped=(*state.skipped, skip)[-SKIPPED_LIMIT:],
        reason=why,
        applied=True,
        applied_at=now,
    )
    return Transition(new_state, (), summary)


def resume(state: ExperimentState, now: float) -> Transition:
    """A held experiment's weights have stayed as recorded for a full interval: iterate again.

    The next iteration is judged a full interval from ``now``.
    """
    new_state = replace(
        state,
        held=None,
        corrections=0,
        last_iteration_at=now,
        updated_at=now,
        applied=True,
        applied_at=now,
        reason="the cluster has carried the recorded weights for a full interval",
    )
    return Transition(
        new_state, (), f"{short(state.spec)}: resumed, the cluster carries the recorded weights"
    )


def _confirm(
    new: ExperimentState, old: ExperimentState, now: float, *, confirmed: bool
) -> ExperimentState:
    """``new`` (a document that goes on) with what is confirmed of its weights.

    Changed weights are not confirmed until they are set; unchanged ones are confirmed at
    ``now`` when the cluster was just seen carrying them, else keep what ``old`` had.
    """
    if new.weights != old.weights:
        return replace(new, applied=False, applied_at=None)
    if confirmed:
        return replace(new, applied=True, applied_at=now)
    return replace(new, applied=old.applied, applied_at=old.applied_at)


def _confirm_final(
    new: ExperimentState, old: ExperimentState, now: float, *, confirmed: bool
) -> ExperimentState:
    """``new`` (a finished document) applied only if its weights were confirmed this tick.

    A finished document is archived once applied, and nothing converges an archived one,
    so an older confirmation does not do.
    """
    if new.weights == old.weights and (confirmed or not new.weights):
        return replace(new, applied=True, applied_at=now if new.weights else None)
    return replace(new, applied=False, applied_at=None)


def decide(
    state: ExperimentState,
    winner: str | None,
    reason: str,
    summary: str,
    *,
    confirmed: bool = True,
) -> Transition:
    """Record the outcome due: ``winner`` promoted (a candidate) or none (a rollback).

    The final weights are recorded now (write-ahead), the outcome commit is an action; a
    gate or a pause the run stood at is over. ``confirmed``: the cluster carries ``state``'s
    weights now.
    """
    spec = state.spec
    provisional = replace(state, winner=winner, gate=None, paused=None)
    outcome = outcome_of(provisional)
    phase = Phase.PROMOTING if outcome == PROMOTED else Phase.ROLLING_BACK
    if not shifts_traffic(spec):
        final: Pairs = ()
    elif (
        outcome == PROMOTED
        and winner is not None
        and spec.deployment_pattern is DeploymentPattern.BLUE_GREEN
    ):
        final = weights.all_on(spec, winner)
    else:
        final = weights.baseline_only(spec)
    new_state = _confirm(
        replace(provisional, phase=phase, weights=final, reason=reason),
        state,
        state.updated_at,
        confirmed=confirmed,
    )
    verb = f"promoting {winner}" if outcome == PROMOTED else "rolling back"
    if outcome == ROLLED_BACK and winner == spec.baseline.name:
        verb = f"keeping {winner}"
    actions: tuple[Action, ...] = (SetWeights(final),) if final else ()
    return Transition(new_state, (*actions, PushOutcome(outcome, winner)), f"{summary}, {verb}")


def initial_weights(spec: Experiment, current: Mapping[str, int] | None) -> Pairs:
    """The weights a run starts with (FixedSplit keeps ``current`` when it is a valid split)."""
    if not shifts_traffic(spec):
        return ()
    pattern = spec.deployment_pattern
    if pattern is DeploymentPattern.BLUE_GREEN:
        return weights.baseline_only(spec)
    if pattern is DeploymentPattern.FIXED_SPLIT:
        if current is not None and weights.is_valid(spec, current):
            return tuple((v.name, current[v.name]) for v in spec.versions)
        return weights.even(spec)
    step_weight = weights.first_step(spec)
    return weights.from_candidates(spec, {c.name: step_weight for c in spec.candidates})


def _judged_versions(spec: Experiment) -> tuple[Version, ...]:
    return spec.candidates or (spec.baseline,)


def _overall(spec: Experiment, judged: Mapping[str, Judgement]) -> str:
    """The iteration's verdict: pass if a judged version passed, fail if all failed."""
    verdicts = [judged[v.name].verdict for v in _judged_versions(spec)]
    if PASS in verdicts:
        return PASS
    if NO_DATA in verdicts:
        return NO_DATA
    return FAIL


def _next_weights(spec: Experiment, current: Pairs, leader: str | None, failing: set[str]) -> Pairs:
    """Failing candidates of an A/B/n lose their traffic; a progressive leader grows."""
    if not shifts_traffic(spec):
        return current
    pattern = spec.deployment_pattern
    if len(spec.candidates) > 1 and failing and pattern is not DeploymentPattern.BLUE_GREEN:
        kept = {name: weight for name, weight in current if name not in failing}
        current = weights.from_candidates(
            spec, {c.name: kept.get(c.name, 0) for c in spec.candidates}
        )
    if pattern is DeploymentPattern.PROGRESSIVE and leader is not None:
        return weights.grow(spec, current, leader)
    return current


def _reason(judged: Mapping[str, Judgement]) -> str:
    parts = [
        f"{name}: {j.verdict}" + (f" ({'; '.join(j.reasons)})" if j.reasons else "")
        for name, j in judged.items()
    ]
    return ", ".join(parts)


def _describe(spec: Experiment, split: Pairs) -> str:
    """``candidate at 30%``, or each candidate's share when there are several."""
    shares = dict(split)
    if len(spec.candidates) == 1:
        return f"candidate at {shares.get(spec.candidates[0].name, 0)}%"
    return ", ".join(f"{c.name} at {shares.get(c.name, 0)}%" for c in spec.candidates)


def short(spec: Experiment) -> str:
    """The target's name, which starts every commit subject."""
    return spec.target.rsplit("/", 1)[-1]
