"""The pure decision engine for a progressive canary.

``start``, ``step``, ``decide_outcome_landed``, ``preempt`` and ``withdraw`` take values
(spec, state, observations, the time) and return a ``Transition``: the new state, the
actions to take after it is recorded, and a one-line summary for the commit. No clock, no
I/O, no logging: the same inputs always give the same transition.

Rules: the candidate's weight grows by at most ``maxCandidateWeightIncrement`` up to
``maxCandidateWeight`` after each iteration whose verdict is a pass; a fail or missing data
never grows it; ``failureLimit`` consecutive non-passes roll back; after the last iteration
the candidate wins only if that iteration passed. Both outcomes first return all traffic to
the baseline, then change main.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.engine.state import HISTORY_LIMIT, ExperimentState, IterationRecord, Pairs, Phase
from reconciler.ports import MetricValue
from reconciler.spec.model import Experiment

Observations = Mapping[str, Mapping[str, MetricValue]]
"""Version name to metric name to value."""

PASS, FAIL, NO_DATA = "pass", "fail", "no-data"
PROMOTED, ROLLED_BACK = "promoted", "rolled-back"
_WORDS = {PASS: "objectives met", FAIL: "objectives failed", NO_DATA: "not enough data"}


@dataclass(frozen=True)
class SetWeights:
    """Set these weights on the cluster (after the state that names them is pushed)."""

    weights: Pairs


@dataclass(frozen=True)
class PushOutcome:
    """Build and push the promotion or rollback commit on main."""

    outcome: str
    """``promoted`` or ``rolled-back``."""
    winner: str | None


Action = SetWeights | PushOutcome


@dataclass(frozen=True)
class Transition:
    """A new state, what to do once it is recorded, and the commit's subject line."""

    state: ExperimentState
    actions: tuple[Action, ...]
    summary: str


def start(spec: Experiment, *, spec_blob: str, source_commit: str, now: float) -> Transition:
    """Begin an experiment at iteration 0 with the candidate at its first step.

    Like Flagger's first ``stepWeight``: an iteration needs traffic on the candidate to
    observe it, so the first step is taken at the start.
    """
    weights = split(spec, first_step(spec))
    state = ExperimentState(
        spec=spec,
        spec_blob=spec_blob,
        source_commit=source_commit,
        phase=Phase.PROGRESSING,
        iteration=0,
        weights=weights,
        started_at=now,
        updated_at=now,
        last_iteration_at=now,
        reason="experiment found on main",
    )
    summary = (
        f"{_short(spec)}: started, {spec.duration.iterations} iterations, "
        f"candidate at {first_step(spec)}%"
    )
    return Transition(state, (SetWeights(weights),), summary)


def is_due(state: ExperimentState, now: float) -> bool:
    """Whether the next iteration's interval has passed."""
    interval = state.spec.duration.interval_seconds
    return state.phase is Phase.PROGRESSING and now >= state.last_iteration_at + interval


def step(state: ExperimentState, observations: Observations, now: float) -> Transition | None:
    """Run one iteration if it is due; None when there is nothing to do yet."""
    if not is_due(state, now):
        return None
    spec = state.spec
    candidate = spec.candidates[0]
    verdicts = {v.name: verdict(spec, observations.get(v.name, {})) for v in spec.versions}
    record = IterationRecord(
        iteration=state.iteration + 1,
        time=now,
        weights=tuple(sorted(state.weights)),
        verdicts=tuple(sorted(verdicts.items())),
        metrics=tuple(
            sorted(
                (version, metric, value.value if value.status == "ok" else None)
                for version, values in observations.items()
                for metric, value in values.items()
            )
        ),
    )
    result = verdicts[candidate.name]
    failures = 0 if result == PASS else state.failures + 1
    iteration = state.iteration + 1
    history = (*state.history, record)[-HISTORY_LIMIT:]
    base = replace(
        state,
        iteration=iteration,
        failures=failures,
        history=history,
        updated_at=now,
        last_iteration_at=now,
    )
    of_total = f"iteration {iteration}/{spec.duration.iterations}"
    if failures >= spec.criteria.failure_limit:
        limit = spec.criteria.failure_limit
        reason = f"{failures} consecutive iterations without a pass (limit {limit})"
        summary = f"{_short(spec)}: {of_total}, {_WORDS[result]}, rolling back"
        return _decide(base, None, reason, summary)
    if iteration >= spec.duration.iterations:
        if result == PASS:
            return _decide(
                base,
                candidate.name,
                "candidate met every objective in the last iteration",
                f"{_short(spec)}: {of_total}, objectives met, promoting {candidate.name}",
            )
        return _decide(
            base,
            None,
            f"last iteration's verdict was {result}",
            f"{_short(spec)}: {of_total}, {_WORDS[result]}, rolling back",
        )
    weights = state.weights
    if result == PASS:
        current = state.weight_of(candidate.name)
        grown = min(
            current + spec.weights.max_candidate_weight_increment,
            spec.weights.max_candidate_weight,
        )
        weights = split(spec, max(grown, current))
    new_state = replace(base, weights=weights, reason=f"candidate verdict {result}")
    actions: tuple[Action, ...] = (SetWeights(weights),) if weights != state.weights else ()
    candidate_weight = new_state.weight_of(candidate.name)
    summary = f"{_short(spec)}: {of_total}, candidate at {candidate_weight}%, {_WORDS[result]}"
    return Transition(new_state, actions, summary)


def outcome_landed(state: ExperimentState, commit: str, now: float) -> Transition:
    """Record that the outcome commit is on main: the experiment is over."""
    phase = Phase.PROMOTED if state.phase is Phase.PROMOTING else Phase.ROLLED_BACK
    new_state = replace(state, phase=phase, outcome_commit=commit, updated_at=now)
    word = f"{state.winner} promoted" if phase is Phase.PROMOTED else "rolled back"
    return Transition(new_state, (), f"{_short(state.spec)}: {word} in {commit[:12]}")


def preempt(state: ExperimentState, by: str, now: float) -> Transition:
    """A newer experiment for the same target takes over; this one is never promoted."""
    weights = baseline_weights(state.spec)
    new_state = replace(
        state,
        phase=Phase.PREEMPTED,
        weights=weights,
        preempted_by=by,
        updated_at=now,
        reason=f"preempted by {by}",
    )
    return Transition(new_state, (SetWeights(weights),), f"{_short(state.spec)}: preempted by {by}")


def withdraw(state: ExperimentState, now: float) -> Transition:
    """The experiment file left main: stop, traffic back to the baseline, never promote."""
    weights = baseline_weights(state.spec)
    new_state = replace(
        state,
        phase=Phase.WITHDRAWN,
        weights=weights,
        updated_at=now,
        reason="experiment file removed from main",
    )
    summary = f"{_short(state.spec)}: withdrawn, experiment file removed from main"
    return Transition(new_state, (SetWeights(weights),), summary)


def verdict(spec: Experiment, values: Mapping[str, MetricValue]) -> str:
    """``pass`` when every objective holds on enough data, ``fail`` when one does not.

    Missing or unavailable data is ``no-data``, never a pass; a failed objective wins
    over missing data.
    """
    missing = False
    if spec.criteria.request_count is not None:
        count = values.get(spec.criteria.request_count)
        if count is None or count.status != "ok" or not count.value:
            missing = True
    for objective in spec.criteria.objectives:
        value = values.get(objective.metric)
        if value is None or value.status != "ok" or value.value is None:
            missing = True
        elif not objective.holds(value.value):
            return FAIL
    return NO_DATA if missing else PASS


def first_step(spec: Experiment) -> int:
    """The candidate's weight when the experiment starts."""
    return min(spec.weights.max_candidate_weight_increment, spec.weights.max_candidate_weight)


def baseline_weights(spec: Experiment) -> Pairs:
    """All traffic on the baseline."""
    return split(spec, 0)


def split(spec: Experiment, candidate_weight: int) -> Pairs:
    """Baseline and candidate weights that sum to 100, in version order."""
    candidate_weight = max(0, min(100, candidate_weight))
    return (
        (spec.baseline.name, 100 - candidate_weight),
        *((c.name, candidate_weight) for c in spec.candidates),
    )


def _decide(state: ExperimentState, winner: str | None, reason: str, summary: str) -> Transition:
    phase = Phase.PROMOTING if winner else Phase.ROLLING_BACK
    weights = baseline_weights(state.spec)
    new_state = replace(state, phase=phase, winner=winner, weights=weights, reason=reason)
    outcome = PROMOTED if winner else ROLLED_BACK
    return Transition(new_state, (SetWeights(weights), PushOutcome(outcome, winner)), summary)


def _short(spec: Experiment) -> str:
    return spec.target.rsplit("/", 1)[-1]
