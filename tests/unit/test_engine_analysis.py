from dataclasses import replace
from importlib import resources

from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine import analysis, weights
from reconciler.ports import MetricValue
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Objective, Version

ERROR_RATE = Objective("istio/error-rate", upper_limit=0.01)
LATENCY = Objective("istio/mean-latency", upper_limit=300)
SUCCESS = Objective("istio/success-rate", lower_limit=0.99)
DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
SPEC = load_experiments("apps/bookinfo/experiment.yaml", DEMO.read_bytes()).experiments[0]
MIN = analysis.default_min_requests((ERROR_RATE,), 0.95)


def judge(rate: float, n: int | None, objective: Objective = ERROR_RATE) -> str:
    return analysis.judge_objective(
        objective, MetricValue(rate, n), method="exact", confidence=0.95, min_requests=MIN
    ).verdict


def test_the_default_minimum_is_where_a_clean_record_first_passes_the_tightest_limit() -> None:
    # (1 - 0.01)^n <= 0.05 first at n = 299: the exact bound cannot pass before
    assert MIN == 299
    assert judge(0.0, 298) == "no-data"
    assert judge(0.0, 299) == "pass"
    assert analysis.default_min_requests((LATENCY,), 0.95) == analysis.MIN_REQUESTS_FLOOR
    assert analysis.default_min_requests((ERROR_RATE,), 0.95, "point") == 30


def test_a_handful_of_clean_requests_is_not_enough_to_pass_an_error_rate() -> None:
    assert judge(0.0, 10) == "no-data"
    assert judge(0.05, 400) == "fail"
    point = analysis.judge_objective(
        ERROR_RATE, MetricValue(0.0, 10), method="point", confidence=0.95, min_requests=30
    )
    assert point.verdict == "no-data"
    assert point.evidence.method == "point"


@given(st.sampled_from([0, -1, -1000, None]))
def test_a_sample_size_that_is_zero_negative_or_missing_is_no_data(n: int | None) -> None:
    for objective in (ERROR_RATE, LATENCY, SUCCESS):
        assert judge(0.0, n, objective) == "no-data"
        assert judge(100.0, n, objective) == "no-data"


def test_a_missing_sample_size_is_taken_from_the_request_count() -> None:
    values = {"istio/error-rate": MetricValue(0.0, None), "istio/request-count": MetricValue(5e3)}
    judged = analysis.judge_version(
        (ERROR_RATE,),
        values,
        request_count="istio/request-count",
        method="exact",
        confidence=0.95,
        min_requests=MIN,
    )
    assert judged.verdict == "pass"
    assert judged.evidence[0].n == 5000


@given(st.floats(0, 0.05), st.integers(1, 10**5))
def test_more_data_at_the_same_rate_never_turns_a_pass_into_no_data(rate: float, n: int) -> None:
    if judge(rate, n) == "pass":
        assert judge(rate, n * 4) == "pass"


@given(st.sampled_from(["no-data", "unavailable"]), st.sampled_from(["exact", "point"]))
def test_missing_or_unavailable_data_is_never_a_pass(status: str, method: str) -> None:
    value = MetricValue(None, None, status)
    judged = analysis.judge_objective(
        ERROR_RATE, value, method=method, confidence=0.95, min_requests=1
    )
    assert judged.verdict == "no-data"
    assert (
        analysis.judge_version(
            (ERROR_RATE,),
            {"istio/error-rate": value},
            request_count=None,
            method=method,
            confidence=0.95,
            min_requests=1,
        ).verdict
        == "no-data"
    )


@given(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_a_value_that_is_not_a_finite_number_is_no_data(value: float) -> None:
    assert judge(value, 10_000) == "no-data"
    assert judge(value, 10_000, LATENCY) == "no-data"


def test_a_version_short_of_evidence_says_how_many_more_requests_it_needs() -> None:
    judged = analysis.judge_version(
        (ERROR_RATE,),
        {"istio/error-rate": MetricValue(0.005, 400)},
        request_count=None,
        method="exact",
        confidence=0.95,
        min_requests=MIN,
    )
    assert judged.verdict == "no-data"
    assert judged.on_track
    assert judged.needs is not None
    # at 0.5 % the exact bound first reaches 1 % at 1,146 requests (stats.requests_to_pass)
    assert judged.needs == 1146 - 400
    assert f"needs ~{judged.needs:,} more requests" in judged.reasons


def test_a_version_beyond_its_limit_is_not_on_track() -> None:
    judged = analysis.judge_version(
        (ERROR_RATE,),
        {"istio/error-rate": MetricValue(0.02, 100)},
        request_count=None,
        method="exact",
        confidence=0.95,
        min_requests=MIN,
    )
    assert judged.verdict == "no-data"
    assert not judged.on_track
    assert judged.needs is None


def test_a_lower_limit_is_judged_on_the_lower_bound() -> None:
    assert judge(1.0, 298, SUCCESS) == "no-data"
    assert judge(1.0, 299, SUCCESS) == "pass"
    assert judge(0.9, 1000, SUCCESS) == "fail"


def test_rewards_that_are_proportions_get_exact_probabilities_and_never_round() -> None:
    compared = analysis.compare_rewards(
        "conversion",
        {"b": MetricValue(0.10, 5000), "c": MetricValue(0.14, 5000), "d": MetricValue(0.10, 5000)},
        baseline="b",
        higher_is_better=True,
        requests={},
        min_requests=30,
    )
    assert compared.method == "beta"
    assert compared.beats["c"] > 0.99
    assert 0.4 < compared.beats["d"] < 0.6
    assert abs(sum(compared.best.values()) - 1.0) < 1e-6
    lower = analysis.compare_rewards(
        "conversion",
        {"b": MetricValue(0.10, 5000), "c": MetricValue(0.14, 5000)},
        baseline="b",
        higher_is_better=False,
        requests={},
        min_requests=30,
    )
    assert lower.beats["c"] < 0.01


@given(st.sampled_from([0, -3, None]))
def test_a_reward_without_a_sample_is_never_compared(n: int | None) -> None:
    compared = analysis.compare_rewards(
        "conversion",
        {"b": MetricValue(0.05, 100_000), "c": MetricValue(0.06, n)},
        baseline="b",
        higher_is_better=True,
        requests={},
        min_requests=30,
    )
    assert "c" not in compared.beats
    assert "c" not in compared.best


def test_a_reward_that_is_not_a_proportion_is_a_labelled_point_comparison() -> None:
    compared = analysis.compare_rewards(
        "latency",
        {"b": MetricValue(120.0, 5000), "c": MetricValue(119.9, 5000), "d": MetricValue(80.0, 10)},
        baseline="b",
        higher_is_better=False,
        requests={},
        min_requests=30,
    )
    assert compared.method == "point"
    assert compared.beats == {}
    assert compared.better == ("c",)  # d has too few requests to be compared


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
