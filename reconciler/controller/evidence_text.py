"""The evidence of a judged iteration, as lines of a state commit's body.

``git log reconciler-state`` then answers "on what was this decided" without reading a JSON
document: per version the verdict, the requests it rests on and how many more it needs,
per metric the value against its limit (and, for an exact judgement, the bound at the
confidence), and for the reward the chance of each candidate beating the baseline against
the threshold. Pure: state in, text out.
"""

from __future__ import annotations

from reconciler.engine.evidence import Evidence, MetricEvidence, RewardEvidence
from reconciler.spec.model import Objective

__all__ = ["evidence_lines"]


def evidence_lines(evidence: Evidence, objectives: tuple[Objective, ...]) -> list[str]:
    """The evidence of one iteration, a line per version, metric and reward."""
    limits = {o.metric: o for o in objectives}
    heading = (
        f"Evidence of iteration {evidence.iteration} "
        f"(confidence {evidence.confidence:g}, at least {evidence.min_requests:,} requests):"
    )
    lines = [heading]
    for version in evidence.versions:
        rests = (
            f"on {version.requests:,} requests"
            if version.requests is not None
            else "without a request count"
        )
        needs = f", needs ~{version.needs:,} more" if version.needs else ""
        lines.append(f"  {version.version}: {version.verdict} {rests}{needs}")
        lines.extend(f"    {_metric(m, limits.get(m.metric))}" for m in version.metrics)
    if evidence.reward is not None:
        lines.append(f"  {_reward(evidence.reward)}")
    return lines


def _metric(m: MetricEvidence, objective: Objective | None) -> str:
    if m.value is None:
        return f"{m.metric}: no data"
    text = f"{m.metric} {_number(m.value)}"
    if objective is not None:
        limits = []
        if objective.upper_limit is not None:
            limits.append(f"<= {_number(objective.upper_limit)}")
        if objective.lower_limit is not None:
            limits.append(f">= {_number(objective.lower_limit)}")
        text += f" (limit {' and '.join(limits)})" if limits else ""
    bounds = []
    if m.low is not None:
        bounds.append(f"low {_number(m.low)}")
    if m.high is not None:
        bounds.append(f"high {_number(m.high)}")
    if bounds:
        text += f" [{m.method}: {', '.join(bounds)}]"
    if m.n is not None:
        text += f" n={m.n:,}"
    return text


def _reward(reward: RewardEvidence) -> str:
    text = f"reward {reward.metric} ({reward.method})"
    if reward.beats:
        chances = ", ".join(f"{v}={p:.3f}" for v, p in reward.beats)
        text += f": P(beats the baseline) {chances}, needs > {reward.threshold:.3f}"
    elif reward.better:
        text += f": better than the baseline: {', '.join(reward.better)}"
    return text


def _number(value: float) -> str:
    return f"{value:.4g}"
