"""Each testing and deployment pattern run to its outcome through the demo's adapters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.engine.state import ExperimentState, Phase
from reconciler.metrics.profile import Profile
from reconciler.testing import DrivenClock, Harness

APP = "apps/shop"
HEALTHY = Profile(error_rate=0.001, mean_latency_ms=60.0, reward=0.10)


def routing(versions: list[str]) -> bytes:
    routes = "".join(
        f"    - destination:\n        host: shop\n        subset: {v}\n"
        f"      weight: {100 if i == 0 else 0}\n"
        for i, v in enumerate(versions)
    )
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n"
        f"  name: shop\nspec:\n  hosts: [shop]\n  http:\n  - route:\n{routes}"
    ).encode()


def experiment(
    testing: str, deployment: str, versions: list[str], *, reward: bool = False
) -> bytes:
    def version(i: int, name: str) -> str:
        ref = (
            ""
            if testing == "Conformance"
            else (
                "      weightObjRef:\n        apiVersion: networking.istio.io/v1beta1\n"
                "        kind: VirtualService\n        name: shop\n"
                f"        fieldPath: .spec.http[0].route[{i}].weight\n"
            )
        )
        return (
            f"      name: {name}\n      variables:\n      - {{name: tag, value: '{name}'}}\n{ref}"
        )

    candidates = "".join(f"    -{version(i, n)[5:]}" for i, n in enumerate(versions) if i)
    rewards = (
        "    rewards:\n    - {metric: demo/reward, preferredDirection: High}\n" if reward else ""
    )
    return (
        "apiVersion: reconciler/v1alpha1\nkind: Experiment\nmetadata:\n  name: shop-exp\n"
        "  namespace: shop\nspec:\n  target: shop/shop\n  strategy:\n"
        f"    testingPattern: {testing}\n    deploymentPattern: {deployment}\n"
        "    weights: {maxCandidateWeight: 60, maxCandidateWeightIncrement: 20}\n"
        "  criteria:\n    requestCount: demo/request-count\n    objectives:\n"
        "    - {metric: demo/error-rate, upperLimit: 0.01}\n"
        "    - {metric: demo/mean-latency, upperLimit: 200}\n"
        f"{rewards}"
        "  duration: {intervalSeconds: 5, iterationsPerLoop: 4}\n"
        "  versionInfo:\n    baseline:\n"
        f"{version(0, versions[0])}"
        + (f"    candidates:\n{candidates}" if candidates else "")
        + "  gitops:\n    promote:\n    - copy:\n        from: current.yaml\n"
        "        to: current.yaml\n        replace:\n"
        f"        - {{old: {versions[0]}, new: '{{{{ variables.tag }}}}'}}\n"
        "    cleanup: [candidates.yaml]\n"
        # blue/green: the winner serves until the baseline's Deployment runs its version
         + (READINESS if deployment == "BlueGreen" else "")
    ).encode()


READINESS = (
    "  readiness:\n    objects:\n    - {apiVersion: apps/v1, kind: Deployment, name: shop}\n"
)


def shop(
    tmp: Path,
    testing: str,
    deployment: str,
    profiles: dict[str, Profile],
    *,
    reward: bool = False,
    load: float = 0.0,
) -> tuple[Harness, DrivenClock]:
    """The shop app with its experiment on main, synced to the cluster."""
    versions = list(profiles)
    files = {
        f"{APP}/current.yaml": f"image: shop:{versions[0]}\n".encode(),
        f"{APP}/candidates.yaml": b"# candidate deployments\n",
        f"{APP}/routing.yaml": routing(versions),
        f"{APP}/experiment.yaml": experiment(testing, deployment, versions, reward=reward),
    }
    clock = DrivenClock()
    harness = Harness.create(
        tmp,
        [("shop", files)],
        profiles,
        namespace="shop",
        clock=clock,
        requests_per_second=2000,
        load_per_version=load,
    )
    return harness, clock


def run(
    tmp: Path,
    testing: str,
    deployment: str,
    profiles: dict[str, Profile],
    *,
    reward: bool = False,
    load: float = 0.0,
) -> tuple[Harness, list[ExperimentState]]:
    harness, clock = shop(tmp, testing, deployment, profiles, reward=reward, load=load)
    states: list[ExperimentState] = []
    for _ in range(20):
        clock.advance(5)
        report = harness.tick()
        assert report.problems == [], report.problems
        states += [t.state for t, _ in report.recorded]
        if states and states[-1].phase.final:
            return harness, states
    pytest.fail(f"no outcome; last state: {states[-1] if states else None}")


def main_file(harness: Harness, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", harness.remote, "show", f"main:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_canary_that_passes_is_promoted(tmp_path: Path) -> None:
    harness, states = run(tmp_path, "Canary", "Progressive", {"v1": HEALTHY, "v2": HEALTHY})
    assert states[-1].phase is Phase.PROMOTED
    assert states[-1].winner == "v2"
    assert [s.weight_of("v2") for s in states if s.phase is Phase.PROGRESSING] == [20, 40, 60, 60]
    assert main_file(harness, f"{APP}/current.yaml") == "image: shop:v2\n"


def test_canary_that_fails_is_rolled_back(tmp_path: Path) -> None:
    bad = Profile(error_rate=0.05, mean_latency_ms=60.0)
    harness, states = run(tmp_path, "Canary", "Progressive", {"v1": HEALTHY, "v2": bad})
    assert states[-1].phase is Phase.ROLLED_BACK
    assert states[-1].winner is None
    assert max(s.weight_of("v2") for s in states) == 20  # it never gained
    assert main_file(harness, f"{APP}/current.yaml") == "image: shop:v1\n"


def test_ab_with_a_better_reward_promotes_the_candidate(tmp_path: Path) -> None:
    better = Profile(error_rate=0.001, mean_latency_ms=60.0, reward=0.14)
    harness, states = run(
        tmp_path, "A/B", "Progressive", {"v1": HEALTHY, "v2": better}, reward=True
    )
    assert states[-1].phase is Phase.PROMOTED
    assert states[-1].winner == "v2"
    assert dict(states[-2].history[-1].chances)["v2"] > 0.95
    assert main_file(harness, f"{APP}/current.yaml") == "image: shop:v2\n"


def test_ab_without_a_better_reward_keeps_the_baseline(tmp_path: Path) -> None:
    harness, states = run(
        tmp_path, "A/B", "Progressive", {"v1": HEALTHY, "v2": HEALTHY}, reward=True
    )
    assert states[-1].phase is Phase.ROLLED_BACK
    assert states[-1].winner == "v1"
    assert main_file(harness, f"{APP}/current.yaml") == "image: shop:v1\n"


def test_abn_with_three_candidates_promotes_the_best_one(tmp_path: Path) -> None:
    profiles = {
        "v1": HEALTHY,
        "v2": Profile(error_rate=0.001, mean_latency_ms=60.0, reward=0.12),
        "v3": Profile(error_rate=0.001, mean_latency_ms=60.0, reward=0.16),
        "v4": Profile(error_rate=0.08, mean_latency_ms=60.0, reward=0.30),  # best reward, fails
    }
    harness, states = run(tmp_path, "A/B/n", "Progressive", profiles, reward=True)
    assert states[-1].phase is Phase.PROMOTED
    assert states[-1].winner == "v3"
    progressing = [s for s in states if s.phase is Phase.PROGRESSING]
    assert all(sum(w for _, w in s.weights) == 100 for s in progressing)
    assert max(s.weight_of("v4") for s in states) == progressing[0].weight_of("v4")
    assert main_file(harness, f"{APP}/current.yaml") == "image: shop:v3\n"


def test_conformance_validates_one_version_without_shifting_traffic(tmp_path: Path) -> None:
    harness, states = run(tmp_path, "Conformance", "Progressive", {"v1": HEALTHY}, load=200.0)
    assert states[-1].phase is Phase.PROMOTED
    assert states[-1].winner == "v1"
    assert all(s.weights == () for s in states)
    assert harness.cluster.requests == 1  # the VirtualService applied by the sync, nothing else


def test_fixed_split_keeps_the_split_it_found(tmp_path: Path) -> None:
    _, states = run(tmp_path, "A/B", "FixedSplit", {"v1": HEALTHY, "v2": HEALTHY}, reward=True)
    progressing = {s.weights for s in states if s.phase is Phase.PROGRESSING}
    assert progressing == {(("v1", 100), ("v2", 0))}
    assert states[-1].phase is Phase.ROLLED_BACK
