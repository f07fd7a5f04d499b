"""The pure rules of commands and approval gates (``engine.commands``), without Git or a cluster."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import commands
from reconciler.engine import experiment as engine
from reconciler.engine.control import VERBS, Command, parse_command_file
from reconciler.engine.experiment import PushOutcome, SetWeights
from reconciler.engine.state import ExperimentState, Phase, from_json, to_json
from reconciler.spec.model import Approval, GateName, OnTimeout
from tests.unit.test_engine_experiment import BLOB, SPEC, Sample, observations, samples

START = 1_000.0
GOOD: Sample = ("ok", 0.0, 50.0, 500)
BAD: Sample = ("ok", 0.04, 50.0, 500)


def started(approval: Approval | None = None, seq: tuple[Sample, ...] = ()) -> ExperimentState:
    spec = SPEC if approval is None else replace(SPEC, approval=approval)
    state = engine.start(spec, spec_blob=BLOB, source_commit="c" * 40, now=START).state
    now = START
    for sample in seq:
        if state.phase is not Phase.PROGRESSING:
            break
        now += spec.duration.interval_seconds
        stepped = engine.step(state, observations(sample), now)
        assert stepped is not None
        state = stepped.state
    return state


def command(state: ExperimentState, verb: str, **fields: object) -> Command:
    base = Command(
        path=f"commands/{state.key}/{verb}.json",
        verb=verb,
        experiment=state.key,
        run_id=state.id,
        commit="f" * 40,
        author="Alice <alice@example.com>",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def total(state: ExperimentState) -> int:
    return sum(w for _, w in state.weights)


@settings(max_examples=300)
@given(
    st.lists(samples, max_size=4),
    st.lists(st.tuples(st.sampled_from(VERBS), st.booleans()), min_size=1, max_size=6),
)
def test_any_commands_keep_weights_whole_and_answer_each_once(
    seq: list[Sample], verbs: list[tuple[str, bool]]
) -> None:
    state = started(seq=tuple(seq))
    if not commands.running(state):
        return
    pending = [
        command(state, verb, force=force, path=f"c/{i}") for i, (verb, force) in enumerate(verbs)
    ]
    answer = commands.answer(state, pending, START + 100, confirmed=True)
    new = answer.state
    assert total(new) == 100
    assert len(new.commands) == min(len(state.commands) + len(pending), 20)
    assert answer.commands == tuple(pending)
    outcomes = [a for a in answer.actions if isinstance(a, PushOutcome)]
    assert len(outcomes) <= 1
    assert bool(outcomes) == new.phase.deciding
    if new.weights != state.weights:
        assert SetWeights(new.weights) in answer.actions
    # Nothing after the command that ended the run acted.
    done = [r for r in new.commands[len(state.commands) :] if r.result == "done"]
    ending = [r for r in done if r.command in {"abort", "promote", "approve"}]
    assert len(ending) <= 1 or new.phase is not Phase.PROGRESSING


@settings(max_examples=200)
@given(st.lists(samples, min_size=1, max_size=4))
def test_abort_always_rolls_back_to_the_baseline(seq: list[Sample]) -> None:
    state = started(seq=tuple(seq))
    if not commands.running(state):
        return
    answer = commands.answer(state, [command(state, "abort")], START + 100, confirmed=True)
    assert answer.state.phase is Phase.ROLLING_BACK
    assert dict(answer.state.weights)["productpage-candidate"] == 0
    assert PushOutcome("rolled-back", None) in answer.actions


@settings(max_examples=200)
@given(st.lists(samples, min_size=0, max_size=4))
def test_promote_without_force_promotes_only_a_candidate_that_passed_last(
    seq: list[Sample],
) -> None:
    state = started(seq=tuple(seq))
    if not commands.running(state):
        return
    answer = commands.answer(state, [command(state, "promote")], START + 100, confirmed=True)
    last = dict(state.history[-1].verdicts) if state.history else {}
    if answer.state.phase is Phase.PROMOTING:
        assert last.get(answer.state.winner or "") == "pass"
    else:
        assert answer.state.commands[-1].result == "refused"
        assert last.get("productpage-candidate") != "pass"


def test_a_forced_promotion_is_recorded_as_forced() -> None:
    state = started(seq=(BAD,))
    answer = commands.answer(
        state, [command(state, "promote", force=True)], START + 9, confirmed=True
    )
    assert answer.state.phase is Phase.PROMOTING
    assert answer.state.winner == "productpage-candidate"
    assert answer.state.commands[-1].forced
    assert "forced by Alice" in answer.state.reason


@settings(max_examples=100)
@given(st.integers(1, 50))
def test_a_paused_run_never_iterates_nor_times_out(intervals: int) -> None:
    state = started(seq=(GOOD,))
    paused = commands.answer(state, [command(state, "pause")], START + 5, confirmed=True).state
    now = START + 5 + intervals * SPEC.duration.interval_seconds
    assert engine.step(paused, observations(GOOD), now) is None
    assert paused.weights == state.weights
    resumed = commands.answer(paused, [command(paused, "resume")], now, confirmed=True).state
    assert resumed.paused is None
    assert engine.step(resumed, observations(GOOD), now) is None  # a full interval first
    assert engine.step(resumed, observations(GOOD), now + SPEC.duration.interval_seconds)


def test_a_promotion_gate_holds_weights_and_approval_promotes_the_recorded_winner() -> None:
    approval = Approval(before=(GateName.PROMOTION,), timeout_seconds=60)
    state = started(approval, seq=(GOOD,) * SPEC.duration.iterations)
    assert state.phase is Phase.AWAITING_APPROVAL
    assert state.gate is not None
    assert state.gate.winner == "productpage-candidate"
    before = state
    approved = commands.answer(state, [command(state, "approve")], START + 99, confirmed=True)
    assert approved.state.phase is Phase.PROMOTING
    assert approved.state.winner == "productpage-candidate"
    assert approved.state.gate is None
    assert before.weights == state.weights


@given(st.sampled_from(list(OnTimeout)), st.integers(0, 200))
def test_an_unanswered_gate_acts_only_after_its_timeout(on_timeout: OnTimeout, waited: int) -> None:
    approval = Approval(before=(GateName.START,), timeout_seconds=100, on_timeout=on_timeout)
    state = started(approval)
    assert state.phase is Phase.AWAITING_APPROVAL
    assert dict(state.weights)["productpage-candidate"] == 0
    timed = commands.gate_timeout(state, START + waited)
    if waited < 100:
        assert timed is None
        return
    assert timed is not None
    if on_timeout is OnTimeout.ROLLBACK:
        assert timed.state.phase is Phase.ROLLING_BACK
    else:
        assert timed.state.phase is Phase.PROGRESSING
        assert dict(timed.state.weights)["productpage-candidate"] > 0


def test_a_signed_gate_refuses_an_unsigned_approval() -> None:
    approval = Approval(before=(GateName.START,), require_signed=True)
    state = started(approval)
    unsigned = commands.answer(
        state, [command(state, "approve", signature="unsigned")], START, confirmed=True
    )
    assert unsigned.state.phase is Phase.AWAITING_APPROVAL
    assert "(unsigned)" in unsigned.state.commands[-1].why
    signed = commands.answer(
        state,
        [command(state, "approve", signer="alice@example.com", signature="good")],
        START,
        confirmed=True,
    )
    assert signed.state.phase is Phase.PROGRESSING
    assert signed.state.commands[-1].signer == "alice@example.com"


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from(VERBS), st.booleans()), min_size=1, max_size=4))
def test_documents_with_commands_and_gates_round_trip(verbs: list[tuple[str, bool]]) -> None:
    approval = Approval(before=(GateName.START, GateName.PROMOTION), timeout_seconds=5)
    state = started(approval)
    pending = [command(state, v, force=f, reason='why\n"quoted"') for v, f in verbs]
    new = commands.answer(state, pending, START + 1.5, confirmed=True).state
    assert from_json(to_json(new)) == new


@given(st.binary(max_size=300))
def test_any_command_file_parses_or_says_what_is_wrong(raw: bytes) -> None:
    parsed = parse_command_file("commands/ns/name/x.json", raw)
    assert parsed.problem is not None or (
        parsed.verb in VERBS and parsed.run_id.startswith("ns/name@")
    )
