"""Simulating the engine's decisions on exact binomial draws, for the calibration bench and tests.

``hack/bench.py stats`` and ``tests/unit/test_engine_calibration.py`` both ask how often the
engine promotes or chooses a version when the truth is known. This module holds what they
share: the specs they decide (``ab_spec``, ``canary_spec``, built from a base experiment
the caller loads), an exact Binomial(n, p) sampler (``binomial``) and its pmf and CDF
standing for the requests, errors and conversions Prometheus would have counted, and the
engine's own verdicts on those counts (``decide``, ``ab_winner``, ``canary_promoted``,
``progressive_promotes``, which runs ``experiment.start`` and ``experiment.step``
to the end). Nothing here re-implements a verdict: every decision is the engine's.

It must never do I/O (no files, no network, no logging) nor read a clock: time is the
simulated ``now`` it advances itself, and all randomness comes from the
``random.Random`` passed in, so a seed reproduces a run exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from reconciler.engine import experiment, stats, verdicts
from reconciler.engine.analysis import PASS
from reconciler.engine.state import Phase
from reconciler.ports import MetricValue
from reconciler.spec.model import (
    DeploymentPattern,
    Experiment,
    Objective,
    Reward,
    TestingPattern,
    Version,
)

ERRORS, REQUESTS, REWARD = "istio/error-rate", "istio/request-count", "conversion"
"""The metrics the simulated experiments are judged on: an error rate, requests, a reward."""
AB_ERROR_RATE, AB_ERROR_LIMIT = 0.01, 0.05
"""Every A/B/n version's true error rate and limit: an objective each clearly meets."""
CANARY_LIMIT = 0.01
"""The canary's error-rate limit."""
_HALF = 0.5


def ab_spec(base: Experiment, candidates: int, confidence: float = 0.95) -> Experiment:
    """An A/B (one candidate) or A/B/n on a fixed split: error-rate objective, a reward.

    The objective is ``ERRORS`` at most ``AB_ERROR_LIMIT``; the reward is ``REWARD``,
    higher is better. Everything else is ``base``'s.
    """
    return replace(
        base,
        testing_pattern=TestingPattern.AB if candidates == 1 else TestingPattern.ABN,
        deployment_pattern=DeploymentPattern.FIXED_SPLIT,
        candidates=tuple(Version(f"c{i}") for i in range(1, candidates + 1)),
        criteria=replace(
            base.criteria,
            objectives=(Objective(ERRORS, upper_limit=AB_ERROR_LIMIT),),
            rewards=(Reward(REWARD, "High"),),
            confidence=confidence,
        ),
    )


def canary_spec(base: Experiment, confidence: float = 0.95) -> Experiment:
    """``base`` (the demo's progressive canary), judged on its error rate alone.

    The one objective is ``ERRORS`` at most ``CANARY_LIMIT``.
    """
    return replace(
        base,
        criteria=replace(
            base.criteria,
            objectives=(Objective(ERRORS, upper_limit=CANARY_LIMIT),),
            confidence=confidence,
        ),
    )


def log_pmf(k: int, n: int, p: float) -> float:
    """The natural log of P(Binomial(n, p) = k), for 0 < p < 1."""
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binomial(rng: random.Random, n: int, p: float) -> int:  # noqa: PLR0911 - inversion
    """An exact Binomial(n, p) draw: inversion, summing the pmf outwards from the mode.

    The outcomes are visited in an order of their own (mode, one below, one above, ...),
    which is still an exact inversion; it takes about sqrt(n p (1 - p)) steps and one
    ``rng.random()``.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > _HALF:
        return n - binomial(rng, n, 1.0 - p)
    mode = min(n, math.floor((n + 1) * p))
    at_mode = math.exp(log_pmf(mode, n, p))
    odds = p / (1.0 - p)
    u = rng.random() - at_mode
    if u <= 0.0:
        return mode
    low = high = mode
    at_low = at_high = at_mode
    while low > 0 or high < n:
        if low > 0:
            at_low *= low / ((n - low + 1) * odds)
            low -= 1
            u -= at_low
            if u <= 0.0:
                return low
        if high < n:
            at_high *= (n - high) / (high + 1) * odds
            high += 1
            u -= at_high
            if u <= 0.0:
                return high
    return mode  # what rounding left over: as likely as the mode


def binomial_cdf(x: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= x), by summing the pmf."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    total = 0.0
    for k in range(x + 1):
        total += math.exp(log_pmf(k, n, p))
    return min(1.0, total)


def sd(bound: float, runs: int) -> float:
    """The standard deviation of a rate over ``runs`` trials whose true rate is ``bound``."""
    return math.sqrt(bound * (1.0 - bound) / runs)


def values(n: int, errors: int, reward: float | None = None) -> dict[str, MetricValue]:
    """What Prometheus would report for a version: ``errors`` in ``n`` requests, a reward.

    ``reward`` is the reward's value (a rate, such as conversions / n), left out when None.
    With no requests, every metric is missing (``no-data``).
    """
    if n <= 0:
        missing = MetricValue(None, 0, "no-data")
        found = {ERRORS: missing, REQUESTS: missing}
        if reward is not None:
            found[REWARD] = missing
        return found
    found = {ERRORS: MetricValue(errors / n, n), REQUESTS: MetricValue(float(n), n)}
    if reward is not None:
        found[REWARD] = MetricValue(reward, n)
    return found


def decide(spec: Experiment, observations: Mapping[str, Mapping[str, MetricValue]]) -> str | None:
    """The winner the engine names after the last iteration, from these observations."""
    judged = {v.name: verdicts.judge(spec, observations[v.name]) for v in spec.versions}
    comparison = verdicts.compare(spec, observations, judged, final=True)
    winner, _why = verdicts.choose_winner(spec, judged, comparison)
    return winner


def ab_winner(
    rng: random.Random, spec: Experiment, rates: Sequence[float], requests: int
) -> str | None:
    """One A/B/n decided on ``requests`` per version converting at ``rates`` (baseline first).

    Every version errs at ``AB_ERROR_RATE``; for each in turn, its errors are drawn, then
    its conversions.
    """
    observations = {
        v.name: values(
            requests,
            binomial(rng, requests, AB_ERROR_RATE),
            binomial(rng, requests, rate) / requests,
        )
        for v, rate in zip(spec.versions, rates, strict=True)
    }
    return decide(spec, observations)


def canary_promoted(rng: random.Random, spec: Experiment, true_rate: float, requests: int) -> bool:
    """One canary decided on ``requests`` at ``true_rate``: whether it is promoted."""
    observations = {
        v.name: values(requests, binomial(rng, requests, true_rate)) for v in spec.versions
    }
    return decide(spec, observations) == spec.candidates[0].name


def most_errors_that_pass(spec: Experiment, n: int, start: int = -1) -> int:
    """The most errors in ``n`` requests the engine passes (-1: none), searched from ``start``.

    ``start`` must be a count known to pass at ``n`` (or -1); the search goes upwards.
    """
    most = start
    while most + 1 <= n and verdicts.judge(spec, values(n, most + 1)).verdict == PASS:
        most += 1
    return most


def planned_requests(spec: Experiment, true_rate: float, power: float) -> tuple[int, int, float]:
    """The fewest requests at which a canary at ``true_rate`` passes with ``power``.

    The engine passes x errors in n requests when the upper bound is within the limit
    (``stats.upper_within``), so P(pass) is the binomial CDF at the largest such x.

    Returns:
        (n, the most errors that pass at n, the exact P(pass) at n). Scans n upwards from
        ``minRequestCount``, the passing errors growing with n.

    Raises:
        ValueError: the spec's first objective has no upper limit above ``true_rate``.
    """
    objective = spec.criteria.objectives[0]
    limit = objective.upper_limit
    if limit is None or not 0.0 < true_rate < limit:
        raise ValueError("planned_requests needs a true rate below an upper limit")
    confidence = spec.criteria.confidence
    n = verdicts.min_requests(spec)
    most = -1
    while True:
        while most + 1 < n and stats.upper_within(most + 1, n, limit, confidence):
            most += 1
        chance = binomial_cdf(most, n, true_rate)
        if chance >= power:
            return n, most, chance
        n += 1


def candidate_traffic(spec: Experiment) -> float:
    """The candidate's cumulative share of the traffic (in intervals) at the last iteration.

    That is when it gains an increment after every iteration (the most the engine gives it).
    """
    step = spec.weights.max_candidate_weight_increment
    cap = spec.weights.max_candidate_weight
    weight = min(step, cap, 100 // len(spec.versions))
    total = 0
    for _ in range(spec.duration.iterations):
        total += weight
        weight = min(cap, weight + step)
    return total / 100


def progressive_promotes(
    rng: random.Random, spec: Experiment, true_rate: float, per_interval: int
) -> bool:
    """One progressive canary from ``experiment.start`` to its outcome: whether it promoted.

    Every interval, each version serves its weight's share of ``per_interval`` requests,
    erring at ``true_rate``, and the engine steps on the cumulative counts.

    Raises:
        RuntimeError: an iteration that was due did not run.
    """
    now = 0.0
    state = experiment.start(spec, spec_blob="0" * 40, source_commit="0" * 40, now=now).state
    served = {v.name: 0 for v in spec.versions}
    failed = {v.name: 0 for v in spec.versions}
    while state.phase is Phase.PROGRESSING:
        for name, weight in state.weights:
            requests = round(per_interval * weight / 100)
            served[name] += requests
            failed[name] += binomial(rng, requests, true_rate)
        now += spec.duration.interval_seconds
        observations = {name: values(served[name], failed[name]) for name in served}
        transition = experiment.step(state, observations, now)
        if transition is None:
            raise RuntimeError("an iteration that was due did not run")
        state = transition.state
    return experiment.outcome_of(state) == experiment.PROMOTED
