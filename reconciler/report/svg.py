"""Line charts as inline SVG text, their paths computed from the data here.

A report must open with no network at all, so there is no chart library: ``line_chart``
maps the values to a plot area, writes one ``<path>`` per series (a gap where a value is
missing), dashed lines for limits, a few axis ticks, and a ``<title>`` on each point for
the browser's own tooltip. Every label is escaped: version and metric names come from the
repo, which may be hostile. Pure: strings in, a string out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Limit", "Line", "line_chart", "number"]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#9c755f",
)
"""Series colours, by version index (the baseline first); distinguishable in print too."""
LIMIT_COLOUR = "#c0392b"
MARKERS_UP_TO = 120
"""Points per series that get a marker with a tooltip; past that, the line alone."""

_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 10, 26
"""Margins around the plot area, room for the tick labels."""


@dataclass(frozen=True)
class Line:
    """One series: a label (a version), a value per x (None: no data), its colour."""

    label: str
    values: Sequence[float | None]
    colour: str


@dataclass(frozen=True)
class Limit:
    """A horizontal line drawn across the plot (an objective's limit)."""

    label: str
    value: float


def line_chart(
    xs: Sequence[int],
    lines: Sequence[Line],
    *,
    title: str,
    limits: Sequence[Limit] = (),
    y_range: tuple[float, float] | None = None,
    width: int = 480,
    height: int = 200,
) -> str:
    """An ``<svg>`` element plotting ``lines`` over ``xs`` (iterations), with ``limits``.

    ``y_range`` fixes the vertical axis (weights: 0 to 100); otherwise it spans the
    values and the limits.
    """
    values = [v for line in lines for v in line.values if v is not None and math.isfinite(v)]
    low, high = y_range or _span([*values, *(limit.value for limit in limits)])
    ticks = _ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    x_low, x_high = (min(xs), max(xs)) if xs else (0, 1)

    def x_at(x: float) -> float:
        if x_high == x_low:
            return _LEFT + plot_w / 2
        return _LEFT + (x - x_low) * plot_w / (x_high - x_low)

    def y_at(y: float) -> float:
        return _TOP + plot_h - (y - low) * plot_h / (high - low)

    out = [
        (
            f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(title)}" '
            'xmlns="http://www.w3.org/2000/svg">'
        ),
        f"<title>{escape(title)}</title>",
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for tick in ticks:
        y = _f(y_at(tick))
        out.append(
            f'<path class="grid" d="M{_LEFT} {y}H{_LEFT + plot_w}"/>'
            f'<text class="tick" x="{_LEFT - 4}" y="{y}" text-anchor="end">'
            f"{escape(number(tick))}</text>"
        )
    out.extend(
        f'<text class="tick" x="{_f(x_at(x))}" y="{height - 8}" text-anchor="middle">{x}</text>'
        for x in _x_ticks(x_low, x_high)
    )
    for limit in limits:
        y = _f(y_at(limit.value))
        out.append(
            f'<path class="limit" d="M{_LEFT} {y}H{_LEFT + plot_w}" stroke="{LIMIT_COLOUR}"/>'
        )
        out.append(
            f'<text class="limit-label" x="{_LEFT + plot_w - 4}" y="{_f(y_at(limit.value) - 3)}"'
            f' text-anchor="end">{escape(limit.label)} {escape(number(limit.value))}</text>'
        )
    for line in lines:
        points = [
            (x_at(x), y_at(v), x, v)
            for x, v in zip(xs, line.values, strict=False)
            if v is not None and math.isfinite(v)
        ]
        d = _path(xs, line.values, x_at, y_at)
        if d:
            out.append(
                f'<path class="series" d="{d}" stroke="{line.colour}">'
                f"<title>{escape(line.label)}</title></path>"
            )
        if points and len(points) <= MARKERS_UP_TO:
            label = escape(line.label)
            out.append(f'<g fill="{line.colour}">')
            out.extend(
                f'<circle cx="{_f(px)}" cy="{_f(py)}" r="2.5">'
                f"<title>{label}, iteration {x}: {escape(number(v))}</title></circle>"
                for px, py, x, v in points
            )
            out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _path(
    xs: Sequence[int],
    values: Sequence[float | None],
    x_at: Callable[[float], float],
    y_at: Callable[[float], float],
) -> str:
    """``M``/``L`` commands through the values; a missing value starts a new segment.

    A segment of one point is drawn as a zero-length line (its round cap shows a dot).
    """
    parts: list[str] = []
    pen_down = False
    for x, value in zip(xs, values, strict=False):
        if value is None or not math.isfinite(value):
            if pen_down and parts[-1].startswith("M"):
                parts.append("h0")
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{_f(x_at(x))} {_f(y_at(value))}")
        pen_down = True
    if parts and parts[-1].startswith("M"):
        parts.append("h0")
    return "".join(parts)


def _span(values: Sequence[float]) -> tuple[float, float]:
    """The vertical range for ``values``: from zero when all are positive, padded."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if low > 0:
        low = 0.0
    if high == low:
        high = low + (abs(low) or 1.0)
    return low, high + (high - low) * 0.05


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values covering ``[low, high]``."""
    raw = (high - low) / count
    if not raw > 0:
        return [low, low + 1]
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def _x_ticks(low: int, high: int, count: int = 8) -> list[int]:
    """Integer iterations to label on the horizontal axis (at most about ``count``)."""
    step = max(1, math.ceil((high - low) / count))
    ticks = list(range(low, high + 1, step))
    if ticks[-1] != high:  # the last iteration is always labelled
        if high - ticks[-1] <= step / 2:
            ticks.pop()
        ticks.append(high)
    return ticks


def number(value: float) -> str:
    """A value as a label: four significant digits, no trailing zeros."""
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= max(scale, 1e4):  # 7500 stays as it is, 12000 is 12k
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def _f(value: float) -> str:
    """A coordinate with one decimal, trailing ``.0`` dropped (smaller files)."""
    return f"{value:.1f}".removesuffix(".0")
