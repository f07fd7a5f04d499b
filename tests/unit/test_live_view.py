"""The watch's view model: states and the time in, rows, lines and exit codes out."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import live_view
from reconciler.engine.control import Gate
from reconciler.engine.state import ExperimentState, Phase
from reconciler.live_view import Observed, line, next_iteration_in, pick_run, printable, view
from reconciler.spec.model import Approval, GateName, Version
from tests.watchstates import BLOB, CANDIDATE, PAUSE, SPEC, STABLE, START, demo_run, run


def test_a_progressing_run_shows_iteration_weights_metrics_against_limits_and_verdicts() -> None:
    state = run()
    shown = view(state, state.updated_at + 0.25)
    assert shown.phase == "Progressing"
    assert (shown.iteration, shown.iterations) == (2, 6)
    assert shown.next_in == 0.75
    by_name = {v.version: v for v in shown.versions}
    assert by_name[CANDIDATE].weight == state.weight_of(CANDIDATE) > 0
    assert by_name[CANDIDATE].verdict == "pass"
    assert by_name[STABLE].baseline
    error_rate = next(m for m in by_name[CANDIDATE].metrics if m.metric == "istio/error-rate")
    assert (error_rate.value, error_rate.limit, error_rate.within) == (0.002, "<= 0.01", True)
    assert error_rate.method == "clopper-pearson"
    assert error_rate.bound is not None
    assert error_rate.bound <= 0.01


def test_a_value_beyond_its_limit_is_marked_on_the_line() -> None:
    state = run(iterations=1, error_rate=0.05)
    text = line(view(state, state.updated_at))
    assert "productpage-candidate:error-rate=0.05!(<=0.01)" in text
    assert "verdicts=productpage-stable=pass,productpage-candidate=fail" in text


def test_a_paused_run_has_no_next_iteration_and_says_who_paused_it() -> None:
    state = replace(run(), paused=PAUSE)
    shown = view(state, START + 90)
    assert shown.next_in is None
    assert shown.headline == "Progressing, Paused"
    assert shown.paused == 'by Ann <ann@example.com> 1m00s ago: "looking at the dashboards"'
    assert "paused=\"by Ann <ann@example.com> 1m00s ago: 'looking at the dashboards'\"" in line(
        shown
    )


def test_a_run_at_an_approval_gate_says_which_gate_since_when_and_when_it_times_out() -> None:
    spec = replace(SPEC, approval=Approval(before=(GateName.PROMOTION,), timeout_seconds=3600))
    state = replace(
        run(spec),
        phase=Phase.AWAITING_APPROVAL,
        gate=Gate(before="promotion", opened_at=START + 100, winner=CANDIDATE),
    )
    shown = view(state, START + 400)
    assert shown.next_in is None
    assert shown.gate == (
        "before promotion of productpage-candidate, since 2027-01-15T08:01:40Z (5m00s ago), "
        "times out in 55m00s (then rollback)"
    )
    late = view(state, START + 100 + 3600 + 65)
    assert late.gate is not None
    assert late.gate.endswith("timed out 1m05s ago (rollback at the next tick)")
    assert line(shown).split()[2] == "AwaitingApproval"


def test_the_last_command_is_on_the_line_of_the_commit_that_answered_it_only() -> None:
    abort = replace(PAUSE, command="abort", commit="b" * 40, reason="", why="rolled back")
    before = view(run(), START + 60)
    answered = view(replace(run(), commands=(abort,)), START + 60)
    assert answered.command == "abort by Ann <ann@example.com> 30s ago: done (rolled back)"
    assert "command=" in line(answered, before)
    assert "command=" not in line(answered, answered)


def test_metric_values_are_on_the_line_of_the_commit_that_judged_them_only() -> None:
    judged = view(run(), START + 2)
    assert "metrics=" in line(judged, view(run(iterations=1), START + 1))
    assert "metrics=" not in line(judged, judged)
    assert "metrics=" not in line(view(run(iterations=0), START))


def test_observed_weights_that_differ_are_on_the_line() -> None:
    state = run()
    drifted = Observed("drifted", {STABLE: 100, CANDIDATE: 0}, "set by kubectl")
    shown = view(state, START, observed=drifted)
    assert shown.versions[0].observed == 100
    assert 'observed="drifted: productpage-stable=100,productpage-candidate=0 (set by' in line(
        shown
    )
    assert "observed=" not in line(view(state, START, observed=Observed("converged", {})))


def test_each_end_maps_to_its_exit_code() -> None:
    state = run()
    codes = {phase: live_view.exit_code(replace(state, phase=phase)) for phase in Phase}
    assert codes == {
        Phase.PROGRESSING: None,
        Phase.AWAITING_APPROVAL: None,
        Phase.PROMOTING: None,
        Phase.ROLLING_BACK: None,
        Phase.PROMOTED: 0,
        Phase.ROLLED_BACK: 1,
        Phase.PREEMPTED: 3,
        Phase.WITHDRAWN: 3,
    }


def test_the_run_main_names_is_followed_rather_than_an_older_archived_one() -> None:
    old = replace(run(), phase=Phase.PROMOTED)
    key = SPEC.key
    newer = "9" * 40
    picked = pick_run(key, None, on_main=[newer], live=None, archived=[old])
    assert picked.state is None
    assert picked.run == f"{key}@999999999999"
    assert picked.waiting == f"{key}@999999999999 has not started yet"
    # Nothing on main (its outcome removed the file): the last archived run is the answer.
    assert pick_run(key, None, on_main=[], live=None, archived=[old]).state == old
    live = run()
    assert pick_run(key, None, on_main=[BLOB], live=live, archived=[old]).state == live
    assert pick_run(key, None, on_main=[], live=None, archived=[]).run is None


def test_a_followed_run_is_found_in_the_archive_once_it_left_the_live_documents() -> None:
    ended = replace(run(), phase=Phase.ROLLED_BACK)
    newer_live = replace(run(), spec_blob="7" * 40)
    picked = pick_run(SPEC.key, BLOB[:12], on_main=[], live=newer_live, archived=[ended])
    assert picked.state == ended
    # A run named by the start of its id, as `git log --oneline` abbreviates.
    assert pick_run(SPEC.key, BLOB[:7], on_main=[], live=None, archived=[ended]).run == ended.id


states = st.builds(
    lambda iterations, error_rate, paused, phase: replace(
        demo_run(iterations, error_rate),
        paused=PAUSE if paused else None,
        phase=phase,
    ),
    st.integers(0, 5),
    st.sampled_from([0.0, 0.002, 0.05]),
    st.booleans(),
    st.sampled_from(list(Phase)),
)


@settings(max_examples=60, deadline=None)
@given(states, st.floats(-1e6, 1e7))
def test_time_to_the_next_iteration_is_never_negative(
    state: ExperimentState, offset: float
) -> None:
    left = next_iteration_in(state, state.last_iteration_at + offset)
    assert left is None or left >= 0
    if state.phase is not Phase.PROGRESSING or state.paused is not None:
        assert left is None


@settings(max_examples=60, deadline=None)
@given(states, st.lists(st.text(min_size=1, max_size=8), max_size=4, unique=True), st.text())
def test_every_version_has_its_row_and_nothing_shown_carries_a_control_character(
    state: ExperimentState, extra: list[str], reason: str
) -> None:
    candidates = (*state.spec.candidates, *(Version(f"v-{name}") for name in extra))
    spec = replace(state.spec, candidates=candidates)
    state = replace(state, spec=spec, reason=f"\x1b[31m{reason}\nsecond line\r")
    shown = view(state, state.updated_at)
    assert [v.version for v in shown.versions] == [printable(v.name) for v in spec.versions]
    assert shown.reason.isprintable()
    assert all(v.version.isprintable() for v in shown.versions)
    text = line(shown)
    assert "\n" not in text
    assert "\r" not in text
    assert "\x1b" not in text
