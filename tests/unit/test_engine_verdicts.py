"""Who wins and who gains traffic, on the cases the statistics audit (issue 17) found."""

from dataclasses import replace
from importlib import resources

from reconciler.engine import experiment as engine
from reconciler.engine import verdicts
from reconciler.engine.state import ExperimentState, Phase
from reconciler.ports import MetricValue
from reconciler.spec import model
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import (
    DeploymentPattern,
    Experiment,
    Objective,
    Reward,
    Version,
)

DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
CANARY: Experiment = load_experiments(
    "apps/bookinfo/experiment.yaml", DEMO.read_bytes()
).experiments[0]
ERRORS, CONVERSION, LATENCY = "istio/error-rate", "conversion", "istio/mean-latency"


def ab(candidates: int, *, confidence: float = 0.95, reward: str = CONVERSION) -> Experiment:
    base = CANARY.baseline
    return replace(
        CANARY,
        testing_pattern=model.TestingPattern.AB if candidates == 1 else model.TestingPattern.ABN,
        deployment_pattern=DeploymentPattern.PROGRESSIVE,
        candidates=tuple(
            Version(f"c{i + 1}", weight_obj_ref=base.weight_obj_ref) for i in range(candidates)
        ),
        criteria=replace(
            CANARY.criteria,
            request_count=None,
            objectives=(Objective(ERRORS, upper_limit=0.01),),
            rewards=(Reward(reward, "High" if reward == CONVERSION else "Low"),),
            confidence=confidence,
        ),
    )


def version(reward: float, n: int | None, errors: float = 0.0) -> dict[str, MetricValue]:
    metric = LATENCY if reward > 1 else CONVERSION
    return {ERRORS: MetricValue(errors, 10_000), metric: MetricValue(reward, n)}


def decide(spec: Experiment, observations: dict[str, dict[str, MetricValue]]) -> str | None:
    judged = {v.name: verdicts.judge(spec, observations[v.name]) for v in spec.versions}
    comparison = verdicts.compare(spec, observations, judged, final=True)
    winner, _ = verdicts.choose_winner(spec, judged, comparison)
    return winner


def test_a_tie_keeps_the_baseline_even_at_confidence_one_half() -> None:
    spec = ab(1, confidence=0.5)
    assert decide(spec, {"productpage-stable": version(0.1, 5000), "c1": version(0.1, 5000)}) == (
        "productpage-stable"
    )


def test_a_candidate_without_a_sample_never_wins_against_a_measured_baseline() -> None:
    spec = ab(1)
    for n in (None, 0, -5):
        observed = {"productpage-stable": version(0.05, 100_000), "c1": version(0.06, n)}
        assert decide(spec, observed) == "productpage-stable"


def test_a_better_latency_is_a_labelled_point_comparison_never_a_probability() -> None:
    spec = ab(1, reward=LATENCY)
    observed = {"productpage-stable": version(120.0, 5000), "c1": version(119.9, 5000)}
    judged = {v.name: verdicts.judge(spec, observed[v.name]) for v in spec.versions}
    comparison = verdicts.compare(spec, observed, judged, final=True)
    winner, reason = verdicts.choose_winner(spec, judged, comparison)
    assert winner == "c1"
    assert "point comparison only" in reason
    assert "probability" in reason  # "... no probability is known"
    assert comparison is not None
    assert comparison.beats == {}


def test_a_canary_with_a_latency_objective_and_one_request_is_not_promoted() -> None:
    spec = replace(
        CANARY,
        criteria=replace(CANARY.criteria, objectives=(Objective(LATENCY, upper_limit=300),)),
    )
    one = {LATENCY: MetricValue(10.0, 1), "istio/request-count": MetricValue(1.0, 1)}
    judged = {v.name: verdicts.judge(spec, one) for v in spec.versions}
    assert verdicts.choose_winner(spec, judged, None)[0] is None
    without_count = replace(spec, criteria=replace(spec.criteria, request_count=None))
    unsized = {LATENCY: MetricValue(10.0, None)}
    judged = {v.name: verdicts.judge(without_count, unsized) for v in spec.versions}
    assert verdicts.choose_winner(without_count, judged, None)[0] is None


def test_the_bar_is_shared_among_the_candidates() -> None:
    assert verdicts.threshold(ab(1)) == 0.95
    assert abs(verdicts.threshold(ab(5)) - 0.99) < 1e-12


def run(
    spec: Experiment, observed: dict[str, dict[str, MetricValue]], steps: int
) -> ExperimentState:
    now = 0.0
    state = engine.start(spec, spec_blob="b" * 40, source_commit="c" * 40, now=now).state
    for _ in range(steps):
        now += spec.duration.interval_seconds
        moved = engine.step(state, observed, now)
        assert moved is not None
        state = moved.state
    return state


def test_a_failing_a_b_n_candidate_loses_its_traffic_at_once() -> None:
    spec = replace(ab(3), duration=replace(CANARY.duration, iterations_per_loop=10))
    observed = {
        "productpage-stable": version(0.10, 5000),
        "c1": version(0.10, 5000, errors=0.5),
        "c2": version(0.12, 5000),
        "c3": version(0.10, 5000),
    }
    first = engine.start(spec, spec_blob="b" * 40, source_commit="c" * 40, now=0.0).state
    assert first.weight_of("c1") > 0
    state = run(spec, observed, 1)
    assert state.weight_of("c1") == 0
    assert state.weight_of("c2") > first.weight_of("c2")
    assert state.evidence is not None
    assert state.evidence.reward is not None
    assert "c1" not in dict(state.evidence.reward.best)


def test_the_evidence_of_the_deciding_iteration_is_recorded() -> None:
    spec = ab(3)
    observed = {
        "productpage-stable": version(0.10, 5000),
        "c1": version(0.10, 5000),
        "c2": version(0.13, 5000),
        "c3": version(0.11, 5000),
    }
    state = run(spec, observed, spec.duration.iterations)
    assert state.phase is Phase.PROMOTING
    assert state.winner == "c2"
    evidence = state.evidence
    assert evidence is not None
    assert evidence.iteration == spec.duration.iterations
    assert evidence.reward is not None
    assert evidence.reward.threshold == verdicts.threshold(spec)
    assert dict(evidence.reward.beats)["c2"] > evidence.reward.threshold
    assert max(dict(evidence.reward.best), key=dict(evidence.reward.best).__getitem__) == "c2"
    (c2,) = [v for v in evidence.versions if v.version == "c2"]
    assert c2.verdict == "pass"
    (errors,) = c2.metrics
    assert errors.method == "clopper-pearson"
    assert errors.n == 10_000
    assert errors.high is not None
    assert errors.high <= 0.01
    assert "with probability 0.999999 (needed above 0.9833)" in state.reason
