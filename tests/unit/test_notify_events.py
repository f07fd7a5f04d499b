"""Which transitions are events, how they are worded and signed: the notifier's pure core."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.controller.outcomes import _not_pushed
from reconciler.controller.report import TickReport
from reconciler.engine import commands
from reconciler.engine import experiment as engine
from reconciler.engine.control import DONE, Command
from reconciler.engine.state import ExperimentState, Phase
from reconciler.notify.events import EventKind, events_of, kind_of, parse_kinds
from reconciler.notify.message import Context, link, render, signature
from reconciler.ports import Heads
from reconciler.spec.model import Approval, GateName, OnTimeout
from tests.unit.test_engine_commands import command as engine_command
from tests.unit.test_engine_drift import drift
from tests.unit.test_engine_experiment import BLOB, SPEC, Sample, observations, samples

START = 1_000.0
INTERVAL = SPEC.duration.interval_seconds
GOOD: Sample = ("ok", 0.0, 50.0, 500)
LANDED = "d" * 40
K = EventKind


def started(approval: Approval | None = None) -> engine.Transition:
    spec = SPEC if approval is None else replace(SPEC, approval=approval)
    return engine.start(spec, spec_blob=BLOB, source_commit="c" * 40, now=START)


def command(state: ExperimentState, verb: str, *, force: bool = False) -> Command:
    return engine_command(state, verb, reason="looks fine", force=force)


def test_a_run_announces_its_start_each_iteration_and_its_promotion_once() -> None:
    transitions = [started()]
    state, now = transitions[0].state, START
    while state.phase is Phase.PROGRESSING:
        now += INTERVAL
        stepped = engine.step(state, observations(GOOD), now)
        assert stepped is not None
        transitions.append(stepped)
        state = stepped.state
    assert state.phase is Phase.PROMOTING
    landed = engine.outcome_landed(state, LANDED, now + 1)
    settled = engine.traffic_settled(landed.state, now + 2, why="traffic on the baseline")
    kinds = [kind_of(t) for t in transitions]
    assert kinds == [K.STARTED] + [K.STEP] * SPEC.duration.iterations
    assert kind_of(landed, landed=True) is K.PROMOTED
    assert kind_of(landed) is None  # without the tick saying it landed: a later commit
    assert kind_of(settled) is None


def test_a_gated_start_waits_then_starts_when_approved() -> None:
    gated = started(Approval(before=(GateName.START,)))
    assert kind_of(gated) is K.AWAITING_APPROVAL
    answer = commands.answer(
        gated.state, [command(gated.state, "approve")], START + 5, confirmed=True
    )
    assert answer.state.phase is Phase.PROGRESSING
    assert kind_of(answer) is K.STARTED


def test_a_start_gate_that_times_out_and_proceeds_is_a_start() -> None:
    approval = Approval(before=(GateName.START,), timeout_seconds=60, on_timeout=OnTimeout.PROCEED)
    gated = started(approval)
    proceeded = commands.gate_timeout(gated.state, START + 60)
    assert proceeded is not None
    assert kind_of(proceeded) is K.STARTED


def test_pause_resume_and_abort_are_announced_with_the_command() -> None:
    state = started().state
    paused = commands.answer(state, [command(state, "pause")], START + 1, confirmed=True)
    resumed = commands.answer(
        paused.state, [command(paused.state, "resume")], START + 2, confirmed=True
    )
    again = commands.answer(
        resumed.state, [command(resumed.state, "resume")], START + 3, confirmed=True
    )
    aborted = commands.answer(
        resumed.state, [command(resumed.state, "abort")], START + 4, confirmed=True
    )
    assert [kind_of(t) for t in (paused, resumed, again, aborted)] == [
        K.PAUSED,
        K.RESUMED,
        None,  # refused: it was not paused
        K.ABORTED,
    ]
    event = events_of([(aborted, "a" * 40)])[0]
    assert event.command is not None
    assert (event.command.command, event.command.author) == ("abort", "Alice <alice@example.com>")


def test_a_drift_set_right_again_and_a_hold_are_announced_but_not_the_release() -> None:
    state = started().state
    transitions = []
    for n in range(engine.HOLD_AFTER):
        transition = engine.drifted(state, drift(state, 0), START + n + 1, counts=True)
        transitions.append(transition)
        state = transition.state
    assert state.held is not None
    assert [kind_of(t) for t in transitions] == [K.DRIFT_CORRECTED] * engine.HOLD_AFTER
    assert kind_of(engine.resume(state, START + 100)) is None


def test_a_preempted_run_is_announced_as_stopped_once() -> None:
    state = started().state
    preempted = engine.preempt(state, "bookinfo/other@0123456789ab", START + 1)
    withdrawn = engine.withdraw(state, START + 1, confirmed=True)
    settled = engine.traffic_settled(withdrawn.state, START + 2, why="traffic on the baseline")
    assert [kind_of(t) for t in (preempted, withdrawn, settled)] == [
        K.ROLLED_BACK,
        K.ROLLED_BACK,
        None,
    ]


# -- any sequence the engine can go through ------------------------------------------------

OPS = (
    "iterate", "iterate", "iterate", "drift", "own-write", "release", "pause", "resume",
    "abort", "promote", "force-promote", "approve", "timeout", "preempt", "withdraw",
)  # fmt: skip
APPROVALS = st.sampled_from(
    [
        None,
        Approval(before=(GateName.START,), timeout_seconds=600),
        Approval(before=(GateName.PROMOTION,), timeout_seconds=600),
        Approval(before=(GateName.START, GateName.PROMOTION), timeout_seconds=600),
    ]
)


@dataclass
class Lifecycle:
    """Engine transitions, each with the kind its cause says it is."""

    state: ExperimentState
    now: float
    seen: list[tuple[engine.Transition, EventKind | None, bool]]

    def record(
        self, transition: engine.Transition | None, kind: EventKind | None, *, landed: bool = False
    ) -> None:
        if transition is not None:
            self.seen.append((transition, kind, landed))
            self.state = transition.state

    def command(self, verb: str, *, force: bool = False) -> None:
        answer = commands.answer(
            self.state, [command(self.state, verb, force=force)], self.now, confirmed=True
        )
        record = answer.state.commands[-1]
        phase = answer.state.phase
        expected: EventKind | None = None
        if record.result == DONE:
            expected = {
                "pause": K.PAUSED,
                "resume": K.RESUMED,
                "abort": K.ABORTED,
                "promote": K.AWAITING_APPROVAL if phase is Phase.AWAITING_APPROVAL else None,
                "approve": K.STARTED if phase is Phase.PROGRESSING else None,
            }[verb]
        self.record(answer, expected)

    def apply(self, op: str, sample: Sample) -> None:  # noqa: C901, PLR0912 - one branch per op
        state = self.state
        if op == "iterate":
            self.now = max(self.now, state.last_iteration_at + INTERVAL)
            stepped = engine.step(state, observations(sample), self.now)
            if stepped is not None:
                gated = stepped.state.phase is Phase.AWAITING_APPROVAL
                self.record(stepped, K.AWAITING_APPROVAL if gated else K.STEP)
        elif op in {"drift", "own-write"}:
            if state.held is None and state.weights:
                found = drift(state, (state.weight_of("productpage-candidate") + 10) % 100)
                counts = op == "drift"
                self.record(
                    engine.drifted(state, found, self.now, counts=counts), K.DRIFT_CORRECTED
                )
        elif op == "release":
            if state.held is not None:
                self.record(engine.resume(state, self.now), None)
        elif state.held is not None:
            return
        elif op in {"pause", "resume", "abort", "promote", "approve"}:
            self.command(op)
        elif op == "force-promote":
            self.command("promote", force=True)
        elif op == "timeout":
            if state.gate is not None and state.paused is None:
                self.now = max(self.now, state.gate.opened_at + state.spec.approval.timeout_seconds)
                self.record(commands.gate_timeout(state, self.now), None)  # rolls back
        elif op == "preempt":
            self.record(
                engine.preempt(state, "bookinfo/newer@0123456789ab", self.now), K.ROLLED_BACK
            )
        elif op == "withdraw":
            self.record(engine.withdraw(state, self.now, confirmed=True), K.ROLLED_BACK)

    def finish(self) -> None:
        """Land a decided outcome, then confirm the final weights (not announced)."""
        if self.state.phase.deciding:
            self.now += 1
            landed = engine.outcome_landed(self.state, LANDED, self.now)
            promoted = landed.state.phase is Phase.PROMOTED
            self.record(landed, K.PROMOTED if promoted else K.ROLLED_BACK, landed=True)
        if self.state.settling:
            self.now += 1
            self.record(engine.traffic_settled(self.state, self.now, why="settled"), None)


@settings(max_examples=400, deadline=None)
@given(
    APPROVALS,
    st.lists(st.tuples(st.sampled_from(OPS), samples, st.integers(1, 400)), max_size=16),
)
def test_every_transition_is_announced_as_what_caused_it(
    approval: Approval | None, ops: list[tuple[str, Sample, int]]
) -> None:
    first = started(approval)
    gated = first.state.phase is Phase.AWAITING_APPROVAL
    life = Lifecycle(
        first.state, START, [(first, K.AWAITING_APPROVAL if gated else K.STARTED, False)]
    )
    for op, sample, pause in ops:
        if not commands.running(life.state):
            break
        life.now += pause
        life.apply(op, sample)
    life.finish()
    for transition, expected, landed in life.seen:
        assert kind_of(transition, landed=landed) is expected, transition.summary
    # The tick's lists give the same, one event per announcing commit, the commit its id.
    recorded = [(t, f"{n:040x}") for n, (t, _, _) in enumerate(life.seen)]
    outcomes = [(t.state.id, LANDED) for t, _, landed in life.seen if landed]
    events = events_of(recorded, outcomes)
    assert [e.kind for e in events] == [k for _, k, _ in life.seen if k is not None]
    assert [e.id for e in events] == [
        commit for (t, commit), (_, k, _) in zip(recorded, life.seen, strict=True) if k
    ]


# -- the tick's lists ----------------------------------------------------------------------


def test_only_the_first_commit_carrying_a_landed_outcome_announces_it() -> None:
    state = started().state
    decided = engine.decide(state, None, "failed", "productpage: iteration 1/10")
    landed = engine.outcome_landed(decided.state, LANDED, START + 1)
    settled = engine.traffic_settled(landed.state, START + 2, why="traffic on the baseline")
    recorded = [(landed, "1" * 40), (settled, "2" * 40)]
    events = events_of(recorded, [(state.id, LANDED)])
    assert [(e.kind, e.id, e.outcome_commit) for e in events] == [(K.ROLLED_BACK, "1" * 40, LANDED)]
    assert events_of(recorded) == []  # not landed by this tick: announced by the one that did


def test_an_outcome_that_cannot_reach_main_is_one_event_per_run() -> None:
    state = engine.decide(started().state, "productpage-candidate", "won", "s").state
    report = TickReport(Heads(main="m" * 40, state="s" * 40))
    _not_pushed(state, "main moved 5 times", report)
    _not_pushed(state, "main moved 5 times", report)
    report.errors.append("bookinfo/other: setting weights: refused")
    events = events_of([], [], report.errors)
    assert len(events) == 1
    event = events[0]
    assert event.kind is K.OUTCOME_PUSH_FAILED
    assert event.id == f"outcome-push-failed:{state.id}"
    assert event.commit is None
    assert "outcome promoted not pushed to main: main moved 5 times" in event.summary


def test_event_names_are_checked_and_none_means_all() -> None:
    assert parse_kinds([]) == frozenset(EventKind)
    assert parse_kinds(["promoted", " Rolled-Back "]) == {K.PROMOTED, K.ROLLED_BACK}
    with pytest.raises(ValueError, match=r"unknown event 'promote' \(known: started, step"):
        parse_kinds(["promote"])


# -- words and signatures ------------------------------------------------------------------


def test_a_message_links_the_state_commit_or_names_it_and_its_branch() -> None:
    first = started()
    event = events_of([(first, "3f2a9c1e07b4" + "0" * 28)])[0]
    web = Context("https://git.example/env.git", "reconciler-state", "https://web/c/{commit}")
    plain = Context("https://git.example/env.git", "reconciler-state")
    linked, named = render(event, web), render(event, plain)
    assert linked.title == "bookinfo/productpage-canary: started"
    assert f"State commit: https://web/c/{event.id}" in linked.text
    assert (
        f"State commit: {event.id} on branch reconciler-state of https://git.example/env.git"
        in named.text
    )
    body = json.loads(linked.body)
    assert body["id"] == event.id == body["commit"]
    assert body["url"] == f"https://web/c/{event.id}"
    assert body["event"] == "started"
    assert body["rolloutId"] == first.state.id
    assert json.loads(named.body)["url"] is None
    # canonical: the bytes signed are the bytes a receiver parses back to the same
    assert linked.body == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@given(st.text(max_size=40), st.text(alphabet="0123456789abcdef", min_size=40, max_size=40))
def test_a_link_replaces_only_the_commit_placeholder(prefix: str, commit: str) -> None:
    template = prefix + "/{commit}/{other}"
    assert link(template, commit) == prefix + f"/{commit}/{{other}}"
    assert link(None, commit) is None
    assert link(template, None) is None


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=256), st.binary(max_size=256))
def test_the_signature_is_githubs_hmac_sha256_of_the_exact_body(
    key: bytes, body: bytes, other: bytes
) -> None:
    signed = signature(key, body)
    assert signed == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    assert (signature(key, other) == signed) == (other == body)
