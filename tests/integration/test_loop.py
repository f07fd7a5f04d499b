"""The reconcile loop against a real bare Env repo, with a clock the test drives."""

import subprocess
from pathlib import Path

import pytest

from reconciler.cluster.memory import MemoryCluster
from reconciler.controller.loop import Reconciler, TickReport
from reconciler.demo import scenario
from reconciler.engine.state import Phase
from reconciler.gitstore.repo import GitEnvStore
from reconciler.metrics.profile import Profile, ProfileMetrics
from reconciler.ports import CommitSpec
from reconciler.spec.model import WeightObjRef

APP = "apps/bookinfo"
VS = ("networking.istio.io/v1beta1", "VirtualService", "bookinfo", "productpage")


def ref(route: int) -> WeightObjRef:
    return WeightObjRef(VS[0], VS[1], VS[3], f".spec.http[0].route[{route}].weight", VS[2])


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class World:
    """An Env repo, a cluster synced from it, and a reconciler process (replaceable)."""

    def __init__(self, tmp: Path, candidate: Profile) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.store = scenario.build_env_repo(tmp)
        self.remote = str(tmp / "env.git")
        self.cluster = MemoryCluster()
        main = self.store.fetch().main
        assert main is not None
        self.cluster.sync(
            ((p, self.store.read_file(main, p) or b"") for p, _ in self.store.list_files(main)),
            namespace="bookinfo",
        )
        profiles = {"productpage-v1": Profile(), "productpage-v2": candidate}
        self.metrics = ProfileMetrics(profiles, self.weight_of, self.clock)
        self.processes = 0
        self.reconciler = self.restart()

    def weight_of(self, version: str) -> int:
        return self.cluster.get_weight(ref(0 if version == "productpage-v1" else 1)) or 0

    def restart(self) -> Reconciler:
        """A fresh process: new cache, nothing in memory but the Env repo."""
        self.processes += 1
        store = GitEnvStore.open(
            self.remote, self.tmp / f"cache-{self.processes}.git", author=("t", "t@example.invalid")
        )
        self.reconciler = Reconciler(store, self.cluster, self.metrics, clock=self.clock)
        return self.reconciler

    def tick(self, advance: float = 1.0) -> TickReport:
        self.clock.now += advance
        return self.reconciler.tick()

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", self.remote, *args], check=True, capture_output=True, text=True
        ).stdout

    def push_main(self, message: str, files: dict[str, bytes | None]) -> None:
        self.store.fetch()
        self.store.update_branch("main", lambda _tip: [CommitSpec(message, files)])


def run_until_final(world: World, limit: int = 30) -> list[TickReport]:
    reports = []
    for _ in range(limit):
        report = world.tick()
        reports.append(report)
        if any(t.state.phase.final for t, _ in report.recorded):
            return reports
    pytest.fail("the experiment did not finish")


def test_broken_experiment_files_are_reported_and_the_others_carry_on(tmp_path: Path) -> None:
    world = World(tmp_path, Profile())
    world.push_main(
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
    reports = run_until_final(world)
    assert reports[-1].outcomes


def test_an_outcome_already_on_main_is_found_by_its_id_and_not_pushed_again(tmp_path: Path) -> None:
    world = World(tmp_path, Profile())
    run_until_final(world)
    # Crash after the main push, before the state push: the state branch still says Promoting.
    promoting = world.git("log", "reconciler-state", "--format=%H", "--skip=1", "-1").strip()
    assert "Rollout-Phase: Promoting" in world.git("show", "-s", "--format=%B", promoting)
    world.git("update-ref", "refs/heads/reconciler-state", promoting)
    main_before = world.git("rev-parse", "main").strip()
    world.restart()
    report = world.tick()
    assert [o for _, o in report.outcomes] == [main_before]
    assert world.git("rev-parse", "main").strip() == main_before
    assert world.git(
        "log", "main", "--format=%(trailers:key=Rollout-Outcome,valueonly)"
    ).split() == ["promoted"]
    assert "Rollout-Phase: Promoted" in world.git("log", "-1", "--format=%B", "reconciler-state")


def test_a_fresh_process_reapplies_the_recorded_weights(tmp_path: Path) -> None:
    world = World(tmp_path, Profile())
    for _ in range(3):
        world.tick()
    recorded = world.git(
        "log", "-1", "--format=%(trailers:key=Rollout-Weights,valueonly)", "reconciler-state"
    )
    assert recorded.strip() == "productpage-v1=40,productpage-v2=60"
    # The cluster is rebuilt from main: the VirtualService is back at 100/0.
    world.cluster = MemoryCluster()
    main = world.store.fetch().main
    assert main is not None
    world.cluster.sync(
        [(f"{APP}/routing.yaml", world.store.read_file(main, f"{APP}/routing.yaml") or b"")],
        "bookinfo",
    )
    assert world.weight_of("productpage-v2") == 0
    world.restart()
    world.tick(advance=0.0)
    assert (world.weight_of("productpage-v1"), world.weight_of("productpage-v2")) == (40, 60)


def test_a_newer_experiment_for_the_same_target_preempts_the_running_one(tmp_path: Path) -> None:
    world = World(tmp_path, Profile())
    world.tick()
    world.tick()
    newer = scenario.demo_file("experiment.yaml").replace(
        b"productpage-canary", b"productpage-canary-2"
    )
    world.push_main("ci: productpage v3 candidate", {f"{APP}/experiment-2.yaml": newer})
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


def test_a_rolled_back_candidate_is_never_started_again_from_the_same_file(tmp_path: Path) -> None:
    world = World(tmp_path, Profile(error_rate=0.2))
    run_until_final(world)
    # Someone restores the very same experiment file on main.
    world.push_main(
        "restore the experiment", {f"{APP}/experiment.yaml": scenario.demo_file("experiment.yaml")}
    )
    for _ in range(3):
        assert world.tick().recorded == []
    assert world.git(
        "log", "main", "--format=%(trailers:key=Rollout-Outcome,valueonly)"
    ).split() == ["rolled-back"]
