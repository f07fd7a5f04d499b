"""One bad file never stops the loop (invariant 9): poison files beside a valid experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.controller.loop import TickReport
from reconciler.demo import scenario
from reconciler.demo.scenario import demo_file
from reconciler.metrics.profile import Profile
from reconciler.ports import CommitSpec
from reconciler.testing import DrivenClock, Harness, constant

VALID = "bookinfo/productpage-canary"
POISON_PATH = "apps/poison/experiment.yaml"
EXPERIMENT = demo_file("experiment.yaml").decode()


def _variant(candidate: str, *, iterations: int = 6) -> bytes:
    """The demo's experiment under another name and target, with the candidate named so."""
    text = (
        EXPERIMENT.replace("name: productpage-canary", "name: poison")
        .replace("target: bookinfo/productpage", "target: bookinfo/poison")
        .replace("name: productpage-candidate", f"name: {candidate}")
        .replace("iterationsPerLoop: 6", f"iterationsPerLoop: {iterations}")
        .replace("name: productpage\n        fieldPath", "name: poison\n        fieldPath")
    )
    return text.encode("utf-8", "surrogatepass")


POISON = {
    "apiVersion is a list": (
        b"apiVersion: [iter8.tools/v2alpha2]\nkind: Experiment\nmetadata: {name: x}\n"
    ),
    "version name with a space": _variant('"productpage v2"'),
    "version name with = and ,": _variant('"pp=v2,x"'),
    "version name with a newline": _variant('"pp\\nv2"'),
    "version name with a lone surrogate": _variant('"pp\\udc80"'),
}


class World:
    """The demo's Env repo with a driven clock."""

    def __init__(self, tmp: Path, *, iterations: int = 6) -> None:
        self.clock = DrivenClock()
        commits = scenario.app_commits()
        if iterations != 6:
            files = commits[-1][1]
            files["apps/bookinfo/experiment.yaml"] = EXPERIMENT.replace(
                "iterationsPerLoop: 6", f"iterationsPerLoop: {iterations}"
            ).encode()
        self.harness = Harness.create(
            tmp,
            commits,
            {"productpage-stable": Profile(), "productpage-candidate": Profile()},
            namespace="bookinfo",
            clock=self.clock,
        )

    def tick(self) -> TickReport:
        self.clock.advance(1.0)
        return self.harness.tick()

    def outcomes_on_main(self) -> list[str]:
        log = subprocess.run(
            [
                "git",
                "--git-dir",
                self.harness.remote,
                "log",
                "main",
                "--format=%(trailers:key=Rollout-Outcome,valueonly)",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return log.split()


def _reported(report: TickReport) -> list[str]:
    """What a tick said about the poison file or experiment (problems and faults)."""
    said = [str(p) for p in report.problems if p.location.file == POISON_PATH]
    said += [str(f) for f in report.faults if f.subject in {POISON_PATH, "bookinfo/poison"}]
    return said


@pytest.mark.parametrize("poison", sorted(POISON))
def test_a_poison_file_is_reported_once_and_the_valid_experiment_is_promoted(
    tmp_path: Path, poison: str
) -> None:
    world = World(tmp_path)
    world.harness.push_main(f"ci: {poison}", {POISON_PATH: POISON[poison]})
    first = world.tick()
    assert [t.state.key for t, _ in first.recorded] == [VALID]
    assert len(_reported(first)) == 1, first
    reports = [world.tick() for _ in range(12)]
    assert all(_reported(r) == [] for r in reports), "reported once, not every tick"
    recorded = {t.state.key for r in [first, *reports] for t, _ in r.recorded}
    assert recorded == {VALID}, "the poison experiment never gets a state document"
    assert world.outcomes_on_main() == ["promoted"]


def test_a_poison_file_does_not_stop_a_restarted_process(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.harness.push_main("ci: poison", {POISON_PATH: POISON["apiVersion is a list"]})
    world.tick()
    world.harness.restart()
    again = world.tick()
    assert len(_reported(again)) == 1, "a new process reports it again, once"
    assert [t.state.key for t, _ in again.recorded] == [VALID]


_KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "spec",
        "target",
        "strategy",
        "testingPattern",
        "deploymentPattern",
        "weights",
        "criteria",
        "objectives",
        "metric",
        "upperLimit",
        "duration",
        "intervalSeconds",
        "iterationsPerLoop",
        "versionInfo",
        "baseline",
        "candidates",
        "weightObjRef",
        "fieldPath",
        "gitops",
        "promote",
        "copy",
        "from",
        "to",
        "cleanup",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)
_API_VERSIONS = st.sampled_from(["iter8.tools/v2alpha2", "reconciler/v1alpha1"])


@st.composite
def _structured(draw: st.DrawFn) -> bytes:
    """A document of the right kind whose fields hold anything (JSON is YAML)."""
    body = draw(st.dictionaries(_KEYS, _VALUES, max_size=6))
    body.update(apiVersion=draw(_API_VERSIONS | _VALUES), kind="Experiment")
    if draw(st.booleans()):
        body["metadata"] = {"name": "poison", "namespace": "bookinfo"}
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """The poison variant of the demo's valid experiment with a slice of it replaced."""
    data = _variant("productpage-candidate")
    start = draw(st.integers(min_value=0, max_value=len(data)))
    end = draw(st.integers(min_value=start, max_value=min(len(data), start + 40)))
    return data[:start] + draw(st.binary(max_size=40)) + data[end:]


@st.composite
def _renamed(draw: st.DrawFn) -> bytes:
    """The poison variant with any text as its candidate's name (a JSON string is YAML)."""
    name = draw(st.text(min_size=1, max_size=12))
    return _variant(json.dumps(name))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(poison=_structured() | _mutated() | _renamed())
def test_random_documents_on_main_never_stop_a_valid_experiment(
    tmp_path_factory: pytest.TempPathFactory, poison: bytes
) -> None:
    world = _long_world(tmp_path_factory)
    world.harness.push_main("ci: a random document", {POISON_PATH: poison})
    report = world.tick()
    stepped = [t.state for t, _ in report.recorded if t.state.key == VALID]
    assert stepped, f"the valid experiment did not progress: {report.errors}"
    assert not stepped[-1].phase.final


_WORLDS: dict[str, World] = {}


def _long_world(factory: pytest.TempPathFactory) -> World:
    """One Env repo for all examples, with a valid experiment that iterates for a long time."""
    if "long" not in _WORLDS:
        _WORLDS["long"] = World(factory.mktemp("long"), iterations=10_000)
    return _WORLDS["long"]


def test_status_lists_a_poison_file_and_a_hand_broken_state_document(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.harness.push_main("ci: poison", {POISON_PATH: POISON["apiVersion is a list"]})
    world.tick()
    store = world.harness.store
    store.fetch()
    broken = "experiments/bookinfo/broken.json"
    store.update_branch(
        store.state_branch, constant([CommitSpec("hand edit", {broken: b"{not json"})])
    )
    report = world.tick()
    assert [f.stage for f in report.faults if f.subject == broken] == ["reading the state document"]
    assert [t.state.key for t, _ in report.recorded] == [VALID], "the valid one goes on"

    rows = json.loads(_status(world, "-o", "json"))
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["experiment", "invalid-state", "problem"]
    (problem,) = (r for r in rows if r["kind"] == "problem")
    assert problem["file"] == POISON_PATH
    assert problem["severity"] == "error"
    table = _status(world)
    assert f"reconciler-state:{broken}: not a state document" in table
    assert f"  {POISON_PATH}:" in table


def _status(world: World, *options: str) -> str:
    """What ``reconciler status`` prints on stdout for the world's Env repo."""
    command = [sys.executable, "-m", "reconciler", "status", "--repo", world.harness.remote]
    return subprocess.run([*command, *options], check=True, capture_output=True, text=True).stdout
