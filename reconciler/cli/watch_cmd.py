"""``reconciler watch``: follow experiments live as state commits arrive, and wait on one.

It fetches the Env repo every ``--interval`` seconds (``Feed``) and draws what it found
(``RichOutput`` on a terminal, ``PlainOutput`` elsewhere). Named, it follows one run of
an experiment and exits with a code that says how the run ended, so CI can wait on it:
``reconciler watch shop/checkout && deploy-next``. A failed fetch is shown and retried,
never fatal once the repo was read; only a repo that cannot be read at start (its URL,
credentials, main branch) ends it with ``EXIT_UNREADABLE``. It only reads: nothing is
written to the Env repo or the cluster. ``follow`` takes the clock and ``sleep``, so a
test drives time.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import click
from rich.console import Console

from reconciler import config
from reconciler.cli.repo_options import open_store, repo_options, require_branches
from reconciler.cli.settings import settings_from
from reconciler.cli.watch_feed import Feed, Poll
from reconciler.cli.watch_render import PlainOutput, RichOutput
from reconciler.cluster.client import KubeSettings, connect
from reconciler.cluster.kube import KubeCluster
from reconciler.config.options import KUBERNETES
from reconciler.controller.isolation import describe
from reconciler.errors import ReconcilerError
from reconciler.gitstore.state_branch import archive_path
from reconciler.live_view import EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_TIMEOUT, EXIT_UNREADABLE
from reconciler.ports import Heads

EXIT_CODES = """\b
Exit status with NAMESPACE/NAME, once the run ended:
  0    promoted (a candidate won, or a Conformance run passed)
  1    rolled back
  2    the Env repo could not be read (URL, credentials, main branch)
  3    preempted by a newer run, or its file left main: never promoted
  4    --timeout passed first
  130  interrupted (Ctrl-C)
"""
REDRAW = 1.0
"""Seconds between redraws of the live view between fetches (its clocks move)."""


class Source(Protocol):
    """What ``follow`` polls: a ``Feed``."""

    def poll(self, now: float, heads: Heads | None = None) -> Poll:
        """Fetch (unless ``heads`` were just fetched) and say what changed."""


class Output(Protocol):
    """Where the watch draws: ``RichOutput`` or ``PlainOutput``."""

    def show(self, poll: Poll) -> None:
        """Draw what a poll found."""

    def tick(self, now: float) -> None:
        """Redraw at ``now`` between polls."""

    def say(self, text: str) -> None:
        """One line about the watch itself."""


def follow(
    feed: Source,
    output: Output,
    *,
    interval: float,
    timeout: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    heads: Heads | None = None,
) -> tuple[int, Poll]:
    """Poll ``feed`` every ``interval`` seconds until the followed run ends, or ``timeout``.

    ``heads``: the first poll's, already fetched. Watching every experiment, it returns
    only at ``timeout`` (with ``EXIT_STOPPED``). Returns the exit code and the last poll.
    """
    started = clock()
    poll = feed.poll(started, heads)
    output.show(poll)
    next_fetch = started + interval
    deadline = math.inf if timeout is None else started + timeout
    while True:
        if poll.ended is not None:
            return poll.ended, poll
        now = clock()
        if now >= deadline:
            return (EXIT_TIMEOUT if poll.pick is not None else EXIT_STOPPED), poll
        if now >= next_fetch:
            poll = feed.poll(now)
            output.show(poll)
            next_fetch = now + interval
            continue
        output.tick(now)
        sleep(max(0.0, min(REDRAW, next_fetch - now, deadline - now)))


def parse_target(text: str | None) -> tuple[str | None, str | None]:
    """``namespace/name[@run]`` as (``namespace/name``, the run's suffix); (None, None): all.

    Raises:
        click.BadParameter: not ``namespace/name``, or not a valid name or run.
    """
    if text is None:
        return None, None
    key, _, run = text.partition("@")
    namespace, _, name = key.partition("/")
    try:
        archive_path(namespace, name, run or "x")
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r}: expected NAMESPACE/NAME or NAMESPACE/NAME@RUN ({exc})"
        ) from None
    return key, run[:12] or None


@click.command(epilog=EXIT_CODES)
@click.argument("experiment", metavar="[NAMESPACE/NAME]", required=False)
@repo_options
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between fetches of the Env repo.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds, waiting for the experiment to start included "
    "(exit 4); without NAMESPACE/NAME, stop then (exit 0). Default: never.",
)
@click.option("--plain", is_flag=True, help="Print lines even on a terminal (no live view).")
@config.with_settings(KUBERNETES)
def watch(
    experiment: str | None,
    interval: float,
    timeout: float | None,
    plain: bool,
    **options: Any,  # noqa: ANN401 - click passes options
) -> None:
    """Follow experiments live as their state commits arrive on the state branch.

    Without NAMESPACE/NAME: every live experiment, until Ctrl-C (exit 0). With it: one run
    of that experiment (NAMESPACE/NAME@RUN picks one). A run that main names but the
    reconciler has not started yet is waited for; with nothing live nor on main, the last
    archived run is shown and its code returned. On a terminal the view redraws in place;
    otherwise one line per state commit, and lines starting "watch:" about the watch
    itself. With --kubeconfig it also shows the weights the cluster carries.
    """
    key, run = parse_target(experiment)
    code = EXIT_STOPPED
    with tempfile.TemporaryDirectory(prefix="reconciler-watch-") as scratch:
        try:
            code = _watch(
                key, run, interval, timeout, plain=plain, options=options, scratch=scratch
            )
        except KeyboardInterrupt:
            code = EXIT_STOPPED if key is None else EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader left (``watch | head``): say nothing more, to nobody.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)


def _watch(
    key: str | None,
    run: str | None,
    interval: float,
    timeout: float | None,
    *,
    plain: bool,
    options: dict[str, Any],
    scratch: str,
) -> int:
    try:
        store = open_store(options, Path(scratch))
        heads = store.fetch()
        require_branches(store, heads, state=False)
        cluster = _connect(options)
    except (ReconcilerError, click.ClickException) as exc:
        text = describe(exc) if isinstance(exc, ReconcilerError) else exc.format_message()
        click.echo(f"watch: {text}", err=True)
        return EXIT_UNREADABLE
    try:
        feed = Feed(store, key=key, run=run, cluster=cluster)
        with _output(store.url, store.state_branch, interval, plain=plain) as output:
            code, poll = follow(feed, output, interval=interval, timeout=timeout, heads=heads)
            output.say(_farewell(code, poll, key, timeout or 0.0))
    finally:
        if cluster is not None:
            cluster.kube.close()
    return code


def _connect(options: dict[str, Any]) -> KubeCluster | None:
    """The cluster of ``--kubeconfig``; None without one (the watch reads Git alone)."""
    kube = settings_from(options, KUBERNETES).kubernetes
    if kube.kubeconfig is None:
        return None
    return KubeCluster(connect(KubeSettings.from_settings(kube)))


@contextlib.contextmanager
def _output(url: str, state_branch: str, interval: float, *, plain: bool) -> Iterator[Output]:
    if plain or not sys.stdout.isatty():
        yield PlainOutput(sys.stdout, url=url, interval=interval)
        return
    with RichOutput(Console(), url=url, interval=interval, state_branch=state_branch) as rich:
        yield rich


def _farewell(code: int, poll: Poll, key: str | None, timeout: float) -> str:
    state = poll.pick.state if poll.pick is not None else None
    if key is None:
        return f"stopped after {timeout:g}s"
    if state is None or state.phase.final is False:
        where = f" ({state.id}: {state.phase.value})" if state is not None else ""
        return f"gave up after {timeout:g}s: {key} has not ended{where}; exit {code}"
    won = f", winner {state.winner}" if state.winner else ""
    outcome = f", outcome {state.outcome_commit[:12]}" if state.outcome_commit else ""
    return f"{state.id} ended {state.phase.value}{won}{outcome}; exit {code}"
