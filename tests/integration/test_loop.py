"""The reconcile loop against a real bare Env repo, with a clock the test drives."""

from __future__ import annotations

from pathlib import Path

from reconciler.demo import scenario
from reconciler.engine.state import Phase
from reconciler.metrics.profile import Profile
from tests.integration.bookinfo import APP, BookinfoWorld


def test_broken_experiment_files_are_reported_and_the_others_carry_on(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile())
    world.harness.push_main(
        "ci: two broken experiments",
        {
            "apps/other/experiment.yaml": b"kind: Experiment\nspec: [unclosed\n",
            "apps/third/experiment.yaml": (
                b"apiVersion: iter8.tools/v2alpha2\nkind: Experiment\nmetadata:\n  name: t\n"
                b"spec:\n  strategy:\n    testingPattern: Canary\n"
            ),
        },
    )
    first = world.tick()
    problems = sorted(str(p) for p in first.problems)
    assert problems == [
        (
            "apps/other/experiment.yaml:3:1: error: not valid YAML: "
            "expected ',' or ']', but got '<stream end>'"
        ),
        "apps/third/experiment.yaml:5:1: error: 'spec.target' is missing",
    ]
    assert [t.state.key for t, _ in first.recorded] == ["bookinfo/productpage-canary"]
    assert world.tick().problems == []  # reported once, not every tick
    reports = world.run_until_final()
    assert reports[-1].outcomes


def test_an_outcome_already_on_main_is_found_by_its_id_and_not_pushed_again(
    tmp_path: Path,
) -> None:
    world = BookinfoWorld(tmp_path, Profile())
    world.run_until_final()
    # Crash after the main push, before the state push: the state branch still says Promoting.
    promoting = world.git("log", "reconciler-state", "--format=%H", "--skip=1", "-1").strip()
    assert "Rollout-Phase: Promoting" in world.git("show", "-s", "--format=%B", promoting)
    world.git("update-ref", "refs/heads/reconciler-state", promoting)
    main_before = world.git("rev-parse", "main").strip()
    world.harness.restart()
    report = world.tick()
    assert [o for _, o in report.outcomes] == [main_before]
    assert world.git("rev-parse", "main").strip() == main_before
    assert world.outcomes_on_main() == ["promoted"]
    assert "Rollout-Phase: Promoted" in world.git("log", "-1", "--format=%B", "reconciler-state")


def test_a_decision_finished_by_a_later_process_names_its_state_commit(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile())
    world.run_until_final()
    # Crash after recording the decision, before the outcome reached main.
    promoting = world.git("log", "reconciler-state", "--format=%H", "--skip=1", "-1").strip()
    assert "Rollout-Phase: Promoting" in world.git("show", "-s", "--format=%B", promoting)
    world.git("update-ref", "refs/heads/reconciler-state", promoting)
    world.git("update-ref", "refs/heads/main", "main~1")
    assert world.outcomes_on_main() == []
    world.harness.restart()
    report = world.tick()
    ((_, outcome),) = report.outcomes
    trailer = world.git("log", "-1", "--format=%(trailers:key=Rollout-State,valueonly)", outcome)
    assert trailer.strip() == promoting
    assert world.outcomes_on_main() == ["promoted"]


def test_a_fresh_process_on_a_rebuilt_cluster_reapplies_the_recorded_weights(
    tmp_path: Path,
) -> None:
    world = BookinfoWorld(tmp_path, Profile())
    for _ in range(3):
        world.tick()
    recorded = world.git(
        "log", "-1", "--format=%(trailers:key=Rollout-Weights,valueonly)", "reconciler-state"
    )
    assert recorded.strip() == "productpage-stable=40,productpage-candidate=60"
    world.harness.cluster.clear()
    world.harness.sync()  # the GitOps operator re-applies main: the VirtualService is at 100/0
    assert world.harness.weight_of("productpage-candidate") == 0
    world.harness.restart()
    world.tick(advance=0.0)
    assert world.harness.weight_of("productpage-stable") == 40
    assert world.harness.weight_of("productpage-candidate") == 60
    # and the experiment carries on from its recorded iteration
    ((transition, _),) = world.tick().recorded
    assert transition.state.iteration == 3


def test_a_newer_experiment_for_the_same_target_preempts_the_running_one(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile())
    world.tick()
    world.tick()
    newer = scenario.demo_file("experiment.yaml").replace(
        b"productpage-canary", b"productpage-canary-2"
    )
    world.harness.push_main("ci: productpage v3 candidate", {f"{APP}/experiment-2.yaml": newer})
    report = world.tick(advance=0.0)
    phases = [(t.state.key, t.state.phase) for t, _ in report.recorded]
    assert phases == [
        ("bookinfo/productpage-canary", Phase.PREEMPTED),
        ("bookinfo/productpage-canary-2", Phase.PROGRESSING),
    ]
    files = world.git("ls-tree", "-r", "--name-only", "reconciler-state").split()
    assert "experiments/bookinfo/productpage-canary-2.json" in files
    assert "experiments/bookinfo/productpage-canary.json" not in files
    assert any(f.startswith("archive/bookinfo/productpage-canary/") for f in files)
    # The preempted run is never picked up again, though its file is still on main.
    assert all(t.state.key != "bookinfo/productpage-canary" for t, _ in world.tick().recorded)
    assert world.outcomes_on_main() == []


def test_a_rolled_back_candidate_is_never_started_again_from_the_same_file(
    tmp_path: Path,
) -> None:
    world = BookinfoWorld(tmp_path, Profile(error_rate=0.2))
    world.run_until_final()
    # Someone restores the very same experiment file on main.
    world.harness.push_main(
        "restore the experiment", {f"{APP}/experiment.yaml": scenario.demo_file("experiment.yaml")}
    )
    for _ in range(3):
        assert world.tick().recorded == []
    assert world.outcomes_on_main() == ["rolled-back"]
