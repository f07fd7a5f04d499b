"""``stats``: are the engine's decisions calibrated? Monte Carlo through the real engine.

Every figure is a rate over ``--runs`` simulated experiments, each decided by the engine's
own functions (nothing here re-implements a verdict): binomial draws (an exact sampler:
inversion from the mode, ``binomial``) stand for the requests, errors and conversions
Prometheus would have counted. The simulation (specs, sampler, decisions) is
``tests.sim.decisions``, shared with ``tests/unit/test_engine_calibration.py``; this
file holds the scenarios, their bounds and the table. For confidence 0.95 and 0.9:

- **no real difference**: A/B (1 candidate) and A/B/n (3 and 5 candidates), every version
  converting at the same true rate (0.10) on the same number of requests (2,000), every
  one clearly within its error-rate objective: how often a candidate is chosen
  (``verdicts.judge`` of every version, ``verdicts.compare(final=True)``,
  ``verdicts.choose_winner``). At most 1 - confidence, whatever the number of candidates.
- **canary at the limit**: a Canary whose true error rate is its upper limit (0.01), judged
  on the planned number of requests (below): how often it is promoted. At most
  1 - confidence (Clopper-Pearson is exact, so below it).
- **planned power**: a true error rate of 0.005 against the limit 0.01. The planned number
  of requests is the fewest at which P(pass) >= 0.9, computed exactly (the engine passes
  x errors in n requests when the upper bound is within the limit,
  ``stats.upper_within``; P(pass) is the binomial CDF at the largest such x); the row is
  the simulated pass rate at that n. At least 0.9.
- **progressive canary end to end**: ``experiment.start`` then ``experiment.step`` every
  interval until the experiment ends, the traffic split as the engine sets it: each
  version serves its weight's share of a fixed request rate each interval, and is judged
  on its cumulative counts. The rate is what the planned n needs by the last iteration
  when the candidate gains an increment every iteration, times 1.5 (an iteration whose
  observed rate is over the limit does not grow; a note says the promotion rate at just
  the planned n). True error rate 0.005, limit 0.01: the promotion rate, at least 0.9.
- **A/B/n best wins**: baseline 0.10, candidates 0.10, 0.13 and 0.115 on 3,000 requests
  each: how often the 0.13 candidate is chosen. Compared with 0.8, a planning target and
  not a guarantee (no nominal bound exists for it).

A row is ``ok`` when its rate is within three simulation standard deviations
(sqrt(b (1 - b) / runs) at the bound b) on the right side of the bound. Each row draws
from its own ``random.Random`` seeded with ``--seed``, the row's name and its confidence,
so a row's figure does not depend on which rows ran before it.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from benchlib.common import emit, table
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Experiment
from tests.sim.decisions import (
    CANARY_LIMIT,
    ab_spec,
    ab_winner,
    binomial_cdf,
    canary_promoted,
    canary_spec,
    candidate_traffic,
    planned_requests,
    progressive_promotes,
    sd,
)

CONFIDENCES = (0.95, 0.9)
LIMIT, GOOD_RATE, POWER = CANARY_LIMIT, 0.005, 0.9
"""The canary's error-rate limit, the true rate of a good candidate, the power planned."""
NULL_RATE, NULL_REQUESTS = 0.10, 2_000
BEST_RATES, BEST_REQUESTS = (0.10, 0.10, 0.13, 0.115), 3_000
"""Baseline first: the A/B/n whose best candidate (0.13) should win."""
BEST_TARGET = 0.8
RATE_MARGIN = 1.5
SIGMAS = 3.0


def _demo() -> Experiment:
    data = resources.files("reconciler.demo").joinpath(
        "data", "apps", "bookinfo", "experiment.yaml"
    )
    return load_experiments("apps/bookinfo/experiment.yaml", data.read_bytes()).experiments[0]


@dataclass(frozen=True)
class Row:
    """One scenario at one confidence: its rate and the bound it is held to."""

    scenario: str
    confidence: float
    runs: int
    rate: float
    bound: float
    at_most: bool
    """The rate must be at most the bound (a false promotion), else at least (a power)."""

    @property
    def slack(self) -> float:
        """Three simulation standard deviations at the bound."""
        return SIGMAS * sd(self.bound, self.runs)

    @property
    def ok(self) -> bool:
        """Whether the rate is on the bound's right side, within the simulation's error."""
        if self.at_most:
            return self.rate <= self.bound + self.slack
        return self.rate >= self.bound - self.slack

    def cells(self) -> list[object]:
        """The row as the table prints it."""
        side = "<=" if self.at_most else ">="
        return [
            self.scenario,
            f"{self.confidence:g}",
            self.runs,
            f"{self.rate:.4f}",
            f"{side} {self.bound:.4f}",
            "yes" if self.ok else "NO",
        ]

    def record(self) -> dict[str, Any]:
        """The row for the JSON line."""
        return {
            "scenario": self.scenario,
            "confidence": self.confidence,
            "runs": self.runs,
            "rate": self.rate,
            "bound": self.bound,
            "side": "at most" if self.at_most else "at least",
            "ok": self.ok,
        }


def _rate(runs: int, seed: str, trial: Callable[[random.Random], bool]) -> float:
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    return sum(trial(rng) for _ in range(runs)) / runs


def _chosen(
    spec: Experiment, rates: Sequence[float], requests: int, *, who: str | None = None
) -> Callable[[random.Random], bool]:
    """A trial: whether ``who`` is chosen (None: whether any candidate is)."""

    def trial(rng: random.Random) -> bool:
        winner = ab_winner(rng, spec, rates, requests)
        if who is None:
            return winner not in {None, spec.baseline.name}
        return winner == who

    return trial


def rows_for(confidence: float, runs: int, seed: int) -> tuple[list[Row], list[str]]:
    """Every scenario at one confidence, and notes on the figures they used."""
    alpha = 1.0 - confidence
    rows: list[Row] = []
    notes: list[str] = []

    def seeded(name: str) -> str:
        return f"{seed}:{name}:{confidence}"

    for count in (1, 3, 5):
        spec = ab_spec(_demo(), count, confidence)
        kind = "A/B" if count == 1 else "A/B/n"
        name = f"no real difference, {kind}, {count} candidate{'s' if count > 1 else ''}"
        trial = _chosen(spec, (NULL_RATE,) * (count + 1), NULL_REQUESTS)
        rate = _rate(runs, seeded(name), trial)
        rows.append(Row(name, confidence, runs, rate, alpha, at_most=True))

    canary = canary_spec(_demo(), confidence)
    planned, most, chance = planned_requests(canary, GOOD_RATE, POWER)
    at_limit = binomial_cdf(most, planned, LIMIT)
    notes.append(
        f"confidence {confidence:g}: planned n = {planned:,} (passes with at most {most} "
        f"errors); exact P(pass) {chance:.4f} at {GOOD_RATE:g}, {at_limit:.4f} at the limit"
    )
    name = f"canary at the limit ({LIMIT:g} vs {LIMIT:g}, n={planned:,})"
    rate = _rate(runs, seeded(name), lambda rng: canary_promoted(rng, canary, LIMIT, planned))
    rows.append(Row(name, confidence, runs, rate, alpha, at_most=True))
    name = f"planned power ({GOOD_RATE:g} vs {LIMIT:g}, n={planned:,})"
    rate = _rate(runs, seeded(name), lambda rng: canary_promoted(rng, canary, GOOD_RATE, planned))
    rows.append(Row(name, confidence, runs, rate, POWER, at_most=False))

    share = candidate_traffic(canary)
    per_interval = math.ceil(RATE_MARGIN * planned / share)
    just_enough = math.ceil(planned / share)
    rate_just = _rate(
        runs,
        seeded("progressive, just enough"),
        lambda rng: progressive_promotes(rng, canary, GOOD_RATE, just_enough),
    )
    notes.append(
        f"confidence {confidence:g}: progressive canary at {per_interval:,} requests an "
        f"interval, {canary.duration.iterations} iterations: the candidate reaches "
        f"{round(per_interval * share):,} requests when it grows every iteration (at "
        f"{just_enough:,}, just the planned n, it is promoted {rate_just:.4f} of the time)"
    )
    name = f"progressive canary end to end ({GOOD_RATE:g} vs {LIMIT:g}, {per_interval:,}/interval)"
    rate = _rate(
        runs, seeded(name), lambda rng: progressive_promotes(rng, canary, GOOD_RATE, per_interval)
    )
    rows.append(Row(name, confidence, runs, rate, POWER, at_most=False))

    spec = ab_spec(_demo(), len(BEST_RATES) - 1, confidence)
    best = spec.candidates[BEST_RATES.index(max(BEST_RATES)) - 1].name
    name = "A/B/n best wins (0.10 | 0.10, 0.13, 0.115; n=3,000)"
    trial = _chosen(spec, BEST_RATES, BEST_REQUESTS, who=best)
    rate = _rate(runs, seeded(name), trial)
    rows.append(Row(name, confidence, runs, rate, BEST_TARGET, at_most=False))
    return rows, notes


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py stats``."""
    runs = 50 if args.quick else args.runs
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    for confidence in CONFIDENCES:
        found, said = rows_for(confidence, runs, args.seed)
        rows += found
        notes += said
    seconds = time.perf_counter() - started
    print(
        f"stats: {runs} simulated experiments a row through the engine (seed {args.seed}); "
        f"ok: within {SIGMAS:g} simulation sd of the bound, on its side"
    )
    for note in notes:
        print(note)
    print(
        table(
            ("scenario", "confidence", "runs", "rate", "bound", "ok"),
            [row.cells() for row in rows],
        )
    )
    print(f"took {seconds:.1f} s")
    emit({"bench": "stats", "runs": runs, "seed": args.seed, "rows": [r.record() for r in rows]})
