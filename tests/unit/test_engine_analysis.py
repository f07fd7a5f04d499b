from dataclasses import replace
from importlib import resources

from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine import analysis, weights
from reconciler.ports import MetricValue
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Objective, Version

ERROR_RATE = Objective("istio/error-rate", upper_limit=0.01)
DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
SPEC = load_experiments("apps/bookinfo/experiment.yaml", DEMO.read_bytes()).experiments[0]


def judge(rate: float, n: int) -> str:
    return analysis.judge_objective(
        ERROR_RATE, MetricValue(rate, n), method="wilson", confidence=0.95
    )


def test_a_handful_of_clean_requests_is_not_enough_to_pass_an_error_rate() -> None:
    assert judge(0.0, 10) == "no-data"
    assert judge(0.0, 400) == "pass"
    assert judge(0.05, 400) == "fail"
    assert (
        analysis.judge_objective(ERROR_RATE, MetricValue(0.0, 10), method="point", confidence=0.95)
        == "pass"
    )


@given(st.floats(0, 1), st.integers(1, 10**6), st.floats(0.5, 0.999))
def test_wilson_bounds_contain_the_estimate(p: float, n: int, confidence: float) -> None:
    low, high = analysis.wilson_bounds(p * n, n, confidence)
    assert 0.0 <= low <= p + 1e-9
    assert p - 1e-9 <= high <= 1.0


@given(st.floats(0, 0.05), st.integers(1, 10**5))
def test_more_data_never_turns_a_pass_into_no_data(rate: float, n: int) -> None:
    if judge(rate, n) == "pass":
        assert judge(rate, n * 4) == "pass"


@given(st.sampled_from(["no-data", "unavailable"]))
def test_missing_or_unavailable_data_is_never_a_pass(status: str) -> None:
    value = MetricValue(None, None, status)
    assert analysis.judge_objective(ERROR_RATE, value, method="point", confidence=0.95) == "no-data"
    assert (
        analysis.judge_version(
            (ERROR_RATE,),
            {"istio/error-rate": value},
            request_count=None,
            method="point",
            confidence=0.95,
        ).verdict
        == "no-data"
    )


def test_probability_that_a_candidate_beats_the_baseline() -> None:
    base = MetricValue(0.10, 5000)
    assert (
        analysis.probability_better(MetricValue(0.14, 5000), base, higher_is_better=True) or 0
    ) > 0.99
    even = analysis.probability_better(MetricValue(0.10, 5000), base, higher_is_better=True)
    assert even is not None
    assert 0.4 < even < 0.6
    assert (
        analysis.probability_better(MetricValue(0.14, 5000), base, higher_is_better=False) or 1
    ) < 0.01
    assert analysis.probability_better(None, base, higher_is_better=True) is None


@given(
    st.integers(1, 6),
    st.lists(st.integers(0, 100), min_size=6, max_size=6),
    st.integers(0, 5),
    st.integers(1, 100),
    st.integers(0, 100),
)
def test_growing_the_leader_keeps_a_valid_split_and_nobody_else_gains(
    n: int, raw: list[int], leader_index: int, step: int, cap: int
) -> None:
    spec = replace(
        SPEC,
        candidates=tuple(Version(f"c{i}") for i in range(n)),
        weights=replace(
            SPEC.weights, max_candidate_weight_increment=step, max_candidate_weight=cap
        ),
    )
    current = weights.from_candidates(spec, {f"c{i}": raw[i] for i in range(n)})
    leader = f"c{leader_index % n}"
    grown = weights.grow(spec, current, leader)
    assert weights.is_valid(spec, dict(grown))
    before, after = dict(current), dict(grown)
    for name, weight in after.items():
        if name not in {leader, spec.baseline.name}:
            assert weight <= before[name]
    assert after[leader] - before[leader] <= step
