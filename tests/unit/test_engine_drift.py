"""Drift, holds and what a document says was applied: the engine's side of invariant 8."""

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import experiment as engine
from reconciler.engine import state as engine_state
from reconciler.engine import traffic
from reconciler.engine.state import ExperimentState, Phase, from_json, to_json
from reconciler.ports import WeightReading
from tests.unit.test_engine_experiment import BLOB, SPEC, Sample, observations, samples

INTERVAL = SPEC.duration.interval_seconds
FLUX = "kustomize-controller (Apply, 2026-12-04T16:00:00Z)"


def drift(state: ExperimentState, canary_seen: int) -> traffic.Assessment:
    """What the loop finds when someone set the candidate's weight to ``canary_seen``."""
    stable, canary = traffic.weight_pairs(state)
    return traffic.assess(
        state,
        {
            stable[0]: WeightReading(100 - canary_seen, writers=(FLUX,)),
            canary[0]: WeightReading(canary_seen, writers=(FLUX,)),
        },
        {},
    )


Event = tuple[str, Sample]
events = st.tuples(st.sampled_from(["iterate", "iterate", "drift", "pending", "resume"]), samples)


def live(seq: list[Event]) -> list[tuple[str, engine.Transition, float]]:
    """Run a sequence of iterations, drifts (someone's, or our own write still due) and resumes."""
    now = 1_000.0
    start = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=now)
    out = [("start", start, now)]
    state = start.state
    for kind, sample in seq:
        if state.phase is not Phase.PROGRESSING:
            break
        now += INTERVAL
        transition: engine.Transition | None
        if kind == "iterate":
            transition = engine.step(state, observations(sample), now)
        elif kind == "resume":
            transition = engine.resume(state, now) if state.held else None
        elif state.held is None:
            found = drift(state, (state.weight_of("productpage-candidate") + 10) % 100)
            transition = engine.drifted(state, found, now, counts=kind == "drift")
        else:
            transition = None
        if transition is not None:
            out.append((kind, transition, now))
            state = transition.state
    return out


@settings(max_examples=300)
@given(st.lists(events, max_size=14))
def test_a_drift_never_judges_never_moves_the_weights_and_restarts_the_interval(
    seq: list[Event],
) -> None:
    run = live(seq)
    for (_, before, _), (kind, after, now) in itertools.pairwise(run):
        if kind not in {"drift", "pending"}:
            continue
        assert after.state.iteration == before.state.iteration
        assert after.state.history == before.state.history
        assert after.state.weights == before.state.weights
        assert after.actions == ()  # the loop set the weights before it recorded this
        if after.state.held is None:
            # recorded once the weights are back: the iteration due waits a full interval
            assert (after.state.applied, after.state.applied_at) == (True, now)
            assert after.state.last_iteration_at == now
            skip = after.state.skipped[-1]
            assert (skip.iteration, skip.time) == (before.state.iteration + 1, now)
            assert not engine.is_due(after.state, now + INTERVAL - 0.001)
        else:
            assert not after.state.applied  # held: someone else's weights stay


@settings(max_examples=300)
@given(st.lists(events, max_size=14))
def test_an_experiment_is_held_after_three_corrections_in_a_row_and_only_then(
    seq: list[Event],
) -> None:
    in_a_row = 0
    for kind, transition, now in live(seq):
        if kind == "drift":
            in_a_row += 1
        elif kind in {"iterate", "resume"}:
            in_a_row = 0
        state = transition.state
        if state.phase is not Phase.PROGRESSING:
            continue
        assert (state.held is not None) == (in_a_row >= engine.HOLD_AFTER)
        assert state.corrections == min(in_a_row, engine.HOLD_AFTER)
        if state.held is not None:
            # held: never due, so never judged, until it resumes
            assert not engine.is_due(state, now + 100 * INTERVAL)
            assert engine.step(state, observations(("ok", 0.0, 1.0, 100)), now + 100) is None


@settings(max_examples=200)
@given(st.lists(events, max_size=14))
def test_applied_is_written_only_for_weights_the_cluster_was_seen_carrying(
    seq: list[Event],
) -> None:
    for kind, transition, now in live(seq):
        state = transition.state
        if kind == "start":
            assert (state.applied, state.applied_at) == (False, None)  # nothing set yet
        changes = any(isinstance(a, engine.SetWeights) for a in transition.actions)
        if changes or state.held is not None:
            assert (state.applied, state.applied_at) == (False, None)
        elif kind in {"iterate", "resume", "drift", "pending"}:
            assert (state.applied, state.applied_at) == (True, now)


@given(st.lists(events, max_size=14))
def test_documents_with_skips_and_holds_round_trip_through_json(seq: list[Event]) -> None:
    for _, transition, _ in live(seq):
        document = to_json(transition.state)
        assert from_json(document) == transition.state
        assert engine_state.as_recorded(transition.state) == from_json(document)


def test_the_hold_says_which_field_who_writes_it_and_the_fix() -> None:
    state = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=0.0).state
    for n in range(engine.HOLD_AFTER):
        transition = engine.drifted(state, drift(state, 0), float(n + 1), counts=True)
        state = transition.state
    assert state.held is not None
    assert (
        transition.summary == "productpage: held: kustomize-controller keeps setting other weights"
    )
    assert ".spec.http[0].route[1].weight is 0, recorded 20" in state.held
    assert "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent" in state.held
    resumed = engine.resume(state, 10.0).state
    assert (resumed.held, resumed.corrections, resumed.last_iteration_at) == (None, 0, 10.0)


def test_our_own_write_still_due_does_not_count_towards_a_hold() -> None:
    state = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=0.0).state
    for n in range(2 * engine.HOLD_AFTER):
        state = engine.drifted(state, drift(state, 0), float(n + 1), counts=False).state
    assert (state.held, state.corrections) == (None, 0)
    assert len(state.skipped) == 2 * engine.HOLD_AFTER


def test_a_finished_document_is_applied_only_once_its_final_weights_are_confirmed() -> None:
    state = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=0.0).state
    deciding = replace(
        state,
        phase=Phase.PROMOTING,
        winner="productpage-candidate",
        weights=(
            ("productpage-stable", 100),
            ("productpage-candidate", 0),
        ),
    )
    unconfirmed = engine.outcome_landed(deciding, "d" * 40, 5.0, confirmed=False).state
    assert (unconfirmed.settling, unconfirmed.archived) == (True, False)
    confirmed = engine.outcome_landed(deciding, "d" * 40, 5.0, confirmed=True).state
    assert (confirmed.archived, confirmed.applied_at) == (True, 5.0)
    settled = engine.traffic_settled(unconfirmed, 6.0, why="traffic on the baseline").state
    assert (settled.archived, settled.applied_at) == (True, 6.0)
