"""The evidence behind an iteration's verdicts, as values and as its JSON form.

A state document carries the evidence of the last iteration it judged (each state commit
carries its own, so the branch's history holds every iteration's): per version the
requests it was judged on, per metric the sample size, the exact bounds and the method,
and for the reward the probabilities and the threshold a winner had to clear. Enough to
re-decide an iteration from Git alone. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MetricEvidence:
    """What one metric of one version was judged on."""

    metric: str
    method: str
    """``clopper-pearson``, ``point`` or ``no-data``."""
    value: float | None
    n: int | None
    """The sample size it was judged on (its own, or the version's request count)."""
    low: float | None = None
    """``clopper-pearson``: the one-sided lower bound at the confidence."""
    high: float | None = None
    """``clopper-pearson``: the one-sided upper bound at the confidence."""


@dataclass(frozen=True, slots=True)
class VersionEvidence:
    """One version's verdict and what it rests on."""

    version: str
    verdict: str
    requests: int | None
    """The requests it was judged on."""
    needs: int | None
    """About how many more requests it needs to pass at its current rates."""
    on_track: bool
    metrics: tuple[MetricEvidence, ...]


@dataclass(frozen=True, slots=True)
class RewardEvidence:
    """How the candidates compared with the baseline on the first reward."""

    metric: str
    method: str
    """``beta``, ``point`` or ``no-data``."""
    threshold: float
    """What P(beats the baseline) had to exceed, strictly (the confidence shared among
    the candidates)."""
    beats: tuple[tuple[str, float], ...] = ()
    best: tuple[tuple[str, float], ...] = ()
    """P(best) among the baseline and the candidates that met every objective."""
    better: tuple[str, ...] = ()
    """``point``: candidates better than the baseline by value, best first."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything one iteration's verdicts were decided on."""

    iteration: int
    confidence: float
    min_requests: int
    versions: tuple[VersionEvidence, ...]
    reward: RewardEvidence | None = None


def to_data(evidence: Evidence) -> dict[str, Any]:
    """The evidence as plain JSON values."""
    data: dict[str, Any] = {
        "iteration": evidence.iteration,
        "confidence": evidence.confidence,
        "minRequestCount": evidence.min_requests,
        "versions": {
            v.version: {
                "verdict": v.verdict,
                "requests": v.requests,
                "needs": v.needs,
                "onTrack": v.on_track,
                "metrics": [_metric_data(m) for m in v.metrics],
            }
            for v in evidence.versions
        },
        "reward": None,
    }
    reward = evidence.reward
    if reward is not None:
        data["reward"] = {
            "metric": reward.metric,
            "method": reward.method,
            "threshold": reward.threshold,
            "beatsBaseline": dict(reward.beats),
            "best": dict(reward.best),
            "better": list(reward.better),
        }
    return data


def _metric_data(m: MetricEvidence) -> dict[str, Any]:
    return {
        "metric": m.metric,
        "method": m.method,
        "value": m.value,
        "n": m.n,
        "low": m.low,
        "high": m.high,
    }


def from_data(data: dict[str, Any], order: Sequence[str] = ()) -> Evidence:
    """Rebuild evidence from ``to_data``'s output.

    ``order``: the versions' names as the spec lists them, baseline first. The JSON
    document keeps versions by name (its keys are sorted), so the order is restored from
    the spec; names it does not hold follow in the document's order.
    """
    rank = {name: index for index, name in enumerate(order)}
    named = sorted(data["versions"].items(), key=lambda item: rank.get(item[0], len(rank)))
    reward = data.get("reward")
    return Evidence(
        iteration=data["iteration"],
        confidence=data["confidence"],
        min_requests=data["minRequestCount"],
        versions=tuple(
            VersionEvidence(
                version=name,
                verdict=v["verdict"],
                requests=v["requests"],
                needs=v["needs"],
                on_track=v["onTrack"],
                metrics=tuple(
                    MetricEvidence(
                        m["metric"], m["method"], m["value"], m["n"], m["low"], m["high"]
                    )
                    for m in v["metrics"]
                ),
            )
            for name, v in named
        ),
        reward=None
        if reward is None
        else RewardEvidence(
            metric=reward["metric"],
            method=reward["method"],
            threshold=reward["threshold"],
            beats=tuple(reward["beatsBaseline"].items()),
            best=tuple(reward["best"].items()),
            better=tuple(reward["better"]),
        ),
    )
