"""The engine's decisions are calibrated: simulated through the real engine, fixed seeds.

Error rates are held to their nominal bound plus three simulation standard deviations,
powers to their target minus three; ``hack/bench.py stats`` prints the same figures over
more runs, from the same simulation (``tests.sim.decisions``). The draws are exact
binomials (``binomial``), so a miss is the engine's.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import verdicts
from reconciler.engine.analysis import PASS
from reconciler.ports import MetricValue
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Experiment, Objective
from tests.sim import decisions
from tests.sim.decisions import (
    CANARY_LIMIT,
    ERRORS,
    REQUESTS,
    ab_winner,
    binomial,
    binomial_cdf,
    canary_promoted,
    candidate_traffic,
    log_pmf,
    most_errors_that_pass,
    progressive_promotes,
    sd,
    values,
)

LATENCY = "istio/mean-latency"
LIMIT, GOOD_RATE, POWER = CANARY_LIMIT, 0.005, 0.9
Observations = dict[str, dict[str, MetricValue]]
DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
DEMO_SPEC: Experiment = load_experiments(
    "apps/bookinfo/experiment.yaml", DEMO.read_bytes()
).experiments[0]


def ab_spec(candidates: int, confidence: float = 0.95) -> Experiment:
    return decisions.ab_spec(DEMO_SPEC, candidates, confidence)


def canary_spec(confidence: float = 0.95) -> Experiment:
    return decisions.canary_spec(DEMO_SPEC, confidence)


def planned_requests(spec: Experiment) -> tuple[int, int]:
    """The fewest requests at which GOOD_RATE passes with probability POWER, and the most
    errors that pass there."""
    n, most, _chance = decisions.planned_requests(spec, GOOD_RATE, POWER)
    return n, most


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret


def test_the_simulations_draw_exact_binomials() -> None:
    rng = seeded(11)
    draws = 20_000
    for n, p in ((40, 0.2), (3_000, 0.005), (12, 0.9)):
        seen = Counter(binomial(rng, n, p) for _ in range(draws))
        for k in range(n + 1):
            expected = draws * math.exp(log_pmf(k, n, p))
            if expected >= 50:
                assert abs(seen[k] - expected) < 4.5 * math.sqrt(expected)


@pytest.mark.parametrize(
    ("candidates", "confidence", "runs"),
    [(1, 0.95, 600), (3, 0.95, 500), (5, 0.95, 400), (3, 0.9, 400)],
)
def test_with_no_real_difference_a_candidate_wins_at_most_one_minus_confidence_of_the_time(
    candidates: int, confidence: float, runs: int
) -> None:
    spec = ab_spec(candidates, confidence)
    rng = seeded(1_000 * candidates + round(100 * confidence))
    rates = (0.10,) * (candidates + 1)
    wins = sum(
        ab_winner(rng, spec, rates, 2_000) not in {None, spec.baseline.name} for _ in range(runs)
    )
    alpha = 1.0 - confidence
    assert wins / runs <= alpha + 3 * sd(alpha, runs)


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_at_its_limit_a_canary_passes_at_most_one_minus_confidence_of_the_time_at_every_n(
    confidence: float,
) -> None:
    # Exact: the errors the engine passes at n, and their probability when the true rate
    # is the limit. Clopper-Pearson is exact, so this never exceeds 1 - confidence.
    spec = canary_spec(confidence)
    most = -1
    worst = 0.0
    for n in range(verdicts.min_requests(spec), 4_000, 7):
        most = most_errors_that_pass(spec, n, most)
        worst = max(worst, binomial_cdf(most, n, LIMIT))
    assert 0.0 < worst <= 1.0 - confidence


def test_a_canary_at_its_limit_is_promoted_at_most_one_minus_confidence_of_the_time() -> None:
    spec = canary_spec()
    n, _most = planned_requests(spec)
    rng = seeded(2)
    runs = 600
    promoted = sum(canary_promoted(rng, spec, LIMIT, n) for _ in range(runs))
    assert promoted / runs <= 0.05 + 3 * sd(0.05, runs)


def test_at_the_planned_number_of_requests_a_canary_within_its_limit_passes_as_planned() -> None:
    spec = canary_spec()
    n, most = planned_requests(spec)
    # The plan's passing region is the engine's: the most errors it passes at n.
    assert most_errors_that_pass(spec, n) == most
    assert binomial_cdf(most, n, GOOD_RATE) >= POWER
    rng = seeded(3)
    runs = 600
    passed = sum(canary_promoted(rng, spec, GOOD_RATE, n) for _ in range(runs))
    assert passed / runs >= POWER - 3 * sd(POWER, runs)


def test_a_progressive_canary_within_its_limit_is_promoted_with_the_planned_power() -> None:
    spec = canary_spec()
    n, _most = planned_requests(spec)
    # Growing +20 after every iteration from 20 % to 80 %, the candidate serves 3.6
    # intervals' worth of traffic in 6 iterations. The rate gives it 1.5 times what the
    # plan needs that way: an iteration whose observed rate is over the limit does not grow
    # (at just the planned n, about 0.85 of these are promoted).
    per_interval = math.ceil(1.5 * n / candidate_traffic(spec))
    rng = seeded(4)
    runs = 500
    promoted = sum(progressive_promotes(rng, spec, GOOD_RATE, per_interval) for _ in range(runs))
    assert promoted / runs >= POWER - 3 * sd(POWER, runs)


def decided(
    rewards: Sequence[tuple[float, int]], confidence: float = 0.95
) -> tuple[str | None, Mapping[str, float]]:
    """The winner when every version (baseline first) meets its objectives, and P(best)."""
    spec = ab_spec(len(rewards) - 1, confidence)
    observations: Observations = {
        v.name: values(n, 0, reward) for v, (reward, n) in zip(spec.versions, rewards, strict=True)
    }
    judged = {v.name: verdicts.judge(spec, observations[v.name]) for v in spec.versions}
    assert all(j.verdict == PASS for j in judged.values())
    comparison = verdicts.compare(spec, observations, judged, final=True)
    assert comparison is not None
    winner, _why = verdicts.choose_winner(spec, judged, comparison)
    return winner, comparison.best


@pytest.mark.parametrize("at", [0, 1, 2])
def test_the_a_b_n_winner_is_the_most_likely_best_of_several_confident_candidates(at: int) -> None:
    others = [(150 / 300, 300), (150 / 300, 300)]
    candidates = [*others[:at], (169 / 300, 300), *others[at:]]
    winner, _best = decided([(75 / 300, 300), *candidates], confidence=0.8)
    assert winner == f"c{at + 1}"


@pytest.mark.parametrize("order", [(0.60, 0.55), (0.55, 0.60)])
def test_on_large_samples_the_a_b_n_winner_is_the_candidate_with_the_best_rate(
    order: tuple[float, float],
) -> None:
    winner, _best = decided([(0.50, 100_000), *((rate, 100_000) for rate in order)])
    assert winner == f"c{order.index(0.60) + 1}"


@pytest.mark.parametrize("order", [((0.52, 100_000), (0.60, 300)), ((0.60, 300), (0.52, 100_000))])
def test_a_small_clearly_better_candidate_beats_a_large_slightly_better_one(
    order: tuple[tuple[float, int], tuple[float, int]],
) -> None:
    winner, best = decided([(0.50, 100_000), *order])
    small = f"c{[rate for rate, _n in order].index(0.60) + 1}"
    assert winner == small
    # P(0.60 of 300 beats 0.52 of 100,000) is 0.9972 exactly (0.998 by a normal approximation).
    assert best[small] > 0.99


def test_a_perfect_record_passes_at_min_requests_and_not_one_request_sooner() -> None:
    for confidence in (0.8, 0.9, 0.95, 0.99):
        for limit in (0.001, 0.01, 0.05):
            spec = replace(
                canary_spec(confidence),
                criteria=replace(
                    canary_spec(confidence).criteria,
                    objectives=(Objective(ERRORS, upper_limit=limit),),
                ),
            )
            least = verdicts.min_requests(spec)
            assert verdicts.judge(spec, values(least, 0)).verdict == PASS
            assert verdicts.judge(spec, values(least - 1, 0)).verdict != PASS


@settings(max_examples=300, deadline=None)
@given(
    confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
    method=st.sampled_from(["exact", "point"]),
    min_request_count=st.none() | st.integers(1, 2_000),
    with_request_count=st.booleans(),
    limit=st.sampled_from([0.001, 0.01, 0.05, 0.2]),
    requests=st.integers(0, 3_000),
    error_rate=st.floats(0.0, 0.05),
    error_sample=st.none() | st.integers(0, 3_000),
    latency=st.floats(0.0, 600.0),
    latency_sample=st.none() | st.integers(0, 3_000),
)
def test_a_version_never_passes_on_fewer_requests_than_min_requests(
    *,
    confidence: float,
    method: str,
    min_request_count: int | None,
    with_request_count: bool,
    limit: float,
    requests: int,
    error_rate: float,
    error_sample: int | None,
    latency: float,
    latency_sample: int | None,
) -> None:
    spec = replace(
        DEMO_SPEC,
        criteria=replace(
            DEMO_SPEC.criteria,
            request_count=REQUESTS if with_request_count else None,
            objectives=(
                Objective(ERRORS, upper_limit=limit),
                Objective(LATENCY, upper_limit=300.0),
            ),
            confidence=confidence,
            method=method,
            min_request_count=min_request_count,
        ),
    )
    observed = {
        REQUESTS: MetricValue(float(requests), requests),
        ERRORS: MetricValue(error_rate, error_sample),
        LATENCY: MetricValue(latency, latency_sample),
    }
    judged = verdicts.judge(spec, observed)
    if judged.verdict != PASS:
        return
    least = verdicts.min_requests(spec)
    fallback = requests if with_request_count else None
    samples = [n if n is not None else fallback for n in (error_sample, latency_sample)]
    assert all(n is not None and n >= least for n in samples)
    if with_request_count:
        assert requests >= least
        assert judged.requests is not None
        assert judged.requests >= least
