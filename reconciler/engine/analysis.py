"""Judging versions from metric values: objectives, proportions, and reward comparisons.

Pure statistics, chosen to be explainable in a commit message:

- An objective on a **proportion** (a value in [0, 1] with a known sample size and limits
  in [0, 1], such as an error rate with the request count as its sample size) is judged
  with a one-sided **Wilson score interval** at the configured confidence: it passes when
  the interval's far end is within the limit, fails when even its near end is outside,
  and is "not enough data" in between. A handful of requests can therefore never pass an
  error-rate objective by luck.
- Any other objective (latency, say) is a point comparison against its limits, as Flagger
  does; it still needs a sample (no requests: no data). ``method: point`` makes every
  objective a point comparison.
- For rewards, the probability that a candidate beats the baseline is computed from the
  normal approximation of the difference of two proportions (Laplace-smoothed, so 0/n
  and n/n stay finite) when both are proportions, and is 1 or 0 (a point comparison)
  otherwise. A winner needs that probability above the confidence.

Missing or unavailable data is never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

from reconciler.ports import MetricValue
from reconciler.spec.model import Objective

PASS, FAIL, NO_DATA = "pass", "fail", "no-data"
BAYES, POINT = "wilson", "point"


@dataclass(frozen=True)
class Judgement:
    """The verdict on one version, and why."""

    verdict: str
    reasons: tuple[str, ...] = ()


def wilson_bounds(successes: float, trials: float, confidence: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (lower, upper) for a proportion at ``confidence``."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(confidence)
    p = min(1.0, max(0.0, successes / trials))
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def is_proportion(objective: Objective, value: MetricValue) -> bool:
    """Whether the objective is judged as a proportion (see the module docstring)."""
    limits = [x for x in (objective.upper_limit, objective.lower_limit) if x is not None]
    return (
        value.value is not None
        and value.sample_size is not None
        and 0.0 <= value.value <= 1.0
        and all(0.0 <= x <= 1.0 for x in limits)
    )


def judge_objective(
    objective: Objective, value: MetricValue | None, *, method: str, confidence: float
) -> str:
    """``pass``, ``fail`` or ``no-data`` for one objective of one version."""
    if value is None or value.status != "ok" or value.value is None:
        return NO_DATA
    if value.sample_size is not None and value.sample_size <= 0:
        return NO_DATA
    if method == POINT or not is_proportion(objective, value):
        return PASS if objective.holds(value.value) else FAIL
    trials = float(value.sample_size or 0)
    low, high = wilson_bounds(value.value * trials, trials, confidence)
    upper, lower = objective.upper_limit, objective.lower_limit
    if (upper is not None and low > upper) or (lower is not None and high < lower):
        return FAIL
    if (upper is None or high <= upper) and (lower is None or low >= lower):
        return PASS
    return NO_DATA


def judge_version(
    objectives: tuple[Objective, ...],
    values: Mapping[str, MetricValue],
    *,
    request_count: str | None,
    method: str,
    confidence: float,
) -> Judgement:
    """All objectives of one version: a fail wins over missing data, which wins over a pass."""
    reasons: list[str] = []
    verdicts: list[str] = []
    if request_count is not None:
        count = values.get(request_count)
        if count is None or count.status != "ok" or not count.value:
            verdicts.append(NO_DATA)
            reasons.append(f"{request_count}: no requests")
    for objective in objectives:
        verdict = judge_objective(
            objective, values.get(objective.metric), method=method, confidence=confidence
        )
        verdicts.append(verdict)
        if verdict != PASS:
            value = values.get(objective.metric)
            shown = "no data" if value is None or value.value is None else f"{value.value:g}"
            reasons.append(f"{objective.metric}={shown}: {verdict}")
    if FAIL in verdicts:
        return Judgement(FAIL, tuple(reasons))
    if NO_DATA in verdicts:
        return Judgement(NO_DATA, tuple(reasons))
    return Judgement(PASS)


def probability_better(
    candidate: MetricValue | None,
    baseline: MetricValue | None,
    *,
    higher_is_better: bool,
) -> float | None:
    """P(candidate is better than baseline on a reward); None when either lacks data."""
    if candidate is None or baseline is None:
        return None
    if candidate.value is None or baseline.value is None:
        return None
    if candidate.status != "ok" or baseline.status != "ok":
        return None
    sign = 1.0 if higher_is_better else -1.0
    both_proportions = all(
        v.sample_size and 0.0 <= (v.value or 0.0) <= 1.0 for v in (candidate, baseline)
    )
    if not both_proportions:
        difference = sign * (candidate.value - baseline.value)
        return 1.0 if difference > 0 else 0.0
    nc, nb = float(candidate.sample_size or 0), float(baseline.sample_size or 0)
    pc = (candidate.value * nc + 1) / (nc + 2)
    pb = (baseline.value * nb + 1) / (nb + 2)
    spread = math.sqrt(pc * (1 - pc) / (nc + 2) + pb * (1 - pb) / (nb + 2))
    return NormalDist().cdf(sign * (pc - pb) / spread)
