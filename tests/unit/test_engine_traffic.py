"""Level-triggered traffic, the pure part: who sets a weight, and what the cluster says."""

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine import experiment as engine
from reconciler.engine import traffic
from reconciler.engine.state import ExperimentState, Phase
from reconciler.ports import WeightReading
from tests.unit.test_engine_experiment import BLOB, SPEC

STABLE, CANARY = traffic.weight_pairs(
    engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=0.0).state
)
REFS = (STABLE[0], CANARY[0])


def running(canary: int, *, now: float = 0.0) -> ExperimentState:
    state = engine.start(SPEC, spec_blob=BLOB, source_commit="c" * 40, now=now).state
    return replace(
        state, weights=(("productpage-stable", 100 - canary), ("productpage-candidate", canary))
    )


readings = st.builds(
    WeightReading,
    value=st.none() | st.integers(0, 100),
    exists=st.booleans(),
    error=st.none() | st.just("connection refused"),
    writers=st.just(("kubectl-patch (Update, 2026-12-04T16:00:00Z)",)),
)


@given(st.integers(0, 100), readings, readings)
def test_an_experiment_is_converged_exactly_when_every_field_holds_its_recorded_weight(
    canary: int, first: WeightReading, second: WeightReading
) -> None:
    state = running(canary)
    found = traffic.assess(state, dict(zip(REFS, (first, second), strict=True)), {})
    if first.error or second.error:
        assert found.status == traffic.UNKNOWN
    elif not (first.exists and second.exists):
        assert found.status == traffic.MISSING
    else:
        agrees = (first.value, second.value) == (100 - canary, canary)
        assert found.converged == agrees
        assert found.status == (traffic.CONVERGED if agrees else traffic.DRIFTED)
        # every drifted field is named, with what it held and who wrote it
        assert {d.version for d in found.drifts} == {
            v
            for v, value, want in (
                ("productpage-stable", first.value, 100 - canary),
                ("productpage-candidate", second.value, canary),
            )
            if value != want
        }
        assert all(d.writers for d in found.drifts)


def test_a_field_that_was_not_read_is_unknown_not_converged() -> None:
    found = traffic.assess(running(20), {STABLE[0]: WeightReading(80)}, {})
    assert (found.status, found.error) == (traffic.UNKNOWN, "not read")


def test_an_experiment_without_weights_has_nothing_to_disagree_on() -> None:
    conformance = replace(running(0), weights=())
    assert traffic.assess(conformance, {}, {}).converged


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 100)), min_size=1, max_size=5))
def test_a_running_experiment_owns_its_fields_before_any_finished_one(
    runs: list[tuple[bool, float]],
) -> None:
    states = [
        replace(
            running(10),
            spec=replace(SPEC, name=f"run-{i}"),
            phase=Phase.PROMOTED if final else Phase.PROGRESSING,
            updated_at=updated,
        )
        for i, (final, updated) in enumerate(runs)
    ]
    owner = traffic.owners(states)
    owners = {owner[ref] for ref in REFS}
    assert len(owners) == 1  # one actor per field
    (winner,) = owners
    chosen = next(s for s in states if s.key == winner)
    if any(not s.phase.final for s in states):
        assert not chosen.phase.final
    others = [s for s in states if s.key != winner]
    assert all(traffic.assess(s, {}, owner).status == traffic.SUPERSEDED for s in others)


def test_the_fix_names_what_the_writer_needs() -> None:
    assert "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent" in traffic.fix_for(
        "kustomize-controller"
    )
    assert "RespectIgnoreDifferences=true" in traffic.fix_for("argocd-controller")
    assert "by hand (kubectl-edit)" in traffic.fix_for("kubectl-edit")
    assert "another controller (helm)" in traffic.fix_for("helm")
    assert "--show-managed-fields" in traffic.fix_for(None)


def test_a_drift_description_names_the_object_the_field_the_value_and_the_writer() -> None:
    reading = {
        STABLE[0]: WeightReading(100),
        CANARY[0]: WeightReading(0, writers=("kubectl-patch (Update, 2026-12-04T16:00:00Z)",)),
    }
    found = traffic.assess(running(30), reading, {})
    assert traffic.describe(found) == (
        "VirtualService bookinfo/productpage .spec.http[0].route[0].weight is 100, recorded 70; "
        "VirtualService bookinfo/productpage .spec.http[0].route[1].weight is 0, recorded 30 "
        "(written by kubectl-patch (Update, 2026-12-04T16:00:00Z))"
    )
    assert traffic.culprits(found) == ["kubectl-patch"]


@given(st.sampled_from([None, "waiting", "synced", "timeout"]), readings, readings)
def test_fields_an_applied_outcome_removed_are_not_set_again(
    sync: str | None, first: WeightReading, second: WeightReading
) -> None:
    done = replace(
        running(0),
        phase=Phase.PROMOTED,
        outcome_commit="d" * 40,
        sync=sync,
        weights=(("productpage-stable", 100), ("productpage-candidate", 0)),
    )
    found = traffic.assess(done, dict(zip(REFS, (first, second), strict=True)), {})
    if first.error or second.error:
        assert found.status == traffic.UNKNOWN
        return
    gone = [r for r, want in ((first, 100), (second, 0)) if r.value != want]
    removed = bool(gone) and all(r.value is None for r in gone)
    if sync != "waiting" and removed:
        # the outcome took away the route or object: nothing to set, the run can be archived
        assert found.status == traffic.CONVERGED
        assert found.drifts == ()
    elif any(r.value is not None for r in gone):
        # a field that is there with other weights is set back, as for any run
        assert found.status in {traffic.DRIFTED, traffic.MISSING}
    # a running experiment's absent field is never taken for settled
    live = traffic.assess(running(0), dict(zip(REFS, (first, second), strict=True)), {})
    agrees = (first.value, second.value) == (100, 0) and first.exists and second.exists
    assert (live.status == traffic.CONVERGED) == agrees
