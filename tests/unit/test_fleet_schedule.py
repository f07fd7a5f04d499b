"""When each Env repo of a fleet ticks: wake-ups, one worker at a time, backoff, removal."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.fleet.schedule import MAX_BACKOFF, TRIP_AFTER, Schedule

REPOS = ("https://git.example/a/env", "https://git.example/b/env", "/srv/env")


@dataclass(frozen=True)
class Op:
    """One thing the runner does to the schedule (``number``: an interval or seconds)."""

    kind: str
    repo: str
    number: float = 0.0
    ok: bool = True


NO_NUMBER = st.just(0.0)


def ops(kind: str, number: st.SearchStrategy[float] = NO_NUMBER) -> st.SearchStrategy[Op]:
    return st.builds(Op, st.just(kind), st.sampled_from(REPOS), number, st.booleans())


OPERATIONS = st.lists(
    st.one_of(
        ops("add", st.floats(min_value=0.5, max_value=600)),
        ops("remove"),
        ops("wake"),
        ops("dispatch"),
        ops("finish"),
        ops("postpone"),
        ops("advance", st.floats(min_value=0, max_value=1000)),
    ),
    max_size=80,
)


@dataclass
class Runner:
    """Drives a ``Schedule`` as the runner does, and remembers what a user would see."""

    schedule: Schedule = field(default_factory=Schedule)
    now: float = 1000.0
    served: dict[str, float] = field(default_factory=dict)
    """The repos added and not removed since, with their interval."""
    ticking: dict[str, int] = field(default_factory=dict)
    """Ticks in progress by repo (a worker still holds each)."""
    failed: dict[str, int] = field(default_factory=dict)
    """Failed ticks in a row of each served repo."""
    woken: set[str] = field(default_factory=set)
    """Repos woken (a push) while a worker ticked them."""

    def apply(self, op: Op) -> None:
        getattr(self, op.kind)(op)
        self.check()

    def add(self, op: Op) -> None:
        self.schedule.add(op.repo, op.number, self.now)
        if op.repo not in self.served:
            self.failed[op.repo] = 0
            if self.ticking.get(op.repo):
                self.woken.add(op.repo)  # served again: its first tick is due at once
        self.served[op.repo] = op.number

    def remove(self, op: Op) -> None:
        self.schedule.remove(op.repo)
        self.served.pop(op.repo, None)
        self.woken.discard(op.repo)
        assert op.repo not in self.schedule
        assert self.schedule.wake(op.repo, self.now) is False

    def wake(self, op: Op) -> None:
        was_open = op.repo in self.served and self.schedule.circuit_open(op.repo)
        accepted = self.schedule.wake(op.repo, self.now)
        assert accepted == (op.repo in self.served and not was_open)
        if not accepted:
            return
        if self.ticking.get(op.repo):
            self.woken.add(op.repo)
        else:
            assert op.repo in self.schedule.due(self.now)

    def dispatch(self, _op: Op) -> None:
        for repo in self.schedule.due(self.now):
            self.schedule.start(repo)
            self.ticking[repo] = self.ticking.get(repo, 0) + 1

    def finish(self, op: Op) -> None:
        if not self.ticking.get(op.repo):
            return  # no worker holds this repo: nothing to finish
        self.ticking[op.repo] -= 1
        self.schedule.finish(op.repo, self.now, ok=op.ok)
        if op.repo not in self.served:
            assert op.repo not in self.schedule  # a finished tick does not bring it back
            return
        self.failed[op.repo] = 0 if op.ok else self.failed[op.repo] + 1
        failures = self.failed[op.repo]
        assert self.schedule.failures(op.repo) == failures
        assert self.schedule.circuit_open(op.repo) == (failures >= TRIP_AFTER)
        due_now = op.repo in self.schedule.due(self.now)
        if op.repo in self.woken and failures < TRIP_AFTER:
            assert due_now  # the push during the tick is not missed
        else:
            assert not due_now  # it waits its interval, or its backoff
        if failures >= TRIP_AFTER:
            wait = Schedule.wait_after(self.served[op.repo], failures)
            assert self.schedule.retry_in(op.repo, self.now) == pytest.approx(wait, abs=1e-3)
        else:
            assert self.schedule.retry_in(op.repo, self.now) is None
        self.woken.discard(op.repo)

    def postpone(self, op: Op) -> None:
        self.schedule.postpone(op.repo, self.now)
        if op.repo in self.served and not self.ticking.get(op.repo):
            assert op.repo not in self.schedule.due(self.now)

    def advance(self, op: Op) -> None:
        self.now += op.number

    def check(self) -> None:
        due = self.schedule.due(self.now)
        assert len(due) == len(set(due))
        for repo in due:
            assert repo in self.served  # a removed repo never comes back
            assert not self.ticking.get(repo)  # never handed to two workers at once
        wait = self.schedule.next_wait(self.now)
        if due:
            assert wait == 0
        else:
            assert wait > 0
        if not self.served:
            assert wait == math.inf


@given(OPERATIONS)
def test_any_sequence_of_events_keeps_the_promises_of_the_schedule(operations: list[Op]) -> None:
    runner = Runner()
    for op in operations:
        runner.apply(op)


@given(OPERATIONS)
def test_a_repo_is_never_handed_to_two_workers_at_once(operations: list[Op]) -> None:
    runner = Runner()
    for op in operations:
        runner.apply(op)
        for repo in runner.served:
            assert runner.schedule.running(repo) == bool(runner.ticking.get(repo))


@given(
    st.floats(min_value=0.01, max_value=10_000),
    st.integers(min_value=0, max_value=200),
)
def test_the_wait_after_failures_doubles_up_to_the_cap_and_never_undercuts_the_interval(
    interval: float, failures: int
) -> None:
    wait = Schedule.wait_after(interval, failures)
    assert wait >= interval
    assert wait <= max(interval, MAX_BACKOFF)
    if failures < TRIP_AFTER:
        assert wait == interval
    elif interval < MAX_BACKOFF:
        following = Schedule.wait_after(interval, failures + 1)
        assert following == min(MAX_BACKOFF, 2 * wait)


@given(st.integers(min_value=TRIP_AFTER, max_value=40), st.floats(min_value=1, max_value=600))
def test_one_success_closes_the_circuit_and_the_repo_ticks_at_its_interval_again(
    failures: int, interval: float
) -> None:
    schedule = Schedule()
    now = 0.0
    schedule.add("env", interval, now)
    for _ in range(failures):
        now += schedule.next_wait(now)
        assert schedule.due(now) == ["env"]
        schedule.start("env")
        schedule.finish("env", now, ok=False)
    assert schedule.circuit_open("env")
    assert schedule.wake("env", now) is False  # a webhook does not shorten the backoff
    assert schedule.due(now) == []
    now += schedule.next_wait(now)
    schedule.start("env")
    schedule.finish("env", now, ok=True)
    assert not schedule.circuit_open("env")
    assert (schedule.failures("env"), schedule.retry_in("env", now)) == (0, None)
    assert schedule.next_wait(now) == pytest.approx(interval)
    assert schedule.wake("env", now) is True
    assert schedule.due(now) == ["env"]


def test_a_failing_repo_waits_its_interval_then_doubles_up_to_five_minutes() -> None:
    schedule = Schedule()
    now = 0.0
    schedule.add("env", 10, now)
    waits = []
    for _ in range(9):
        assert schedule.due(now) == ["env"]
        schedule.start("env")
        schedule.finish("env", now, ok=False)
        wait = schedule.next_wait(now)
        waits.append(wait)
        now += wait
    assert waits == [10, 10, 20, 40, 80, 160, 300, 300, 300]
    assert [Schedule.wait_after(10, n) for n in range(1, 10)] == waits


def test_an_interval_longer_than_the_cap_is_kept_while_failing() -> None:
    assert [Schedule.wait_after(600, n) for n in range(1, 6)] == [600] * 5


def test_a_push_during_a_tick_makes_the_repo_due_as_soon_as_the_tick_ends() -> None:
    schedule = Schedule()
    schedule.add("env", 30, 0)
    schedule.start("env")
    assert schedule.wake("env", 1) is True
    assert schedule.due(1) == []  # not while a worker holds it
    schedule.finish("env", 2, ok=True)
    assert schedule.due(2) == ["env"]
    assert schedule.next_wait(2) == 0
    schedule.start("env")
    schedule.finish("env", 3, ok=True)
    assert schedule.due(3) == []  # one wake-up, one extra tick
    assert schedule.next_wait(3) == 30


def test_a_push_during_the_tick_that_opens_the_circuit_waits_out_the_backoff() -> None:
    schedule = Schedule()
    schedule.add("env", 10, 0)
    for now in (0, 10):
        schedule.start("env")
        schedule.finish("env", now, ok=False)
    schedule.start("env")
    assert schedule.wake("env", 20) is True  # the circuit is still closed
    schedule.finish("env", 20, ok=False)
    assert schedule.due(20) == []
    assert schedule.retry_in("env", 20) == 20


def test_the_longest_overdue_repo_goes_first() -> None:
    schedule = Schedule()
    schedule.add("b", 10, 5)
    schedule.add("a", 10, 7)
    schedule.add("c", 10, 1)
    assert schedule.due(6) == ["c", "b"]
    assert schedule.due(7) == ["c", "b", "a"]


def test_adding_a_served_repo_again_keeps_its_turn_and_takes_the_new_interval() -> None:
    schedule = Schedule()
    schedule.add("env", 30, 0)
    schedule.start("env")
    schedule.finish("env", 0, ok=True)
    schedule.add("env", 5, 1)
    assert schedule.due(1) == []  # not ticked again because the settings were reloaded
    assert schedule.next_wait(1) == 29
    schedule.start("env")
    schedule.finish("env", 30, ok=True)
    assert schedule.next_wait(30) == 5


def test_a_follower_looks_again_after_its_interval() -> None:
    schedule = Schedule()
    schedule.add("env", 15, 0)
    schedule.postpone("env", 0)
    assert schedule.due(14.9) == []
    assert schedule.due(15) == ["env"]


@pytest.mark.parametrize("running", [False, True])
def test_a_removed_repo_is_forgotten_even_when_its_tick_ends_later(running: bool) -> None:
    schedule = Schedule()
    schedule.add("env", 10, 0)
    if running:
        schedule.start("env")
    schedule.remove("env")
    schedule.finish("env", 1, ok=False)
    assert "env" not in schedule
    assert schedule.due(1000) == []
    assert schedule.next_wait(1000) == math.inf
    assert schedule.wake("env", 1000) is False


def test_nothing_scheduled_or_everything_ticking_means_an_endless_wait() -> None:
    schedule = Schedule()
    assert schedule.next_wait(0) == math.inf
    schedule.add("env", 10, 0)
    schedule.start("env")
    assert schedule.next_wait(0) == math.inf


def test_a_repo_dropped_and_served_again_during_its_tick_is_not_ticked_twice_at_once() -> None:
    schedule = Schedule()
    schedule.add("env", 10, 0)
    schedule.start("env")  # a worker ticks it, slowly (a Git server that hangs)
    schedule.remove("env")  # a reload drops it ...
    schedule.add("env", 10, 1)  # ... and the next one serves it again
    assert "env" in schedule
    assert schedule.due(1) == []  # the first tick still runs
    schedule.finish("env", 2, ok=True)
    assert schedule.due(2) == ["env"]  # served again: its first tick comes right after
    schedule.start("env")
    assert schedule.due(2) == []
