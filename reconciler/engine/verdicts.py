"""Verdicts and winners: how an iteration's observations become decisions. Pure.

``judge`` gives each version its verdict and evidence (``analysis``), ``compare`` ranks
the candidates on the first reward, ``choose_winner`` decides after the last iteration,
``leader`` picks who gains traffic before it, and ``evidence`` is what the state
document records of it all. README "How versions are judged" says the rules in words.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.engine import analysis
from reconciler.engine.analysis import PASS, Judgement
from reconciler.engine.evidence import Evidence, RewardEvidence, VersionEvidence
from reconciler.ports import MetricValue
from reconciler.spec.model import Experiment, TestingPattern

Observations = Mapping[str, Mapping[str, MetricValue]]
"""Version name to metric name to value."""


def min_requests(spec: Experiment) -> int:
    """``minRequestCount``, or its default from the objectives and the confidence."""
    criteria = spec.criteria
    if criteria.min_request_count is not None:
        return criteria.min_request_count
    return analysis.default_min_requests(criteria.objectives, criteria.confidence, criteria.method)


def threshold(spec: Experiment) -> float:
    """What P(a candidate beats the baseline) must exceed, strictly, for it to win.

    The error budget 1 - confidence is shared among the k candidates (Bonferroni): with no
    real difference, the chance that any of them clears it is at most 1 - confidence.
    """
    return 1.0 - (1.0 - spec.criteria.confidence) / max(1, len(spec.candidates))


def judge(spec: Experiment, values: Mapping[str, MetricValue]) -> Judgement:
    """One version's verdict on the experiment's objectives."""
    return analysis.judge_version(
        spec.criteria.objectives,
        values,
        request_count=spec.criteria.request_count,
        method=spec.criteria.method,
        confidence=spec.criteria.confidence,
        min_requests=min_requests(spec),
    )


def compare(
    spec: Experiment,
    observations: Observations,
    judged: Mapping[str, Judgement],
    *,
    final: bool,
) -> analysis.RewardComparison | None:
    """The first reward compared between the baseline and the candidates still in the race.

    In the race: candidates that met every objective, and before the last iteration also
    those on track to (a candidate that failed, or lacks data, never wins). None without
    a reward.
    """
    if not spec.criteria.rewards:
        return None
    reward = spec.criteria.rewards[0]
    racing = [
        c.name
        for c in spec.candidates
        if judged[c.name].verdict == PASS or (not final and judged[c.name].on_track)
    ]
    versions = [spec.baseline.name, *racing]
    return analysis.compare_rewards(
        reward.metric,
        {v: observations.get(v, {}).get(reward.metric) for v in versions},
        baseline=spec.baseline.name,
        higher_is_better=reward.preferred_direction == "High",
        # A reward without a sample size of its own takes the version's requestCount only.
        requests={v: judged[v].requests for v in versions}
        if spec.criteria.request_count is not None
        else {},
        min_requests=min_requests(spec),
    )


def choose_winner(
    spec: Experiment,
    judged: Mapping[str, Judgement],
    comparison: analysis.RewardComparison | None,
) -> tuple[str | None, str]:
    """The winner after the last iteration, and why (None: no version won).

    A/B and A/B/n: among the candidates that met every objective and beat the baseline
    with probability above ``threshold``, the one most likely to be the best of the
    baseline and the candidates that met every objective; ties in P(best) go to the
    earlier candidate. With a reward that is not a proportion, the comparison is by
    point value and says so. Otherwise the baseline stays (when it met its objectives).
    """
    baseline = spec.baseline.name
    if spec.testing_pattern in {TestingPattern.CONFORMANCE, TestingPattern.CANARY}:
        validated = spec.candidates[0].name if spec.candidates else baseline
        if judged[validated].verdict == PASS:
            return validated, f"{validated} met every objective in the last iteration"
        return None, f"{validated} was not validated ({reason(judged)})"
    passing = [c.name for c in spec.candidates if judged[c.name].verdict == PASS]
    bar = threshold(spec)
    if comparison is not None and comparison.method == analysis.BETA:
        confident = [c for c in passing if comparison.beats.get(c, 0.0) > bar]
        if confident:
            best = max(confident, key=lambda c: comparison.best.get(c, 0.0))
            return best, (
                f"{best} met every objective, beats the baseline on {comparison.metric} with "
                f"probability {_probability(comparison.beats[best])} (needed above "
                f"{bar:.4g}) and is the best with probability "
                f"{_probability(comparison.best[best])}"
            )
    if comparison is not None and comparison.method == analysis.POINT:
        better = [c for c in comparison.better if c in passing]
        if better:
            return better[0], (
                f"{better[0]} met every objective and is better than the baseline on "
                f"{comparison.metric} by point comparison only ({comparison.metric} is not a "
                "proportion, so no probability is known)"
            )
    if judged[baseline].verdict == PASS:
        return baseline, f"no candidate beat the baseline with probability above {bar:.4g}"
    return None, "no version met every objective with enough confidence"


def _probability(p: float) -> str:
    """A probability as a reader should see it: never 1 (nothing here is certain)."""
    if p >= 1.0 - 1e-6:
        return "above 0.999999"
    return f"{p:.6f}".rstrip("0")


def leader(
    spec: Experiment,
    judged: Mapping[str, Judgement],
    comparison: analysis.RewardComparison | None,
) -> str | None:
    """The candidate that gains traffic this iteration, if any.

    One that met every objective; when none has yet, one on track to (measured, within
    its limits, short of evidence: more traffic gathers it). A/B and A/B/n prefer the one
    most likely best on the reward.
    """
    passing = [c.name for c in spec.candidates if judged[c.name].verdict == PASS]
    contenders = passing or [c.name for c in spec.candidates if judged[c.name].on_track]
    if not contenders:
        return None
    if spec.testing_pattern in {TestingPattern.AB, TestingPattern.ABN} and comparison:
        if comparison.method == analysis.BETA:
            return max(contenders, key=lambda name: comparison.best.get(name, -1.0))
        ahead = [c for c in comparison.better if c in contenders]
        if ahead:
            return ahead[0]
    return contenders[0]


def evidence(
    spec: Experiment,
    iteration: int,
    judged: Mapping[str, Judgement],
    comparison: analysis.RewardComparison | None,
) -> Evidence:
    """What the state document records of an iteration's verdicts and comparison."""
    reward = None
    if comparison is not None:
        reward = RewardEvidence(
            metric=comparison.metric,
            method=comparison.method,
            threshold=threshold(spec),
            beats=tuple(comparison.beats.items()),
            best=tuple(comparison.best.items()),
            better=comparison.better,
        )
    return Evidence(
        iteration=iteration,
        confidence=spec.criteria.confidence,
        min_requests=min_requests(spec),
        versions=tuple(
            VersionEvidence(
                version=v.name,
                verdict=judged[v.name].verdict,
                requests=judged[v.name].requests,
                needs=judged[v.name].needs,
                on_track=judged[v.name].on_track,
                metrics=judged[v.name].evidence,
            )
            for v in spec.versions
        ),
        reward=reward,
    )


def reason(judged: Mapping[str, Judgement]) -> str:
    """Each version's verdict, and why when it did not pass, on one line."""
    parts = [
        f"{name}: {j.verdict}" + (f" ({'; '.join(j.reasons)})" if j.reasons else "")
        for name, j in judged.items()
    ]
    return ", ".join(parts)
