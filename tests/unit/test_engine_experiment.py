import json
from dataclasses import replace
from importlib import resources

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import experiment as engine
from reconciler.engine import state as engine_state
from reconciler.engine import verdicts
from reconciler.engine.state import ExperimentState, Phase, from_json, to_json
from reconciler.ports import MetricValue
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Experiment

DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
DEMO_SPEC: Experiment = load_experiments(
    "apps/bookinfo/experiment.yaml", DEMO.read_bytes()
).experiments[0]
# Plain thresholds here, so a test can say which samples pass; the statistics have their own.
SPEC = replace(DEMO_SPEC, criteria=replace(DEMO_SPEC.criteria, method="point"))
BLOB = "0123456789abcdef0123456789abcdef01234567"

Sample = tuple[str, float, float, int]  # kind, error rate, latency, requests


def observations(sample: Sample) -> dict[str, dict[str, MetricValue]]:
    kind, error_rate, latency, requests = sample
    if kind == "missing":
        values: dict[str, MetricValue] = {}
    elif kind == "unavailable":
        values = {
            "istio/error-rate": MetricValue(None, None, "unavailable"),
            "istio/mean-latency": MetricValue(None, None, "unavailable"),
            "istio/request-count": MetricValue(None, None, "unavailable"),
        }
    else:
        values = {
            "istio/error-rate": MetricValue(error_rate, requests),
            "istio/mean-latency": MetricValue(latency, requests),
            "istio/request-count": MetricValue(float(requests), requests),
        }
    return {"productpage-stable": values, "productpage-candidate": values}


samples = st.tuples(
    st.sampled_from(["ok", "ok", "ok", "missing", "unavailable"]),
    st.floats(0, 0.05),
    st.floats(0, 600),
    st.integers(0, 500),
)


def run(spec: Experiment, seq: list[Sample]) -> tuple[list[engine.Transition], ExperimentState]:
    now = 1_000.0
    transitions = [engine.start(spec, spec_blob=BLOB, source_commit="c" * 40, now=now)]
    state = transitions[0].state
    for sample in seq:
        if state.phase is not Phase.PROGRESSING:
            break
        now += spec.duration.interval_seconds
        step = engine.step(state, observations(sample), now)
        assert step is not None
        transitions.append(step)
        state = step.state
    return transitions, state


def passes(sample: Sample) -> bool:
    kind, error_rate, latency, requests = sample
    return (
        kind == "ok"
        and requests >= verdicts.min_requests(SPEC)
        and error_rate <= 0.01
        and latency <= 300
    )


@settings(max_examples=300)
@given(st.lists(samples, min_size=0, max_size=12))
def test_weights_are_integers_summing_to_100_within_the_bounds(seq: list[Sample]) -> None:
    transitions, _ = run(SPEC, seq)
    previous = 0
    for t in transitions:
        weights = dict(t.state.weights)
        assert sum(weights.values()) == 100
        assert all(isinstance(w, int) and 0 <= w <= 100 for w in weights.values())
        candidate = weights["productpage-candidate"]
        if t.state.phase is Phase.PROGRESSING:
            assert candidate <= SPEC.weights.max_candidate_weight
            assert candidate - previous <= SPEC.weights.max_candidate_weight_increment
            previous = candidate


@settings(max_examples=300)
@given(st.lists(samples, min_size=0, max_size=12))
def test_a_candidate_that_fails_or_is_not_measured_never_gains_weight(seq: list[Sample]) -> None:
    transitions, _ = run(SPEC, seq)
    for before, after, sample in zip(transitions, transitions[1:], seq, strict=False):
        if not passes(sample) and not on_track(sample):
            assert after.state.weight_of("productpage-candidate") <= before.state.weight_of(
                "productpage-candidate"
            )


def on_track(sample: Sample) -> bool:
    """Measured and within every limit, only short of ``minRequestCount``."""
    kind, error_rate, latency, requests = sample
    return kind == "ok" and requests > 0 and error_rate <= 0.01 and latency <= 300


def test_a_candidate_on_track_but_short_of_evidence_grows_and_does_not_run_into_no_data() -> None:
    short = ("ok", 0.001, 10.0, verdicts.min_requests(SPEC) - 1)
    spec = replace(SPEC, duration=replace(SPEC.duration, iterations_per_loop=20))
    transitions, state = run(spec, [short] * 8)
    grown = [t.state.weight_of("productpage-candidate") for t in transitions]
    assert grown == sorted(grown)
    assert grown[-1] > grown[0]
    assert state.phase is Phase.PROGRESSING
    assert state.no_data == 0
    assert state.evidence is not None
    (candidate,) = [v for v in state.evidence.versions if v.version == "productpage-candidate"]
    assert candidate.on_track
    assert candidate.needs == 1
    assert "needs ~1 more requests" in state.reason


@settings(max_examples=300)
@given(st.lists(samples, min_size=6, max_size=6))
def test_the_winner_passed_the_last_iteration_and_failures_roll_back(seq: list[Sample]) -> None:
    _, state = run(SPEC, seq)
    assert state.phase in {Phase.PROMOTING, Phase.ROLLING_BACK}
    if state.phase is Phase.PROMOTING:
        assert state.winner == "productpage-candidate"
        assert passes(seq[state.iteration - 1])
    else:
        assert state.winner is None
    # both outcomes first return all traffic to the baseline
    assert dict(state.weights) == {"productpage-stable": 100, "productpage-candidate": 0}


@given(st.lists(samples, min_size=6, max_size=6))
def test_a_candidate_that_never_met_its_objectives_is_never_the_winner(seq: list[Sample]) -> None:
    failing = [(kind, 0.5, latency, n) for kind, _, latency, n in seq]
    _, state = run(SPEC, failing)
    assert state.winner is None
    assert state.phase is Phase.ROLLING_BACK


@given(st.lists(samples, max_size=8))
def test_the_engine_is_deterministic(seq: list[Sample]) -> None:
    first, _ = run(SPEC, seq)
    second, _ = run(SPEC, seq)
    assert first == second


@given(st.lists(samples, max_size=8))
def test_state_documents_round_trip_through_json(seq: list[Sample]) -> None:
    transitions, _ = run(SPEC, seq)
    for t in transitions:
        document = to_json(t.state)
        assert from_json(document) == t.state
        # the bytes are json.dumps(indent=2, sort_keys=True)'s, whatever renders them
        canonical = json.dumps(json.loads(document), indent=2, sort_keys=True) + "\n"
        assert document.decode() == canonical
        assert to_json(from_json(document)) == document  # a reloaded state renders alike


@given(
    st.lists(samples, min_size=1, max_size=6),
    st.floats(min_value=1e9, max_value=4e9),
    st.floats(min_value=0, max_value=1),
)
def test_as_recorded_is_what_the_document_reads_back_as(
    seq: list[Sample], base: float, fraction: float
) -> None:
    # Real clocks give sub-millisecond times, which documents do not keep: the loop keeps
    # what it recorded in this form, so it decides as a restarted process would.
    transitions, _ = run(SPEC, seq)
    for t in transitions:
        state = replace(
            t.state,
            started_at=base + fraction,
            updated_at=base + 2 * fraction + 0.0004,
            last_iteration_at=base + fraction / 3,
            history=tuple(
                replace(r, time=base + r.iteration + fraction / 7) for r in t.state.history
            ),
        )
        assert engine_state.as_recorded(state) == from_json(to_json(state))


def test_failure_limit_consecutive_fails_roll_back_early() -> None:
    bad = ("ok", 0.2, 10.0, 100)
    transitions, state = run(SPEC, [bad, bad, bad, bad])
    assert state.phase is Phase.ROLLING_BACK
    assert state.iteration == SPEC.criteria.failure_limit == 3
    assert isinstance(transitions[-1].actions[-1], engine.PushOutcome)


def test_a_pass_resets_the_failure_count() -> None:
    bad, good = ("ok", 0.2, 10.0, 100), ("ok", 0.001, 10.0, 100)
    _, state = run(SPEC, [bad, bad, good, bad, bad, good])
    assert state.phase is Phase.PROMOTING


def test_missing_data_for_longer_than_the_limit_fails_safe() -> None:
    gone = ("missing", 0.0, 0.0, 0)
    good = ("ok", 0.001, 10.0, 100)
    spec = replace(SPEC, duration=replace(SPEC.duration, iterations_per_loop=20))
    _, state = run(spec, [good, gone, gone, gone, gone, gone, good])
    assert state.phase is Phase.ROLLING_BACK
    assert state.iteration == 6
    assert state.winner is None
    assert "without enough data" in state.reason


def test_not_due_before_the_interval() -> None:
    start = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=0.0)
    assert engine.step(start.state, observations(("ok", 0, 0, 1)), 0.5) is None


def test_preempt_and_withdraw_return_traffic_to_the_baseline_and_never_promote() -> None:
    start = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=0.0).state
    for t in (engine.preempt(start, "ns/other@abc", 5.0), engine.withdraw(start, 5.0)):
        assert t.state.phase.final
        assert t.state.winner is None
        assert t.actions == (
            engine.SetWeights((("productpage-stable", 100), ("productpage-candidate", 0))),
        )


def test_outcome_landed_records_the_commit() -> None:
    _, state = run(SPEC, [("ok", 0.001, 10.0, 100)] * 6)
    landed = engine.outcome_landed(replace(state), "d" * 40, 99.0)
    assert landed.state.phase is Phase.PROMOTED
    assert landed.state.outcome_commit == "d" * 40
    assert landed.actions == ()
