"""The plan across experiments (``engine.planner``): its rules, without Git or a cluster.

Worlds are generated: up to four experiments over two targets, each live in some phase
(running, deciding, waiting for the GitOps operator, settling) or not at all, its file on
main unchanged, changed or gone, its weights confirmed on the cluster or not, plus new
files. Every world is a valid one (at most one run acting on a target), and the plan
must keep it so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.engine import experiment as engine
from reconciler.engine import planner
from reconciler.engine.planner import Candidate, Inputs, OffRecord, Seen
from reconciler.engine.state import ExperimentState, Phase, experiment_id, from_json, to_json
from reconciler.engine.traffic import DRIFTED, Assessment
from reconciler.spec.model import DeploymentPattern, Experiment
from tests.unit.test_engine_experiment import SPEC, observations

START = 1_000.0
NOW = START + SPEC.duration.interval_seconds
MAIN = "m" * 40
TARGETS = ("t0", "t1")
GOOD = ("ok", 0.0, 10.0, 10_000)
PHASES = ("running", "running", "deciding", "waiting", "settling")
FILES = ("same", "same", "changed", "changed-archived", "gone")


def blob(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()  # noqa: S324 - a name, not a secret


def spec(name: str, target: str) -> Experiment:
    return replace(SPEC, name=name, target=target)


def state_of(spec_: Experiment, phase: str) -> ExperimentState:
    state = engine.start(spec_, spec_blob=blob(spec_.name), source_commit=MAIN, now=START).state
    if phase == "deciding":
        return replace(
            state, phase=Phase.PROMOTING, winner="productpage-candidate", decided_on=MAIN
        )
    if phase == "waiting":
        return replace(state, phase=Phase.PROMOTED, sync="waiting", outcome_commit="d" * 40)
    if phase == "settling":
        return replace(state, phase=Phase.PROMOTED, applied=False, outcome_commit="d" * 40)
    return state


@dataclass(frozen=True)
class Live:
    name: str
    target: str
    phase: str
    file: str
    confirmed: bool
    off_record: bool


lives = st.builds(
    Live,
    name=st.sampled_from(["a", "b", "c", "d"]),
    target=st.sampled_from(TARGETS),
    phase=st.sampled_from(PHASES),
    file=st.sampled_from(FILES),
    confirmed=st.booleans(),
    off_record=st.booleans(),
)
new_files = st.lists(
    st.tuples(st.sampled_from(["e", "f", "g"]), st.sampled_from(TARGETS)), max_size=3
)


def world(live: list[Live], new: list[tuple[str, str]]) -> Inputs:
    """Valid inputs: unique names, at most one run acting (running or deciding) per target."""
    states: dict[str, ExperimentState] = {}
    seen: dict[str, Seen] = {}
    files: list[Candidate] = []
    acting: set[str] = set()
    for item in live:
        s = spec(item.name, item.target)
        if s.key in states:
            continue
        if item.phase in {"running", "deciding"}:
            if item.target in acting:
                continue
            acting.add(item.target)
        state = state_of(s, item.phase)
        states[s.key] = state
        drift = Assessment(status=DRIFTED) if item.off_record else None
        seen[s.key] = Seen(
            confirmed=item.confirmed,
            assessed=drift,
            off_record=OffRecord(drift, counts=True) if drift is not None else None,
            # measured even where the loop would not measure: the plan itself must not judge
            observations=observations(GOOD),
        )
        if item.file != "gone":
            file_blob = state.spec_blob if item.file == "same" else blob(s.name, item.file)
            archived = item.file == "changed-archived"
            files.append(Candidate(s, file_blob, experiment_id(s, file_blob), archived=archived))
    for name, target in new:
        s = spec(name, target)
        if any(f.spec.key == s.key for f in files):
            continue
        files.append(Candidate(s, blob(name, "new"), experiment_id(s, blob(name, "new"))))
    return Inputs(states=states, files=files, seen=seen, main=MAIN, now=NOW)


def after(inputs: Inputs, plan: planner.Plan) -> list[ExperimentState]:
    """Every run once the plan's transitions are recorded (live ones and new ones)."""
    out = dict(inputs.states)
    out.update((t.state.id, t.state) for t in plan.transitions if t.state.id not in
               {s.id for s in inputs.states.values()})  # fmt: skip
    by_id = {s.id: s for s in out.values()}
    by_id.update((t.state.id, t.state) for t in plan.transitions)
    return list(by_id.values())


@settings(max_examples=400)
@given(st.lists(lives, max_size=4), new_files)
def test_at_most_one_run_acts_on_a_target_and_none_starts_while_an_outcome_is_pending(
    live: list[Live], new: list[tuple[str, str]]
) -> None:
    inputs = world(live, new)
    plan = planner.plan(inputs)
    assert plan.faults == []
    acting: dict[str, list[str]] = {}
    for state in after(inputs, plan):
        if not state.phase.final:
            acting.setdefault(state.spec.target, []).append(state.id)
    assert all(len(ids) == 1 for ids in acting.values()), acting
    live_ids = {s.id for s in inputs.states.values()}
    deciding = {s.spec.target for s in inputs.states.values() if s.phase.deciding}
    for transition in plan.transitions:
        if transition.state.id not in live_ids:  # a start
            assert transition.state.spec.target not in deciding


@settings(max_examples=400)
@given(st.lists(lives, max_size=4), new_files)
def test_the_last_new_file_for_a_target_starts_and_preempts_the_run_there(
    live: list[Live], new: list[tuple[str, str]]
) -> None:
    inputs = world(live, new)
    plan = planner.plan(inputs)
    live_ids = {s.id for s in inputs.states.values()}
    newest: dict[str, Candidate] = {}
    for file in inputs.files:
        if file.run_id not in live_ids and not file.archived:
            newest[file.spec.target] = file
    started = {t.state.spec.target: t.state for t in plan.transitions if t.state.id not in live_ids}
    deciding = {s.spec.target for s in inputs.states.values() if s.phase.deciding}
    for target, file in newest.items():
        if target in deciding:
            assert target not in started
            continue
        assert started[target].id == file.run_id, (target, started)
        for state in inputs.states.values():
            if state.spec.target == target and state.phase is Phase.PROGRESSING:
                moved = next(t.state for t in plan.transitions if t.state.id == state.id)
                assert moved.phase is Phase.PREEMPTED
                assert moved.preempted_by == file.run_id


@settings(max_examples=400)
@given(st.lists(lives, max_size=4), new_files)
def test_nothing_is_judged_on_weights_the_cluster_was_not_seen_carrying(
    live: list[Live], new: list[tuple[str, str]]
) -> None:
    inputs = world(live, new)
    plan = planner.plan(inputs)
    for transition in plan.transitions:
        before = inputs.states.get(transition.state.key)
        if before is None or before.id != transition.state.id:
            continue
        seen = inputs.seen[before.key]
        if not seen.confirmed or seen.off_record is not None:
            assert transition.state.iteration == before.iteration
            assert transition.state.history == before.history
            assert transition.state.evidence == before.evidence


@settings(max_examples=200)
@given(st.lists(lives, max_size=4), new_files)
def test_a_run_whose_file_left_main_or_changed_never_goes_on(
    live: list[Live], new: list[tuple[str, str]]
) -> None:
    inputs = world(live, new)
    plan = planner.plan(inputs)
    on_main = {f.spec.key: f.blob for f in inputs.files}
    moved = {t.state.id: t.state for t in plan.transitions}
    for state in inputs.states.values():
        if state.phase is Phase.PROGRESSING and on_main.get(state.key) != state.spec_blob:
            assert moved[state.id].phase in {Phase.WITHDRAWN, Phase.PREEMPTED}
    assert planner.plan(inputs) == plan  # and the plan is a function of its inputs


def test_a_confirmed_due_run_is_stepped_and_a_decision_names_mains_tip() -> None:
    s = spec("a", "t0")
    state = state_of(s, "running")
    file = Candidate(s, state.spec_blob, state.id)
    seen = {s.key: Seen(confirmed=True, observations=observations(GOOD))}
    inputs = Inputs({s.key: state}, [file], seen, main=MAIN, now=NOW)
    (transition,) = planner.plan(inputs).transitions
    assert transition.state.iteration == 1
    assert transition.state.decided_on is None
    unseen = planner.plan(replace(inputs, seen={s.key: Seen(confirmed=False)}))
    assert unseen.transitions == []
    last = replace(state, iteration=s.duration.iterations - 1)
    (decided,) = planner.plan(replace(inputs, states={s.key: last})).transitions
    assert decided.state.phase is Phase.PROMOTING
    assert decided.state.decided_on == MAIN  # the outcome search stops there


def test_one_experiment_whose_step_raises_is_a_fault_and_the_others_are_planned() -> None:
    good, bad = spec("a", "t0"), spec("b", "t1")
    states = {x.key: state_of(x, "running") for x in (good, bad)}
    files = [Candidate(x, states[x.key].spec_blob, states[x.key].id) for x in (good, bad)]
    seen = {
        good.key: Seen(confirmed=True, observations=observations(GOOD)),
        bad.key: Seen(confirmed=True, observations={"productpage-stable": None}),  # type: ignore[dict-item]
    }
    plan = planner.plan(Inputs(states, files, seen, main=MAIN, now=NOW))
    assert [key for key, _stage, _exc in plan.faults] == [bad.key]
    assert [t.state.key for t in plan.transitions] == [good.key]


def test_an_archived_run_never_starts_again_and_a_waiting_outcome_settles_on_sync() -> None:
    s = spec("a", "t0")
    file = Candidate(s, blob("a", "old"), experiment_id(s, blob("a", "old")), archived=True)
    assert planner.plan(Inputs({}, [file], {}, main=MAIN, now=NOW)).transitions == []
    waiting = state_of(spec("b", "t1"), "waiting")
    waiting = replace(waiting, updated_at=NOW)
    inputs = Inputs({waiting.key: waiting}, [], {waiting.key: Seen()}, main=MAIN, now=NOW)
    assert planner.plan(inputs).transitions == []
    synced = planner.plan(replace(inputs, seen={waiting.key: Seen(synced="rev-1")}))
    assert [t.state.sync for t in synced.transitions] == ["synced"]
    late = planner.plan(replace(inputs, now=NOW + inputs.sync_timeout))
    assert len(late.transitions) == 1


def test_a_blue_green_winner_keeps_its_traffic_until_the_outcome_is_applied_and_ready() -> None:
    s = replace(spec("a", "t0"), deployment_pattern=DeploymentPattern.BLUE_GREEN)
    decided = replace(state_of(s, "running"), iteration=s.duration.iterations - 1)
    promoting = planner.plan(
        Inputs({s.key: decided}, [Candidate(s, decided.spec_blob, decided.id)],
               {s.key: Seen(confirmed=True, observations=observations(GOOD))}, MAIN, NOW)
    ).transitions[0].state  # fmt: skip
    assert promoting.weights == (("productpage-stable", 0), ("productpage-candidate", 100))
    landed = engine.outcome_landed(promoting, "o" * 40, NOW, await_sync=False).state
    assert (landed.sync, landed.weights) == ("waiting", promoting.weights)
    assert landed.cleanup == ("due" if s.blue_green_cleanup else None)

    def planned(seen: Seen, now: float = NOW + 1) -> list[engine.Transition]:
        return planner.plan(Inputs({s.key: landed}, [], {s.key: seen}, MAIN, now)).transitions

    assert planned(Seen(confirmed=True)) == []  # not applied yet
    assert planned(Seen(confirmed=True, synced="o" * 40, waiting="1 of 2 updated")) == []
    assert planned(Seen(confirmed=True, ready=True), now=NOW + 60) == []  # not applied, no timeout
    (back,) = planned(Seen(confirmed=True, synced="o" * 40, ready=True))
    assert back.state.weights == (("productpage-stable", 100), ("productpage-candidate", 0))
    assert (back.state.sync, back.state.archived) == ("synced", False)
    (late,) = planned(Seen(confirmed=True, ready=True), now=NOW + 1 + 120.0)
    assert late.state.sync == "timeout"


def test_a_cleanup_due_reads_back_and_keeps_the_document_live_until_it_is_recorded() -> None:
    s = replace(spec("a", "t0"), deployment_pattern=DeploymentPattern.BLUE_GREEN)
    state = replace(state_of(s, "settling"), sync="synced", applied=True, cleanup="due", weights=())
    assert (state.archived, state.settling) == (False, True)
    assert from_json(to_json(state)).cleanup == "due"
    cleaned = engine.cleaned(state, "c" * 40, NOW).state
    assert (cleaned.cleanup, cleaned.archived, cleaned.settling) == ("c" * 40, True, False)
    assert engine.cleaned(state, None, NOW).state.cleanup == "done"  # nothing was left
    older = json.loads(to_json(replace(state, cleanup=None)))
    del older["cleanup"]  # a document written before blue/green cleanups
    assert from_json(json.dumps(older).encode()).cleanup is None
