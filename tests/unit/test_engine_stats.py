"""The exact statistics against closed forms, the binomial itself, and Monte Carlo."""

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import stats


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def closed_form_beats(first: stats.Posterior, second: stats.Posterior) -> float:
    """P(p2 > p1) for Beta posteriors with an integer a2: Evan Miller's finite sum."""
    total = 0.0
    for i in range(int(second.a)):
        total += math.exp(
            log_beta(first.a + i, first.b + second.b)
            - math.log(second.b + i)
            - log_beta(1 + i, second.b)
            - log_beta(first.a, first.b)
        )
    return total


def binomial_cdf(x: int, n: int, p: float) -> float:
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(x + 1))


@settings(max_examples=300)
@given(st.integers(0, 300), st.integers(1, 300), st.integers(0, 300), st.integers(1, 300))
def test_p_candidate_beats_baseline_matches_the_closed_form(
    xa: int, na: int, xb: int, nb: int
) -> None:
    a = stats.Posterior.of(min(xa, na), na)
    b = stats.Posterior.of(min(xb, nb), nb)
    exact = closed_form_beats(a, b)
    assert abs(stats.chances([a, b]).beats_first[1] - exact) < 1e-6


def test_the_counterexample_a_normal_approximation_got_wrong_is_exact_now() -> None:
    # 3/3 against 150/300: the normal approximation said 0.951, the truth is 0.936
    chance = stats.chances([stats.Posterior.of(150, 300), stats.Posterior.of(3, 3)])
    assert abs(chance.beats_first[1] - 0.9362603) < 1e-6


def test_p_best_agrees_with_monte_carlo_and_sums_to_one() -> None:
    posteriors = [
        stats.Posterior.of(75, 300),
        stats.Posterior.of(150, 300),
        stats.Posterior.of(169, 300),
        stats.Posterior.of(150, 300),
        stats.Posterior.of(52_000, 100_000),
        stats.Posterior.of(160, 300),
    ]
    computed = stats.chances(posteriors).best
    assert abs(sum(computed) - 1.0) < 1e-9
    rng = random.Random(7)  # noqa: S311 - a reproducible reference, not a secret
    draws = 40_000
    wins = [0] * len(posteriors)
    for _ in range(draws):
        sample = [rng.betavariate(p.a, p.b) for p in posteriors]
        wins[sample.index(max(sample))] += 1
    for p, w in zip(computed, wins, strict=True):
        assert abs(p - w / draws) < 4 * math.sqrt(0.25 / draws)


@settings(max_examples=300)
@given(st.integers(1, 150), st.integers(1, 150), st.floats(0, 1))
def test_the_beta_cdf_of_whole_parameters_is_the_binomial_tail(a: int, b: int, x: float) -> None:
    # I_x(a, b) = P(Binomial(a + b - 1, x) >= a): exact sums against the continued
    # fraction, on both sides of the point where beta_cdf turns it around.
    tail = 1.0 - binomial_cdf(a - 1, a + b - 1, x)
    assert abs(stats.beta_cdf(x, a, b) - tail) < 1e-9


@settings(max_examples=200)
@given(st.integers(1, 200), st.floats(0, 1), st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.999]))
def test_the_clopper_pearson_upper_bound_is_where_the_binomial_tail_equals_one_minus_confidence(
    n: int, share: float, confidence: float
) -> None:
    x = min(n, math.floor(share * n))
    low, high = stats.clopper_pearson(x, n, confidence)
    assert 0.0 <= low <= x / n <= high <= 1.0
    if x < n:
        assert abs(binomial_cdf(x, n, high) - (1 - confidence)) < 1e-7
    if x > 0:
        assert abs((1 - binomial_cdf(x - 1, n, low)) - (1 - confidence)) < 1e-7


@settings(max_examples=300)
@given(
    st.integers(1, 10**7),
    st.floats(0, 1),
    st.floats(0.0001, 0.9999),
    st.sampled_from([0.5, 0.9, 0.95, 0.999]),
)
def test_a_verdict_without_the_quantile_agrees_with_the_bound(
    n: int, share: float, limit: float, confidence: float
) -> None:
    x = share * n
    low, high = stats.clopper_pearson(x, n, confidence)
    if abs(high - limit) > 1e-9:
        assert stats.upper_within(x, n, limit, confidence) == (high <= limit)
    if abs(low - limit) > 1e-9:
        assert stats.lower_within(x, n, limit, confidence) == (low >= limit)


@given(st.floats(0.0001, 0.5), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_a_clean_record_passes_first_at_the_zero_failure_count(
    limit: float, confidence: float
) -> None:
    n = stats.zero_failure_requests(limit, confidence, upper=True)
    assert n is not None
    assert stats.upper_within(0, n, limit, confidence)
    if n > 1:
        assert not stats.upper_within(0, n - 1, limit, confidence)


@given(st.floats(0.0005, 0.0095), st.sampled_from([0.9, 0.95]))
def test_requests_to_pass_is_the_first_count_that_passes_at_that_rate(
    rate: float, confidence: float
) -> None:
    n = stats.requests_to_pass(rate, 0.01, confidence, upper=True)
    assert n is not None
    assert stats.upper_within(rate * n, n, 0.01, confidence)
    assert not stats.upper_within(rate * (n - 1), n - 1, 0.01, confidence)
    assert stats.requests_to_pass(0.01, 0.01, confidence, upper=True) is None


def test_bounds_of_a_rollout_sized_sample_are_computed_without_giving_up() -> None:
    low, high = stats.clopper_pearson(5e6, 1e9, 0.95)
    assert low < 0.005 < high
    assert high - low < 1e-5


@given(st.integers(0, 1000), st.integers(1, 1000))
def test_identical_evidence_is_an_exact_tie(x: int, n: int) -> None:
    same = stats.Posterior.of(min(x, n), n)
    chance = stats.chances([same, same, same])
    assert chance.beats_first == (0.5, 0.5, 0.5)
    assert chance.best[0] == chance.best[1] == chance.best[2]


@settings(max_examples=300)
@given(
    st.floats(1e-3, 1e6),
    st.floats(1e-3, 1e6),
    st.floats(1e-9, 1 - 1e-9),
)
def test_a_beta_quantile_is_where_the_cdf_reaches_it_even_far_in_a_tail(
    a: float, b: float, p: float
) -> None:
    q = stats.beta_quantile(p, a, b)
    assert 0.0 <= q <= 1.0
    if 0.0 < q < 1.0:
        # a neighbour one part in 10^9 away on each side (at least the next double)
        # brackets p
        below = min(q * (1 - 1e-9), math.nextafter(q, 0.0))
        above = max(q + (1 - q) * 1e-9, math.nextafter(q, 1.0))
        assert stats.beta_cdf(below, a, b) <= p + 1e-9
        assert stats.beta_cdf(above, a, b) >= p - 1e-9


def test_a_lower_bound_a_float_step_from_its_answer_is_not_pushed_to_one() -> None:
    # Newton's last step was below the float's resolution at 0.99986: the bracket's
    # bisection towards 1 then answered 1.0, a bound above every observed rate.
    n = 16412
    x = 0.9998999999999999 * n
    low, _high = stats.clopper_pearson(x, n, 0.5)
    assert low < x / n
    assert abs(stats.beta_cdf(low, x, n - x + 1) - 0.5) < 1e-9
