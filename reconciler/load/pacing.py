"""When each request of one version is due: a schedule of send times, not a sleep loop.

``Pacing`` turns a plan's rate into absolute send times counted from the moment a version
started loading, so a late send never pushes the later ones back (no drift): request ``k``
is due at ``send_time(k)`` whatever happened before it. Iterations are ``interval``
seconds long. With neither a duration nor a request count the sends run on at ``qps``
(request ``k`` at ``k / qps``). With ``duration`` only the first ``duration`` seconds of
each iteration carry sends, ``qps`` a second; with ``requests`` each iteration starts with
that many sends, ``qps`` a second (given both, the count wins and the duration is ignored,
as in Iter8). Either way an iteration never carries more sends than fit in it at ``qps``:
the rest are left out, never pushed into the next one. Iterations are counted from the
moment the version started loading, not from the engine's iteration times.

What it must never do: read a clock or sleep (the generator passes the time in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Pacing"]

_EPSILON = 1e-9
"""Float slack, so that ``8 * (1 / 8)`` counts as 1 and not as 0.99999…"""


@dataclass(frozen=True)
class Pacing:
    """The send times of one version: ``qps`` a second, in iterations of ``interval`` seconds."""

    qps: float
    interval: float
    duration: float | None = None
    requests: int | None = None

    def __post_init__(self) -> None:
        if not (self.qps > 0 and math.isfinite(self.qps)):
            raise ValueError("qps must be a number above 0")
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError("the interval must be a number of seconds above 0")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("the duration must be above 0 seconds")
        if self.requests is not None and self.requests < 1:
            raise ValueError("the request count must be at least 1")

    @property
    def per_iteration(self) -> int | None:
        """Sends in each iteration (None: continuous, the iterations do not matter)."""
        fit = _count_before(self.interval, self.qps)
        if self.requests is not None:
            return min(self.requests, fit)
        if self.duration is not None:
            return min(_count_before(self.duration, self.qps), fit)
        return None

    def send_time(self, k: int) -> float:
        """Seconds after the start at which send ``k`` (0-based) is due."""
        per = self.per_iteration
        if per is None:
            return k / self.qps
        iteration, n = divmod(k, per)
        return iteration * self.interval + n / self.qps

    def index_at(self, offset: float) -> int:
        """The first send due at or after ``offset`` seconds after the start."""
        offset = max(offset, 0.0)
        per = self.per_iteration
        if per is None:
            return _count_before(offset, self.qps)
        iteration = math.floor(offset / self.interval + _EPSILON)
        n = _count_before(offset - iteration * self.interval, self.qps)
        if n >= per:
            return (iteration + 1) * per
        return iteration * per + n

    def rate(self) -> float:
        """Average sends a second over a whole iteration."""
        per = self.per_iteration
        return self.qps if per is None else per / self.interval


def _count_before(seconds: float, qps: float) -> int:
    """How many of the times ``0, 1/qps, 2/qps…`` lie before ``seconds``."""
    return max(0, math.ceil(seconds * qps - _EPSILON))
