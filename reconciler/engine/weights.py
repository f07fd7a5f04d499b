"""Weight arithmetic: integer splits that always sum to 100. Pure.

Every function returns weights for every version in version order (baseline first), as
integers from 0 to 100 that sum to exactly 100, whatever its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.spec.model import Experiment

Pairs = tuple[tuple[str, int], ...]


def first_step(spec: Experiment) -> int:
    """A candidate's weight when a progressive experiment starts.

    Like Flagger's first ``stepWeight``: an iteration needs traffic on a candidate to
    observe it. With several candidates each gets the step, within an equal share.
    """
    share = 100 // (len(spec.candidates) + 1)
    return min(
        spec.weights.max_candidate_weight_increment, spec.weights.max_candidate_weight, share
    )


def from_candidates(spec: Experiment, candidates: Mapping[str, int]) -> Pairs:
    """Candidates as given (clamped), the baseline takes the rest.

    When the candidates ask for more than 100 in all, the largest give way first.
    """
    wanted = {c.name: max(0, min(100, int(candidates.get(c.name, 0)))) for c in spec.candidates}
    while sum(wanted.values()) > 100:  # noqa: PLR2004 - percent
        largest = max(wanted, key=lambda name: (wanted[name], name))
        wanted[largest] -= min(wanted[largest], sum(wanted.values()) - 100)
    return ((spec.baseline.name, 100 - sum(wanted.values())), *wanted.items())


def baseline_only(spec: Experiment) -> Pairs:
    """All traffic on the baseline."""
    return from_candidates(spec, {})


def all_on(spec: Experiment, version: str) -> Pairs:
    """All traffic on one version (a blue/green switch)."""
    if version == spec.baseline.name:
        return baseline_only(spec)
    return from_candidates(spec, {version: 100})


def even(spec: Experiment) -> Pairs:
    """An even split; the remainder goes to the baseline."""
    share = 100 // len(spec.versions)
    return from_candidates(spec, {c.name: share for c in spec.candidates})


def is_valid(spec: Experiment, weights: Mapping[str, int]) -> bool:
    """Whether ``weights`` names every version with integers 0..100 summing to 100."""
    names = {v.name for v in spec.versions}
    return (
        set(weights) == names
        and all(isinstance(w, int) and 0 <= w <= 100 for w in weights.values())  # noqa: PLR2004
        and sum(weights.values()) == 100  # noqa: PLR2004
    )


def grow(spec: Experiment, current: Pairs, leader: str) -> Pairs:
    """The leader gains up to one increment, up to the cap; nobody else gains."""
    weights = dict(current)
    step = spec.weights.max_candidate_weight_increment
    cap = spec.weights.max_candidate_weight
    target = max(weights.get(leader, 0), min(weights.get(leader, 0) + step, cap))
    candidates = {c.name: weights.get(c.name, 0) for c in spec.candidates}
    candidates[leader] = target
    overflow = sum(candidates.values()) - 100
    for name in sorted((n for n in candidates if n != leader), key=lambda n: -candidates[n]):
        if overflow <= 0:
            break
        taken = min(candidates[name], overflow)
        candidates[name] -= taken
        overflow -= taken
    return from_candidates(spec, candidates)
