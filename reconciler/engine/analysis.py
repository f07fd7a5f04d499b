"""Judging versions from metric values: objectives, evidence, and reward comparisons.

Pure statistics that a commit message can explain (README "How versions are judged"):

- **No verdict without evidence.** A value whose sample size is 0, negative, None or
  missing (and not given by the version's ``requestCount``) is no data, for objectives and
  rewards alike. A version passes only once it has served ``minRequestCount`` requests
  (``min_requests``: by default the fewest at which its tightest proportion objective can
  pass, and never fewer than ``MIN_REQUESTS_FLOOR``).
- An objective on a **proportion** (value and limits in [0, 1], such as an error rate) is
  judged with the exact one-sided **Clopper-Pearson** bound at the confidence: it passes
  when the bound on the limit's side is within the limit, fails when even the bound on
  the other side is beyond it, and otherwise has not enough data yet. Its evidence says
  the bound and, while it is short, about how many more requests it needs at its
  current rate.
- Any other objective (a latency) is a **point** check against its limits, labelled as
  such in the evidence; ``method: point`` makes every objective one.
- Rewards (``compare_rewards``): when every compared version's value is a proportion,
  each gets a Beta posterior (uniform prior) and the engine computes P(candidate beats
  the baseline) and P(best) exactly by quadrature (``stats.chances``). Otherwise the
  comparison is a labelled point comparison that reports no probability at all.

Missing or unavailable data is never a pass. Nothing here rounds a probability.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.engine import stats
from reconciler.engine.evidence import MetricEvidence
from reconciler.ports import MetricValue
from reconciler.spec.model import Objective

PASS, FAIL, NO_DATA = "pass", "fail", "no-data"
EXACT, POINT = "exact", "point"
"""``spec.criteria.method``: exact bounds for proportions, or plain thresholds for all."""
CLOPPER_PEARSON, BETA = "clopper-pearson", "beta"
"""How a piece of evidence was computed (besides ``point`` and ``no-data``)."""

MIN_REQUESTS_FLOOR = 30
"""The fewest requests any version passes on by default: a latency or a gauge judged by a
point check needs some sample, and 30 is the usual floor for a mean to settle."""


@dataclass(frozen=True)
class Judgement:
    """The verdict on one version, and why."""

    verdict: str
    reasons: tuple[str, ...] = ()
    evidence: tuple[MetricEvidence, ...] = ()
    requests: int | None = None
    """The requests it was judged on (``requestCount``, else its objectives' least)."""
    needs: int | None = None
    """About how many more requests it needs to pass at its current rates (no-data only)."""
    on_track: bool = False
    """No data yet, but measured and within every limit so far: it should get more traffic
    to gather the evidence it lacks (and does not count towards ``noDataLimit``)."""


def default_min_requests(
    objectives: Iterable[Objective], confidence: float, method: str = EXACT
) -> int:
    """``minRequestCount`` when the experiment gives none: where the tightest bound can pass.

    For each limit strictly inside (0, 1) (a proportion's), the fewest requests at which a
    perfect record passes it at ``confidence``; the largest of those, and at least
    ``MIN_REQUESTS_FLOOR``. A 1 % error-rate limit at 0.95 needs 299. With ``method:
    point`` no bound is computed, so the floor alone.
    """
    needed = [MIN_REQUESTS_FLOOR]
    if method == POINT:
        return MIN_REQUESTS_FLOOR
    for objective in objectives:
        for limit, upper in ((objective.upper_limit, True), (objective.lower_limit, False)):
            if limit is not None and 0.0 < limit < 1.0:
                n = stats.zero_failure_requests(limit, confidence, upper=upper)
                if n is not None:
                    needed.append(n)
    return max(needed)


def sample_of(value: MetricValue, fallback: int | None) -> int | None:
    """A value's sample size, or ``fallback`` (the request count) when it has none."""
    n = value.sample_size if value.sample_size is not None else fallback
    return n if n is not None and n > 0 else None


def number(value: MetricValue | None) -> float | None:
    """A value's number when it is finite and its source vouched for it, else None."""
    if value is None or value.status != "ok" or value.value is None:
        return None
    return value.value if math.isfinite(value.value) else None


def is_proportion(objective: Objective, value: float) -> bool:
    """Whether an objective is judged as a proportion (value and limits in [0, 1])."""
    limits = [x for x in (objective.upper_limit, objective.lower_limit) if x is not None]
    return 0.0 <= value <= 1.0 and all(0.0 <= x <= 1.0 for x in limits)


@dataclass(frozen=True)
class ObjectiveJudgement:
    """One objective of one version: verdict, evidence, and what it still needs."""

    verdict: str
    evidence: MetricEvidence
    needs: int | None = None
    on_track: bool = False


def judge_objective(
    objective: Objective,
    value: MetricValue | None,
    *,
    method: str,
    confidence: float,
    min_requests: int,
    requests: int | None = None,
) -> ObjectiveJudgement:
    """``pass``, ``fail`` or ``no-data`` for one objective of one version, with evidence.

    ``requests`` is the version's request count, the sample size of a value without one.
    """
    metric = objective.metric
    rate = number(value)
    if value is None or rate is None:
        return ObjectiveJudgement(NO_DATA, MetricEvidence(metric, NO_DATA, None, None))
    n = sample_of(value, requests)
    if n is None:
        return ObjectiveJudgement(NO_DATA, MetricEvidence(metric, NO_DATA, rate, None))
    holds = objective.holds(rate)
    if method == POINT or not is_proportion(objective, rate):
        evidence = MetricEvidence(metric, POINT, rate, n)
        if n < min_requests:
            return ObjectiveJudgement(NO_DATA, evidence, min_requests - n, on_track=holds)
        return ObjectiveJudgement(PASS if holds else FAIL, evidence)
    return _judge_proportion(objective, rate, n, confidence, min_requests)


def _judge_proportion(
    objective: Objective, rate: float, n: int, confidence: float, min_requests: int
) -> ObjectiveJudgement:
    x = rate * n
    upper, lower = objective.upper_limit, objective.lower_limit
    low, high = stats.clopper_pearson(x, n, confidence)
    evidence = MetricEvidence(objective.metric, CLOPPER_PEARSON, rate, n, low=low, high=high)
    # Beyond the limit even at the near bound: a failure the data shows at this confidence.
    fails_upper = (
        upper is not None
        and x > 0
        and upper < 1.0
        and stats.beta_cdf(upper, x, n - x + 1.0) < 1.0 - confidence
    )
    fails_lower = (
        lower is not None
        and x < n
        and lower > 0.0
        and stats.beta_cdf(lower, x + 1.0, n - x) > confidence
    )
    if fails_upper or fails_lower:
        return ObjectiveJudgement(FAIL, evidence)
    passes = (upper is None or stats.upper_within(x, n, upper, confidence)) and (
        lower is None or stats.lower_within(x, n, lower, confidence)
    )
    if passes and n >= min_requests:
        return ObjectiveJudgement(PASS, evidence)
    needed = [min_requests]
    for limit, is_upper in ((upper, True), (lower, False)):
        if limit is not None:
            total = stats.requests_to_pass(rate, limit, confidence, upper=is_upper, start=n)
            if total is None:
                return ObjectiveJudgement(NO_DATA, evidence)
            needed.append(total)
    return ObjectiveJudgement(NO_DATA, evidence, max(needed) - n, on_track=objective.holds(rate))


def judge_version(
    objectives: tuple[Objective, ...],
    values: Mapping[str, MetricValue],
    *,
    request_count: str | None,
    method: str,
    confidence: float,
    min_requests: int,
) -> Judgement:
    """All objectives of one version: a fail wins over missing data, which wins over a pass.

    With ``request_count`` the version also needs that many requests (``min_requests``)
    before anything passes, and its count is the sample size of values without one.
    """
    reasons: list[str] = []
    verdicts: list[str] = []
    needs: list[int] = []
    on_track = True
    requests: int | None = None
    if request_count is not None:
        count = number(values.get(request_count))
        requests = max(0, math.floor(count)) if count is not None else None
        if not requests:
            verdicts.append(NO_DATA)
            reasons.append(f"{request_count}: no requests")
            on_track = False
        elif requests < min_requests:
            verdicts.append(NO_DATA)
            needs.append(min_requests - requests)
            reasons.append(f"{request_count}={requests}: fewer than minRequestCount {min_requests}")
    evidence = []
    for objective in objectives:
        judged = judge_objective(
            objective,
            values.get(objective.metric),
            method=method,
            confidence=confidence,
            min_requests=min_requests,
            requests=requests,
        )
        evidence.append(judged.evidence)
        verdicts.append(judged.verdict)
        if judged.verdict == NO_DATA:
            on_track = on_track and judged.on_track
            if judged.needs is not None:
                needs.append(judged.needs)
        if judged.verdict != PASS:
            reasons.append(_explain(judged))
    return _combine(verdicts, reasons, evidence, requests, needs, on_track=on_track)


def _combine(
    verdicts: list[str],
    reasons: list[str],
    evidence: list[MetricEvidence],
    requests: int | None,
    needs: list[int],
    *,
    on_track: bool,
) -> Judgement:
    samples = [e.n for e in evidence if e.n is not None]
    counted = requests if requests is not None else (min(samples) if samples else None)
    if FAIL in verdicts:
        return Judgement(FAIL, tuple(reasons), tuple(evidence), counted)
    if NO_DATA in verdicts:
        more = max(needs) if needs and on_track else None
        if more is not None:
            reasons.append(f"needs ~{more:,} more requests")
        return Judgement(NO_DATA, tuple(reasons), tuple(evidence), counted, more, on_track)
    return Judgement(PASS, (), tuple(evidence), counted)


def _explain(judged: ObjectiveJudgement) -> str:
    e = judged.evidence
    if e.value is None:
        return f"{e.metric}: no data"
    if e.n is None:
        return f"{e.metric}={e.value:g}: no sample size"
    if e.method == CLOPPER_PEARSON:
        bounds = f" ({e.low:.4g}..{e.high:.4g} at n={e.n:,})" if e.high is not None else ""
        return f"{e.metric}={e.value:g}{bounds}: {judged.verdict}"
    return f"{e.metric}={e.value:g} (point, n={e.n:,}): {judged.verdict}"


@dataclass(frozen=True)
class RewardComparison:
    """How candidates compare with the baseline on the first reward."""

    metric: str
    method: str
    """``beta`` (exact posteriors), ``point`` (no uncertainty known) or ``no-data``."""
    beats: Mapping[str, float]
    """``beta``: candidate to P(it beats the baseline)."""
    best: Mapping[str, float]
    """``beta``: version to P(it is the best of the versions compared)."""
    better: tuple[str, ...] = ()
    """``point``: the candidates whose value is better than the baseline's, best first."""


def compare_rewards(
    metric: str,
    values: Mapping[str, MetricValue | None],
    *,
    baseline: str,
    higher_is_better: bool,
    requests: Mapping[str, int | None],
    min_requests: int,
) -> RewardComparison:
    """Compare ``values`` (version to reward value; the baseline among them).

    Versions without usable data or sample size are left out (no-data: never better).
    When the baseline has none, nothing is compared. Proportions get Beta posteriors and
    exact probabilities; anything else is compared by point only between versions with at
    least ``min_requests`` each.
    """
    samples: dict[str, tuple[float, int]] = {}
    for version, value in values.items():
        found = number(value)
        n = sample_of(value, requests.get(version)) if value is not None else None
        if found is not None and n is not None:
            samples[version] = (found, n)
    if baseline not in samples:
        return RewardComparison(metric, NO_DATA, {}, {})
    if all(0.0 <= v <= 1.0 for v, _ in samples.values()):
        order = [baseline, *(v for v in samples if v != baseline)]
        posteriors = []
        for version in order:
            rate, n = samples[version]
            post = stats.Posterior.of(rate * n, n)
            posteriors.append(post if higher_is_better else post.flipped())
        chances = stats.chances(posteriors)
        beats = {v: chances.beats_first[i] for i, v in enumerate(order) if i > 0}
        best = {v: chances.best[i] for i, v in enumerate(order)}
        return RewardComparison(metric, BETA, beats, best)
    sign = 1.0 if higher_is_better else -1.0
    base_value, base_n = samples[baseline]
    if base_n < min_requests:
        return RewardComparison(metric, POINT, {}, {})
    better = sorted(
        (
            v
            for v, (value, n) in samples.items()
            if v != baseline and n >= min_requests and sign * (value - base_value) > 0
        ),
        key=lambda v: (-sign * samples[v][0], v),
    )
    return RewardComparison(metric, POINT, {}, {}, tuple(better))
