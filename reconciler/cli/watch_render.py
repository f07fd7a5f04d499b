"""How ``reconciler watch`` draws a poll: a rich live view on a terminal, plain lines elsewhere.

``RichOutput`` redraws one panel per experiment (phase, iteration, timings, gate, pause,
last command, outcome, and a table of each version's weights and metric values against
their limits) with ``rich.live.Live``, and between fetches only the clocks move.
``PlainOutput`` prints one line per new state commit (``live_view.line``) and one line per
event of the watch itself, prefixed ``watch:``, and nothing when nothing changed: no ANSI
codes, flushed at once, so CI logs and ``grep`` read it. Both take what ``Feed.poll``
found; neither reads Git or the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Self, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from reconciler.cli.watch_feed import Poll, Tracked
from reconciler.live_view import (
    ExperimentView,
    MetricRow,
    VersionRow,
    duration,
    line,
    number,
    view,
)

_PHASE_STYLE = {
    "Progressing": "bold cyan",
    "AwaitingApproval": "bold yellow",
    "Promoting": "bold green",
    "RollingBack": "bold red",
    "Promoted": "bold green",
    "RolledBack": "bold red",
    "Preempted": "bold magenta",
    "Withdrawn": "bold magenta",
}
_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "no-data": "yellow"}


class PlainOutput:
    """One line per state commit and per event of the watch; nothing when nothing changed."""

    def __init__(self, stream: TextIO, *, url: str, interval: float) -> None:
        """Write to ``stream`` (flushed after every line) about the Env repo at ``url``."""
        self._stream = stream
        self._url = url
        self._interval = interval
        self._last: dict[str, ExperimentView] = {}
        self._failing = False
        self._said: set[str] = set()
        self._waiting: str | None = None

    def show(self, poll: Poll) -> None:
        """Print what is new in ``poll``."""
        if poll.error is not None:
            if not self._failing:
                self.say(
                    f"cannot fetch {self._url}: {poll.error}; retrying every {self._interval:g}s"
                )
            self._failing = True
            return
        if self._failing:
            self.say(f"fetched {self._url} again")
            self._failing = False
        for problem in poll.invalid:
            if problem not in self._said:
                self._said.add(problem)
                self.say(problem)
        if poll.left_out:
            self.say(f"{poll.left_out} earlier state commits since the last fetch not shown")
        for tracked in poll.new:
            current = _view(tracked, poll, poll.at)
            self._write(line(current, self._last.get(current.id)))
            self._last[current.id] = current
        waiting = poll.waiting or (None if poll.states else _nothing_live(poll))
        if waiting is not None and waiting != self._waiting:
            self.say(f"waiting: {waiting}")
        self._waiting = waiting

    def tick(self, now: float) -> None:
        """Nothing: plain output changes only when a poll brings something."""

    def say(self, text: str) -> None:
        """Print one line about the watch itself."""
        self._write(f"watch: {text}")

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


class RichOutput:
    """A live view of every experiment watched, redrawn at each poll and as clocks move."""

    def __init__(self, console: Console, *, url: str, interval: float, state_branch: str) -> None:
        """Draw on ``console`` (a terminal); ``url`` and ``state_branch`` name the source."""
        self._console = console
        self._url = url
        self._interval = interval
        self._branch = state_branch
        self._poll: Poll | None = None
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> Self:
        """Start drawing."""
        self._live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop drawing; the last frame stays on the terminal."""
        self._live.stop()

    def show(self, poll: Poll) -> None:
        """Redraw with what ``poll`` found."""
        self._poll = poll
        self.tick(poll.at)

    def tick(self, now: float) -> None:
        """Redraw at ``now`` (ages and countdowns move)."""
        if self._poll is None:
            return
        frame = screen(
            self._poll, now, url=self._url, interval=self._interval, state_branch=self._branch
        )
        self._live.update(frame, refresh=True)

    def say(self, text: str) -> None:
        """Print one line under the view."""
        self._live.console.print(Text(f"watch: {text}"))


def screen(
    poll: Poll, now: float, *, url: str, interval: float, state_branch: str
) -> RenderableType:
    """The whole view: a panel per experiment, then where it comes from and how fresh it is."""
    views = [_view(tracked, poll, now) for tracked in poll.states]
    parts: list[RenderableType] = [panel(v, observed=bool(poll.observed)) for v in views]
    waiting = poll.waiting or (None if views else _nothing_live(poll))
    if waiting:
        parts.append(Text(f"waiting: {waiting}", style="yellow"))
    parts.extend(Text(problem, style="red") for problem in poll.invalid)
    tip = f"{state_branch} at {poll.tip[:12]}" if poll.tip else f"no {state_branch} yet"
    footer = Text(
        f"{url} · {tip} · fetched {duration(now - poll.at)} ago, every {interval:g}s · "
        "Ctrl-C quits",
        style="dim",
    )
    parts.append(footer)
    if poll.error is not None:
        parts.append(Text(f"fetch failed: {poll.error}; retrying every {interval:g}s", "red"))
    return Group(*parts)


def panel(current: ExperimentView, *, observed: bool = False) -> Panel:
    """One experiment: its status lines and its versions' table."""
    style = _PHASE_STYLE.get(current.phase, "bold")
    title = Text.assemble((current.key, "bold"), f" @{current.id.partition('@')[2]}")
    subtitle = f"target {current.target}" + (
        f" · state {current.commit[:12]}" if current.commit else ""
    )
    body = Group(*_status_lines(current, style), versions_table(current, observed=observed))
    border = style.replace("bold ", "") if current.final or current.gate else "blue"
    return Panel(body, title=title, subtitle=subtitle, border_style=border, expand=True)


def _status_lines(current: ExperimentView, style: str) -> Iterator[Text]:
    head = Text.assemble((current.phase, style))
    if current.paused:
        head.append(", Paused", style="bold yellow")
    head.append(f"  iteration {current.iteration}/{current.iterations}")
    head.append(f"  {'ran' if current.final else 'age'} {duration(current.age)}")
    if current.next_in is not None:
        left = duration(current.next_in)
        head.append("  next iteration " + ("due" if left == "0s" else "in "))
        if left != "0s":
            head.append(left, style="bold")
    yield head
    labelled = (
        ("AwaitingApproval: ", current.gate, "yellow"),
        ("Paused ", current.paused, "yellow"),
        ("Held: ", current.held, "red"),
        ("Reason: ", current.reason, ""),
        ("Last command: ", current.command, ""),
        ("Cluster: ", current.observed, "" if current.observed == "as recorded" else "red"),
    )
    for label, value, value_style in labelled:
        if value:
            yield Text.assemble((label, "bold"), (value, value_style))
    if current.outcome_commit:
        won = f" (winner {current.winner})" if current.winner else ""
        yield Text.assemble(("Outcome: ", "bold"), (current.outcome_commit[:12], style), won)


def versions_table(current: ExperimentView, *, observed: bool = False) -> Table:
    """A row per version and metric: weights, verdict, value against its limit."""
    judged = f"metrics of iteration {current.judged}" if current.judged else "not judged yet"
    baseline = next((v.version for v in current.versions if v.baseline), None)
    caption = f"{judged} · baseline {baseline}" if baseline else judged
    table = Table(
        box=box.SIMPLE_HEAD,
        caption=caption,
        caption_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("VERSION", overflow="fold")
    table.add_column("WEIGHT", justify="right")
    if observed:
        table.add_column("CLUSTER", justify="right")
    table.add_column("VERDICT", no_wrap=True)
    table.add_column("REQUESTS", justify="right")
    table.add_column("METRIC", overflow="fold")
    for name in ("VALUE", "LIMIT", "BOUND"):
        table.add_column(name, justify="right")
    for version in current.versions:
        for index, metric in enumerate(version.metrics or (None,)):
            first = index == 0
            cells = _version_cells(version, observed=observed) if first else _blank(observed)
            table.add_row(*cells, *_metric_cells(metric))
    return table


def _version_cells(version: VersionRow, *, observed: bool) -> list[Text | str]:
    name = Text(version.version, style="" if version.baseline else "bold")
    cells: list[Text | str] = [name, f"{version.weight}%"]
    if observed:
        seen = "-" if version.observed is None else f"{version.observed}%"
        style = "" if version.observed in (None, version.weight) else "bold red"
        cells.append(Text(seen, style=style))
    needs = f" (needs ~{version.needs:,})" if version.needs else ""
    cells.append(Text(version.verdict or "-", style=_VERDICT_STYLE.get(version.verdict, "")))
    cells.append(("-" if version.requests is None else f"{version.requests:,}") + needs)
    return cells


def _blank(observed: bool) -> list[Text | str]:
    return [""] * (5 if observed else 4)


def _metric_cells(metric: MetricRow | None) -> list[Text | str]:
    if metric is None:
        return ["-", "", "", ""]
    if metric.value is None:
        value = Text("no data", style="yellow")
    else:
        value = Text(number(metric.value), style="bold red" if metric.within is False else "")
    bound = "" if metric.bound is None else number(metric.bound)
    # Without its provider (``istio/``), as ``history`` shows it: the table stays narrow.
    return [metric.metric.rsplit("/", 1)[-1], value, metric.limit or "-", bound]


def _view(tracked: Tracked, poll: Poll, now: float) -> ExperimentView:
    """The view of one state, with the cluster's weights when the poll read them for its run."""
    found = None if tracked.state.archived else poll.observed.get(tracked.state.id)
    return view(tracked.state, now, commit=tracked.commit, observed=found)


def _nothing_live(poll: Poll) -> str | None:
    if poll.error is not None:
        return None
    return "no live experiments yet" if poll.tip else "no state branch yet"
