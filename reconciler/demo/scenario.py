"""``reconciler demo``: a whole canary against a real (bare, local) Env repo, in seconds.

Builds an Env repo with a small bookinfo-like app (stable Deployment, candidate Deployment,
an Istio VirtualService at 100/0, a canary experiment), then runs the real loop with the
in-process adapters: a cluster in memory, synced from main the way Argo CD would, and
metrics derived from each version's weight and a profile. ``pass`` gives the candidate a
healthy profile, ``fail`` an error rate above its objective. Prints progress and, at the
end, the audit trail of both branches.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO

from reconciler.cluster.memory import MemoryCluster
from reconciler.controller.loop import TickReport
from reconciler.engine.state import ExperimentState
from reconciler.gitstore.repo import GitEnvStore
from reconciler.metrics.profile import Profile
from reconciler.testing import Harness

APP_DIR = "apps/bookinfo"
BASE_FILES = ("productpage.yaml", "routing.yaml")
CI_FILES = ("productpage-candidate.yaml", "experiment.yaml")
AUTHOR = ("reconciler demo", "reconciler-demo@example.invalid")
PROFILES = {
    "pass": {
        "productpage-stable": Profile(error_rate=0.004, mean_latency_ms=95.0),
        "productpage-candidate": Profile(error_rate=0.002, mean_latency_ms=80.0),
    },
    "fail": {
        "productpage-stable": Profile(error_rate=0.004, mean_latency_ms=95.0),
        "productpage-candidate": Profile(error_rate=0.06, mean_latency_ms=85.0),
    },
}
EXPECTED = {"pass": "promoted", "fail": "rolled-back"}
REQUEST_RATE = 2000.0
"""Requests per second the app gets: enough for the error-rate objective to be decided
with 95 % confidence within the first iterations."""


@dataclass(frozen=True)
class DemoResult:
    """How the demo ended."""

    outcome: str | None
    """``promoted``, ``rolled-back`` or None when it did not finish in time."""
    expected: str
    workdir: Path

    @property
    def ok(self) -> bool:
        """Whether the scenario ended as it should."""
        return self.outcome == self.expected


def demo_file(name: str) -> bytes:
    """One of the demo app's files, as shipped in the package."""
    return resources.files("reconciler.demo").joinpath("data", APP_DIR, name).read_bytes()


def app_commits() -> list[tuple[str, dict[str, bytes]]]:
    """Main's history before the experiment: the app, then CI's candidate and experiment."""
    return [
        (message, {f"{APP_DIR}/{name}": demo_file(name) for name in names})
        for message, names in (
            ("bookinfo: productpage v1 stable behind an Istio VirtualService", BASE_FILES),
            ("ci: productpage v2 candidate with its canary experiment", CI_FILES),
        )
    ]


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="reconciler-demo-") as tmp:
        yield Path(tmp)


def run(
    scenario: str,
    out: TextIO,
    *,
    workdir: Path | None = None,
    timeout: float = 60.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> DemoResult:
    """Run the demo scenario (``pass`` or ``fail``) and print what happens to ``out``."""
    with _workdir(workdir) as where:
        if (where / "env.git").exists():
            raise FileExistsError(f"{where / 'env.git'} exists; give an empty --workdir")
        harness = Harness.create(
            where,
            app_commits(),
            PROFILES[scenario],
            namespace="bookinfo",
            clock=clock,
            requests_per_second=REQUEST_RATE,
        )
        kept = "" if workdir is not None else " (removed at the end; --workdir DIR keeps it)"
        out.write(f"Env repo: {harness.remote}{kept}  scenario: {scenario}\n")
        out.write(f"Candidate profile: {PROFILES[scenario]['productpage-candidate']}\n\n")
        outcome = _drive(harness, out, timeout, clock, sleep)
        _print_end(harness.store, harness.cluster, out)
        return DemoResult(outcome, EXPECTED[scenario], where)


def _drive(
    harness: Harness,
    out: TextIO,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str | None:
    deadline = clock() + timeout
    while clock() < deadline:
        report = harness.tick()
        print_report(report, out)
        for transition, _commit in report.recorded:
            if transition.state.phase.final and transition.state.outcome_commit:
                return "promoted" if transition.state.winner else "rolled-back"
        sleep(0.2)
    out.write(f"the experiment did not finish within {timeout:.0f} s\n")
    return None


def print_report(report: TickReport, out: TextIO) -> None:
    """One tick's problems, errors and recorded transitions, as the demo prints them."""
    out.writelines(f"  {problem}\n" for problem in report.problems)
    out.writelines(f"  error: {error}\n" for error in report.errors)
    for transition, commit in report.recorded:
        state = transition.state
        out.write(f"[{commit[:7]}] {transition.summary}\n")
        out.write(f"          phase {state.phase.value}, weights {_weights(state)}")
        record = state.history[-1] if state.history else None
        if record is not None and record.time == state.updated_at:
            verdicts = " ".join(f"{v}={r}" for v, r in record.verdicts)
            values = ", ".join(
                f"{v} {m.rsplit('/', 1)[-1]}={x:g}" for v, m, x in record.metrics if x is not None
            )
            out.write(f"\n          verdict {verdicts}; {values}")
        out.write("\n")


def _weights(state: ExperimentState) -> str:
    return " ".join(f"{name}={weight}" for name, weight in state.weights)


def _print_end(store: GitEnvStore, cluster: MemoryCluster, out: TextIO) -> None:
    heads = store.fetch()
    vs = cluster.get("networking.istio.io/v1beta1", "VirtualService", "bookinfo", "productpage")
    if vs is not None:
        routes = vs["spec"]["http"][0]["route"]
        split = ", ".join(f"{r['destination']['subset']}={r.get('weight', 0)}" for r in routes)
        out.write(f"\nVirtualService productpage now routes: {split}\n")
    for branch, tip in ((store.state_branch, heads.state), (store.main_branch, heads.main)):
        out.write(f"\n$ git log --oneline {branch}\n")
        if tip is None:
            continue
        out.writelines(f"{commit.id[:7]} {commit.subject}\n" for commit in store.log(tip))
    if heads.main is not None:
        names = sorted(p for p, _ in store.list_files(heads.main, APP_DIR))
        out.write(f"\nmain now holds: {', '.join(names)}\n")
        stable = store.read_file(heads.main, f"{APP_DIR}/productpage.yaml") or b""
        images = [line.strip() for line in stable.decode().splitlines() if "image:" in line]
        out.write(f"the stable Deployment runs: {', '.join(images)}\n")
