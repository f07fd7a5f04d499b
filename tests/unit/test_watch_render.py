"""The watch's two outputs and its polling loop, on states built directly and a driven clock."""

from __future__ import annotations

import io
from dataclasses import replace

from rich.console import Console

from reconciler.cli.watch_cmd import REDRAW, follow
from reconciler.cli.watch_feed import Poll, Tracked
from reconciler.cli.watch_render import PlainOutput, screen
from reconciler.engine.control import CommandRecord, Gate
from reconciler.engine.state import Phase
from reconciler.live_view import EXIT_ROLLED_BACK, EXIT_TIMEOUT, Observed, Pick
from reconciler.ports import Heads
from reconciler.spec.model import Approval, GateName
from reconciler.testing import DrivenClock
from tests.watchstates import CANDIDATE, PAUSE, SPEC, STABLE, START, run

URL = "https://git.example.com/env.git"


def rendered(poll: Poll, now: float, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True)
    console.print(screen(poll, now, url=URL, interval=5, state_branch="reconciler-state"))
    return console.export_text()


def test_the_live_view_shows_phase_timings_weights_and_each_metric_against_its_limit() -> None:
    state = run()
    poll = Poll(START + 2, "f" * 40, states=(Tracked(state, "1" * 40),))
    text = rendered(poll, START + 2.25)
    assert "bookinfo/productpage-canary @4eb5effffa60" in text
    assert "Progressing  iteration 2/6  age 2s  next iteration in 1s" in text
    candidate = next(row for row in text.splitlines() if CANDIDATE in row and "%" in row)
    weight = state.weight_of(CANDIDATE)
    assert f"{weight}%" in candidate
    assert "pass" in candidate
    assert "error-rate" in candidate
    assert "0.002" in candidate
    assert "<= 0.01" in candidate
    assert "mean-latency" in text
    assert "<= 300" in text
    assert "metrics of iteration 2 · baseline productpage-stable" in text
    assert "reconciler-state at ffffffffffff" in text


def test_the_live_view_shows_the_gate_the_pause_the_last_command_and_the_cluster() -> None:
    spec = replace(SPEC, approval=Approval(before=(GateName.PROMOTION,), timeout_seconds=600))
    approve = CommandRecord("c" * 40, "resume", "Bo <bo@example.com>", START + 50, "done", "")
    state = replace(
        run(spec),
        phase=Phase.AWAITING_APPROVAL,
        gate=Gate(before="promotion", opened_at=START + 60, winner=CANDIDATE),
        commands=(approve,),
        paused=PAUSE,
    )
    observed = {state.id: Observed("drifted", {STABLE: 100, CANDIDATE: 0}, "set by kubectl")}
    poll = Poll(START + 120, "f" * 40, states=(Tracked(state),), observed=observed)
    text = rendered(poll, START + 120, width=160)
    assert "AwaitingApproval, Paused  iteration 2/6  age 2m00s" in text
    assert "next iteration" not in text
    assert (
        "AwaitingApproval: before promotion of productpage-candidate, since "
        "2027-01-15T08:01:00Z (1m00s ago), times out in 9m00s (then rollback)"
    ) in text
    assert 'Paused by Ann <ann@example.com> 1m30s ago: "looking at the dashboards"' in text
    assert "Last command: resume by Bo <bo@example.com> 1m10s ago: done" in text
    assert "Cluster: drifted: productpage-stable=100,productpage-candidate=0" in text
    assert "CLUSTER" in text
    stable = next(row for row in text.splitlines() if STABLE in row and "%" in row)
    assert "100%" in stable


def test_a_finished_run_shows_its_outcome_and_the_view_survives_a_failed_fetch() -> None:
    state = replace(
        run(), phase=Phase.PROMOTED, winner=CANDIDATE, outcome_commit="0123456789ab" + "0" * 28
    )
    poll = Poll(START + 10, "f" * 40, "could not resolve host", states=(Tracked(state),))
    text = rendered(poll, START + 14)
    assert "Promoted  iteration 2/6  ran 2s" in text
    assert "Outcome: 0123456789ab (winner productpage-candidate)" in text
    assert "fetch failed: could not resolve host; retrying every 5s" in text
    assert "fetched 4s ago" in text


def test_plain_output_prints_one_line_per_state_commit_and_a_fetch_failure_once() -> None:
    out = io.StringIO()
    plain = PlainOutput(out, url=URL, interval=5)
    first, second = run(iterations=1), run(iterations=2)
    plain.show(Poll(START, None, pick=Pick(None, "bookinfo/x@1", "bookinfo/x@1 has not started")))
    new = (Tracked(first, "1" * 40), Tracked(second, "2" * 40))
    plain.show(Poll(START + 5, "f" * 40, states=new[1:], new=new))
    plain.show(Poll(START + 10, "f" * 40, "connection refused"))
    plain.show(Poll(START + 15, "f" * 40, "connection refused"))
    plain.show(Poll(START + 20, "f" * 40, states=(Tracked(second),)))
    lines = out.getvalue().splitlines()
    assert lines[0] == "watch: waiting: bookinfo/x@1 has not started"
    assert lines[1].startswith("2027-01-15T08:00:01Z bookinfo/productpage-canary@4eb5effffa60")
    assert lines[1].endswith("state=111111111111 -- " + " ".join(first.reason.split()))
    assert "iteration=2/6" in lines[2]
    assert "state=222222222222" in lines[2]
    assert lines[3:] == [
        f"watch: cannot fetch {URL}: connection refused; retrying every 5s",
        f"watch: fetched {URL} again",
    ]
    assert "\x1b" not in out.getvalue()


class Script:
    """A feed whose polls are given in advance; the last one repeats."""

    def __init__(self, *polls: Poll) -> None:
        self.polls = list(polls)
        self.asked: list[float] = []

    def poll(self, now: float, heads: Heads | None = None) -> Poll:
        assert heads is None
        self.asked.append(now)
        return replace(self.polls.pop(0) if len(self.polls) > 1 else self.polls[0], at=now)


class Quiet:
    def show(self, poll: Poll) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def say(self, text: str) -> None:
        pass


def test_follow_polls_every_interval_and_exits_with_the_runs_code_once_it_ended() -> None:
    clock = DrivenClock(START)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    running = Pick(run(), run().id)
    ended = Pick(replace(run(), phase=Phase.ROLLED_BACK), run().id)
    feed = Script(
        Poll(0, None, pick=running), Poll(0, None, pick=running), Poll(0, None, pick=ended)
    )
    code, last = follow(feed, Quiet(), interval=2.5, clock=clock, sleep=sleep)
    assert code == EXIT_ROLLED_BACK
    assert last.pick == ended
    assert feed.asked == [START, START + 2.5, START + 5.0]
    assert max(slept) <= REDRAW


def test_follow_gives_up_at_the_timeout_with_its_own_code() -> None:
    clock = DrivenClock(START)
    waiting = Pick(None, "bookinfo/x@1", "bookinfo/x@1 has not started yet")
    code, _ = follow(
        Script(Poll(0, None, pick=waiting)),
        Quiet(),
        interval=5,
        timeout=12,
        clock=clock,
        sleep=clock.advance,
    )
    assert code == EXIT_TIMEOUT
    assert clock.now == START + 12
