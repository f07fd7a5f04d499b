"""Exact statistics for proportions: Beta distributions, Clopper-Pearson bounds, P(best).

Plain functions of numbers; no randomness, no clock, no I/O. Everything the engine decides
about a proportion (an error rate, a conversion rate) comes from here:

- ``beta_cdf``: the regularized incomplete beta function I_x(a, b), by its continued
  fraction (modified Lentz), accurate to about 1e-13 for the sample sizes a rollout sees.
- ``clopper_pearson``: the exact one-sided binomial bounds. A bound is only computed for
  the record; a verdict compares a tail probability with the confidence directly
  (``upper_within`` / ``lower_within``), one ``beta_cdf`` each.
- ``chances``: for versions with Beta posteriors, P(version beats another) and P(version is
  the best of all) by Simpson quadrature over a grid that resolves every posterior, so the
  answer is the same on every replay (no sampling) and within 1e-6 of the exact value.
- ``zero_failure_requests`` / ``requests_to_pass``: how many requests a bound needs before
  it can pass, for ``minRequestCount`` and for "needs ~N more requests".

This module never rounds a probability: ranking on rounded numbers picked the wrong A/B/n
winner before (issue 17).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

_TINY = 1e-300
_EPS = 1e-14


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), for x < (a + 1) / (a + b + 2).

    Where the fraction converges its denominators keep away from 0, so the loop runs
    without Lentz's guards against a zero (a fifth of its time, and a tick judges 200,000
    of these); a division by zero, or a result that is not a positive number, takes the
    guarded loop instead.
    """
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    try:
        d = 1.0 / (1.0 - qab * x / qap)
        c, h = 1.0, d
        for m in range(1, 200 + int(20 * math.sqrt(max(a, b)))):
            m2 = m + m
            am2 = a + m2
            aa = m * (b - m) * x / ((qam + m2) * am2)
            d = 1.0 / (1.0 + aa * d)
            c = 1.0 + aa / c
            h *= d * c
            aa = -(a + m) * (qab + m) * x / (am2 * (qap + m2))
            d = 1.0 / (1.0 + aa * d)
            c = 1.0 + aa / c
            delta = d * c
            h *= delta
            if -_EPS < delta - 1.0 < _EPS:
                break
    except ZeroDivisionError:
        return _guarded_fraction(a, b, x)
    return h if 0.0 < h < math.inf else _guarded_fraction(a, b, x)


def _guarded_fraction(a: float, b: float, x: float) -> float:
    """``_continued_fraction`` with Lentz's guards: a denominator near 0 becomes ``_TINY``."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    limit = 200 + int(20 * math.sqrt(max(a, b)))
    for m in range(1, limit):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """I_x(a, b): P(X <= x) for X ~ Beta(a, b), with a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, front * _continued_fraction(a, b, x) / a)
    return max(0.0, 1.0 - front * _continued_fraction(b, a, 1.0 - x) / b)


def beta_quantile(p: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = p: Halley's method from a first guess, kept in a bracket.

    Halley's step uses the density's slope, which the Beta density gives for free
    (f'/f = (a - 1)/x - (b - 1)/(1 - x)): about 3 ``beta_cdf`` calls a quantile from
    ``_first_guess`` where Newton's took 7, and a tick's plan spent half its time here
    (``hack/bench.py tick``).
    A step that would leave the bracket is replaced by a bisection, as is every step
    after the 16th, so it always converges.
    """
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_norm = _log_beta(a, b)
    x = _first_guess(p, a, b, log_norm)
    low, high = 0.0, 1.0
    for attempt in range(400):
        if not 0.0 < x < 1.0:
            return min(max(x, 0.0), 1.0)  # beyond what a double can tell from 0 or 1
        error = beta_cdf(x, a, b) - p
        if abs(error) <= 1e-13 or high - low <= 1e-300 + 1e-13 * min(high, 1.0 - low):  # noqa: PLR2004
            return x
        if error < 0:
            low = x
        else:
            high = x
        guess = _step(x, error, (a, b, log_norm), (low, high))
        if guess is None or attempt >= 16:  # noqa: PLR2004
            # Newton leaves the bracket, or crawls where the density is steep (b < 1 at 1).
            guess = _middle(low, high)
        elif abs(guess - x) <= 1e-13 * min(x, 1.0 - x):
            return guess
        x = guess
    return x


def _first_guess(p: float, a: float, b: float, log_norm: float) -> float:
    """A quantile close enough for two or three of Halley's steps to finish it.

    With a, b >= 1 (every Clopper-Pearson bound of a whole count): Abramowitz and Stegun's
    26.5.22, a normal deviate corrected for the skew, which cut the ``beta_cdf`` calls of
    a bound from 3.3 to 2.5 over rollout-sized samples. Otherwise the normal
    approximation's quantile; in a tail it leaves (0, 1), the tail's own: near 0,
    I_x(a, b) ~ x^a / (a B(a, b)), near 1 likewise for 1 - x with a and b swapped
    (bisecting from the edge instead took 15 to 20 calls).
    """
    if a >= 1.0 and b >= 1.0:
        z = -NormalDist().inv_cdf(p)
        skew = (z * z - 3.0) / 6.0
        ra, rb = 1.0 / (2.0 * a - 1.0), 1.0 / (2.0 * b - 1.0)
        h = 2.0 / (ra + rb)
        w = z * math.sqrt(h + skew) / h - (rb - ra) * (skew + 5.0 / 6.0 - 2.0 / (3.0 * h))
        x = a / (a + b * math.exp(min(2.0 * w, 700.0)))
    else:
        mean = a / (a + b)
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
        x = mean + sd * NormalDist().inv_cdf(p)
        if x <= 0.0:
            x = math.exp((math.log(p) + math.log(a) + log_norm) / a)
        elif x >= 1.0:
            x = -math.expm1((math.log1p(-p) + math.log(b) + log_norm) / b)
    return min(max(x, 1e-300), 1.0 - 1e-16)


def _step(
    x: float, error: float, beta: tuple[float, float, float], bracket: tuple[float, float]
) -> float | None:
    """Halley's next x (Newton's where Halley's leaves the bracket); None when both do.

    ``beta`` is (a, b, log B(a, b)); ``error`` is I_x(a, b) - p. A step below the
    double's resolution at x gives x: as close as it gets.
    """
    a, b, log_norm = beta
    low, high = bracket
    log_pdf = (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_norm
    step = error / math.exp(log_pdf) if log_pdf > -700.0 else math.inf  # noqa: PLR2004
    newton = x - step
    if newton == x:
        return x
    if not low < newton < high:
        return None
    bend = 1.0 - 0.5 * step * ((a - 1.0) / x - (b - 1.0) / (1.0 - x))
    halley = x - step / bend if bend > 0.5 else newton  # noqa: PLR2004 - it overshoots
    return halley if low < halley < high else newton


def _middle(low: float, high: float) -> float:
    """The bisection point, geometric near 0 or 1: a tiny a or b puts quantiles at 1e-40."""
    if high < 1e-3:  # noqa: PLR2004
        return math.sqrt(max(low, 1e-300) * high)
    if low > 1.0 - 1e-3:
        return 1.0 - math.sqrt((1.0 - low) * max(1.0 - high, 2.0**-53))  # below 1 as a double
    return (low + high) / 2


def clopper_pearson(successes: float, trials: float, confidence: float) -> tuple[float, float]:
    """Exact one-sided bounds (lower, upper) on a proportion, each at ``confidence``.

    ``successes`` may be fractional (a rate times a count); no trials gives (0, 1).
    """
    if trials <= 0:
        return 0.0, 1.0
    x = min(max(successes, 0.0), trials)
    lower = 0.0 if x <= 0 else beta_quantile(1.0 - confidence, x, trials - x + 1.0)
    upper = 1.0 if x >= trials else beta_quantile(confidence, x + 1.0, trials - x)
    return lower, upper


def upper_within(successes: float, trials: float, limit: float, confidence: float) -> bool:
    """Whether the one-sided upper Clopper-Pearson bound is at or below ``limit``.

    The bound is the p with P(Binomial(n, p) <= x) = 1 - confidence, so it is within the
    limit exactly when I_limit(x + 1, n - x) >= confidence: one ``beta_cdf``, no search.
    """
    x = min(max(successes, 0.0), trials)
    if trials <= 0 or x >= trials or limit <= 0.0:
        return limit >= 1.0 and trials > 0
    return beta_cdf(limit, x + 1.0, trials - x) >= confidence


def lower_within(successes: float, trials: float, limit: float, confidence: float) -> bool:
    """Whether the one-sided lower Clopper-Pearson bound is at or above ``limit``."""
    x = min(max(successes, 0.0), trials)
    if trials <= 0 or x <= 0 or limit >= 1.0:
        return limit <= 0.0 and trials > 0
    return beta_cdf(limit, x, trials - x + 1.0) <= 1.0 - confidence


def zero_failure_requests(limit: float, confidence: float, *, upper: bool) -> int | None:
    """The fewest trials at which a perfect record passes a bound at ``limit``.

    For an upper limit u that is n >= ln(1 - c) / ln(1 - u) (no failures at all); for a
    lower limit l, n >= ln(1 - c) / ln(l) (every trial a success). None when no n can
    (an upper limit of 0, a lower limit of 1); 1 when any single trial does.
    """
    bad = 1.0 - limit if upper else limit
    if bad >= 1.0:
        return None
    if bad <= 0.0:
        return 1
    n = math.log(1.0 - confidence) / math.log(bad)
    # Float noise must not ask for one request more than the bound needs.
    return max(1, math.ceil(n - 1e-9))


def requests_to_pass(
    rate: float, limit: float, confidence: float, *, upper: bool, start: int = 1
) -> int | None:
    """The fewest trials (>= ``start``) at which a rate that stays at ``rate`` passes.

    None when it never can (the rate is on or beyond the limit). Found by doubling, then
    bisection on ``upper_within`` / ``lower_within``: about 2 log2(n) evaluations.
    """
    if (upper and rate >= limit) or (not upper and rate <= limit):
        return None

    def passes(n: int) -> bool:
        if upper:
            return upper_within(rate * n, n, limit, confidence)
        return lower_within(rate * n, n, limit, confidence)

    low, high = max(1, start), max(1, start)
    while not passes(high):
        low = high + 1
        high *= 2
        if high > 1 << 62:
            return None
    while low < high:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid + 1
    return high


@dataclass(frozen=True)
class Posterior:
    """Beta(a, b): a proportion's posterior after ``a - 1`` successes in ``a + b - 2`` trials.

    Built with ``Posterior.of``; the uniform prior Beta(1, 1) keeps 0/n and n/n proper.
    """

    a: float
    b: float

    @classmethod
    def of(cls, successes: float, trials: float) -> Posterior:
        """The posterior after ``successes`` in ``trials`` (clamped into [0, trials])."""
        x = min(max(successes, 0.0), trials)
        return cls(x + 1.0, trials - x + 1.0)

    def flipped(self) -> Posterior:
        """The posterior of 1 - p (lower is better becomes higher is better)."""
        return Posterior(self.b, self.a)

    @property
    def mean(self) -> float:
        """E[p]."""
        return self.a / (self.a + self.b)

    @property
    def sd(self) -> float:
        """The standard deviation of p."""
        total = self.a + self.b
        return math.sqrt(self.a * self.b / (total * total * (total + 1.0)))

    def span(self) -> tuple[float, float]:
        """An interval outside which the density is negligible (below 1e-15 of its mass)."""
        reach = 40.0 * self.sd if min(self.a, self.b) < 3 else 12.0 * self.sd  # noqa: PLR2004
        return max(0.0, self.mean - reach), min(1.0, self.mean + reach)

    def log_pdf(self, x: float) -> float:
        """Log f(x); -inf outside (0, 1) where the density vanishes."""
        if x <= 0.0:
            return 0.0 - _log_beta(self.a, self.b) if self.a == 1.0 else -math.inf
        if x >= 1.0:
            return 0.0 - _log_beta(self.a, self.b) if self.b == 1.0 else -math.inf
        return (
            (self.a - 1.0) * math.log(x)
            + (self.b - 1.0) * math.log1p(-x)
            - _log_beta(self.a, self.b)
        )


@dataclass(frozen=True)
class Chances:
    """For each version (index into the posteriors given): P(it beats the first) and P(best)."""

    beats_first: tuple[float, ...]
    """P(p_i > p_0); the first entry (the reference itself) is 0.5 by convention."""
    best: tuple[float, ...]
    """P(p_i is the largest of all); sums to 1."""


_POINTS_PER_POSTERIOR = 160


def chances(posteriors: Sequence[Posterior]) -> Chances:
    """P(each beats the first) and P(each is the best), by Simpson quadrature.

    The grid is the union of a fine uniform grid over each posterior's span, so a narrow
    posterior (1e6 trials) beside a wide one (30 trials) is resolved as well as either alone.
    Each CDF is the cumulative Simpson integral of its density on that grid (normalised to
    1), and P(i best) = integral of f_i times the product of the others' CDFs. Cost:
    O(k^2 x 160) densities for k versions, about 2 ms for 2 and 15 ms for 6 in CPython.
    """
    k = len(posteriors)
    if k == 0:
        return Chances((), ())
    if k == 1:
        return Chances((0.5,), (1.0,))
    knots: set[float] = set()
    for post in posteriors:
        low, high = post.span()
        # A posterior against 0 or 1 (few successes or failures) decays like an exponential
        # over a span 30 times its scale: it needs more knots than a bell does.
        points = _POINTS_PER_POSTERIOR * (5 if min(post.a, post.b) < 3 else 1)  # noqa: PLR2004
        step = (high - low) / points
        knots.update(low + i * step for i in range(points + 1))
    grid = sorted(knots)
    # The refined grid: every knot and the midpoint of every gap (Simpson's middle point).
    fine: list[float] = []
    for left, right in itertools.pairwise(grid):
        fine.extend((left, (left + right) / 2))
    fine.append(grid[-1])
    densities = [_densities(post, fine) for post in posteriors]
    cdfs = [_cumulative(fine, f) for f in densities]
    best = []
    for i in range(k):
        integrand = list(densities[i])
        for j in range(k):
            if j != i:
                cdf = cdfs[j]
                integrand = [v * c for v, c in zip(integrand, cdf, strict=True)]
        best.append(_simpson(fine, integrand))
    total = sum(best) or 1.0
    beats = [0.5]
    for i in range(1, k):
        if posteriors[i] == posteriors[0]:
            beats.append(0.5)  # exactly: a tie must never clear a threshold of 0.5
            continue
        integrand = [v * c for v, c in zip(densities[i], cdfs[0], strict=True)]
        beats.append(min(1.0, max(0.0, _simpson(fine, integrand))))
    return Chances(tuple(beats), tuple(min(1.0, max(0.0, b / total)) for b in best))


def _densities(post: Posterior, points: Sequence[float]) -> list[float]:
    out = []
    for x in points:
        log = post.log_pdf(x)
        out.append(math.exp(log) if log > -745.0 else 0.0)  # noqa: PLR2004 - exp underflow
    return out


def _cumulative(points: Sequence[float], density: Sequence[float]) -> list[float]:
    """The CDF at every point of a refined grid (knots at even indices, midpoints at odd).

    Knot to knot by Simpson's rule; knot to midpoint by the integral of the quadratic
    through the three points over its first half, h/12 (5 f0 + 8 f1 - f2) with h the half
    gap. Normalised so that the last value is 1.
    """
    out = [0.0] * len(points)
    running = 0.0
    for i in range(0, len(points) - 2, 2):
        half = points[i + 1] - points[i]
        f0, f1, f2 = density[i], density[i + 1], density[i + 2]
        out[i] = running
        out[i + 1] = running + max(0.0, half / 12 * (5 * f0 + 8 * f1 - f2))
        running += half / 3 * (f0 + 4 * f1 + f2)
    out[-1] = running
    if running <= 0.0:
        return out
    return [min(1.0, v / running) for v in out]


def _simpson(points: Sequence[float], values: Sequence[float]) -> float:
    total = 0.0
    for i in range(0, len(points) - 2, 2):
        half = points[i + 1] - points[i]
        total += half / 3 * (values[i] + 4 * values[i + 1] + values[i + 2])
    return total
