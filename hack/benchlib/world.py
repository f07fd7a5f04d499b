"""N running experiments in an Env repo, written straight into Git (no loop needed).

Main gets one experiment file per experiment (``apps/<namespace>/<name>/experiment.yaml``,
a progressive canary whose weights live in its own VirtualService), and the state branch
the state document the loop would have recorded by ``STARTED``: experiment i is at
iteration ``i % AGES`` (a running fleet is at every stage, and a state document grows with
its history), its last iteration at ``STARTED``, so every one is due one interval later.
Both branches are written with ``git fast-import``, so 10,000 experiments take seconds: the
documents come from the template's, with the names and the blob id replaced (parsing and
stepping 10,000 experiments would take minutes). The blob ids are those of the files on
main, so discovery pairs them up. ``served`` builds it in a temporary directory and serves
it with ``git daemon`` for as long as a benchmark needs it. ``build`` also takes another
namespace prefix (many Env repos, each with namespaces of its own), start time (a process
on the real clock) and interval.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.app import fast_import, weight_refs
from benchlib.common import git, git_env
from benchlib.servers import Server, git_daemon
from reconciler.cluster.memory import MemoryCluster
from reconciler.engine import experiment
from reconciler.engine.state import Phase, to_json
from reconciler.gitstore.state_branch import README_PATH, README_TEXT, live_path
from reconciler.metrics.profile import Profile
from reconciler.ports import MetricValue
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Experiment

STARTED = 1_800_000_000.0
INTERVAL = 10
AGES = 10
"""Experiments start the benchmark at iterations 0 to AGES - 1."""
STATE_BRANCH = "reconciler-state"
PROFILES = {
    "stable": Profile(error_rate=0.002, mean_latency_ms=80.0, p95_latency_ms=180.0),
    "canary": Profile(error_rate=0.001, mean_latency_ms=70.0, p95_latency_ms=160.0),
}
"""Every experiment's versions are ``stable`` and ``canary``, so one profile each serves all."""

TEMPLATE = """\
apiVersion: reconciler/v1alpha1
kind: Experiment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  target: {namespace}/{name}
  strategy:
    testingPattern: Canary
    deploymentPattern: Progressive
    weights:
      maxCandidateWeight: 80
      maxCandidateWeightIncrement: 10
  criteria:
    requestCount: istio/request-count
    objectives:
    - metric: istio/error-rate
      upperLimit: "0.01"
    - metric: istio/mean-latency
      upperLimit: 300
  duration:
    intervalSeconds: {interval}
    iterationsPerLoop: 1000
  versionInfo:
    baseline:
      name: stable
{baseline_ref}
    candidates:
    - name: canary
      variables:
      - name: tag
        value: "2.0.0"
{candidate_ref}
  gitops:
    promote:
    - copy:
        from: deployment-canary.yaml
        to: deployment.yaml
        replace:
        - {{old: canary, new: stable}}
    cleanup:
    - deployment-canary.yaml
"""


@dataclass(frozen=True)
class Member:
    """One experiment of the world."""

    namespace: str
    name: str

    @property
    def path(self) -> str:
        """Its experiment file on main."""
        return f"apps/{self.namespace}/{self.name}/experiment.yaml"


def members(count: int, per_namespace: int, prefix: str = "team") -> Iterator[Member]:
    """The world's experiments: ``per_namespace`` to a namespace named ``<prefix>-NNNN``."""
    for i in range(count):
        yield Member(f"{prefix}-{i // per_namespace:04d}", f"app-{i:05d}")


def blob_id(data: bytes) -> str:
    """Git's id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _file(member: Member, interval: int = INTERVAL) -> bytes:
    return TEMPLATE.format(
        name=member.name,
        namespace=member.namespace,
        interval=interval,
        **weight_refs(member.namespace, member.name),
    ).encode()


def build(
    env: Mapping[str, str],
    repo: Path,
    count: int,
    per_namespace: int,
    *,
    prefix: str = "team",
    started: float = STARTED,
    interval: int = INTERVAL,
) -> None:
    """A bare Env repo at ``repo`` with ``count`` running experiments, all due after ``started``.

    Experiments iterate every ``interval`` seconds, in namespaces ``<prefix>-NNNN``.
    """
    git(env, "init", "--quiet", "--bare", "--initial-branch=main", repo)
    world = list(members(count, per_namespace, prefix))
    files = {m.path: _file(m, interval) for m in world}
    fast_import(env, repo, "main", [(f"{count} apps, each with a canary experiment", files)])
    main = git(env, "--git-dir", repo, "rev-parse", "main")
    first = world[0]
    loaded = load_experiments(first.path, files[first.path])
    if not loaded.experiments:
        raise SystemExit(f"bench: the world's experiment does not load: {loaded.problems}")
    template_blob = blob_id(files[first.path])
    templates = _aged(loaded.experiments[0], template_blob, main, started, interval)
    documents = {README_PATH: README_TEXT.encode()}
    for i, member in enumerate(world):
        document = (
            templates[i % AGES]
            .replace(first.namespace.encode(), member.namespace.encode())
            .replace(first.name.encode(), member.name.encode())
            .replace(template_blob.encode(), blob_id(files[member.path]).encode())
        )
        documents[live_path(member.namespace, member.name)] = document
    fast_import(env, repo, STATE_BRANCH, [(f"{count} experiments running", documents)])


_OBSERVED = {
    version: {
        "istio/request-count": MetricValue(5000.0, 5000),
        "istio/error-rate": MetricValue(profile.error_rate, 5000),
        "istio/mean-latency": MetricValue(profile.mean_latency_ms, 5000),
    }
    for version, profile in PROFILES.items()
}


def _aged(
    spec: Experiment, blob: str, main: str, started: float = STARTED, interval: int = INTERVAL
) -> list[bytes]:
    """The state documents of ``spec`` at iterations 0 to AGES - 1, the last at ``started``."""
    observed = _OBSERVED
    documents = []
    for age in range(AGES):
        began = started - age * interval
        state = experiment.start(spec, spec_blob=blob, source_commit=main, now=began).state
        for step in range(1, age + 1):
            stepped = experiment.step(state, observed, began + step * interval)
            if stepped is None or stepped.state.phase is not Phase.PROGRESSING:
                raise SystemExit("bench: the world's experiment stopped progressing")
            state = stepped.state
        documents.append(to_json(state))
    return documents


@dataclass(frozen=True)
class Served:
    """The world's Env repo, built in a temporary directory and served by ``git daemon``."""

    server: Server
    repo: Path
    """The bare repository the server serves as ``env.git``."""
    work: Path
    """The temporary directory (also holds ``home``, the git programs' HOME)."""
    built: float
    """Seconds the build took."""

    @property
    def url(self) -> str:
        """The Env repo's address."""
        return self.server.url(self.repo.name)


@contextlib.contextmanager
def served(bench: str, count: int, per_namespace: int) -> Iterator[Served]:
    """The world of ``count`` experiments, built (timed) and served until the block ends."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench}-") as tmp:
        work = Path(tmp)
        root = work / "repos"
        root.mkdir()
        started = time.perf_counter()
        build(git_env(work / "home"), root / "env.git", count, per_namespace)
        built = time.perf_counter() - started
        with git_daemon(root, work / "home") as server:
            yield Served(server, root / "env.git", work, built)


def splits() -> list[tuple[int, int]]:
    """The (stable, canary) weights the state documents record at each age."""
    first = next(members(1, 1))
    spec = load_experiments(first.path, _file(first)).experiments[0]
    found = []
    for age in range(AGES):
        began = STARTED - age * INTERVAL
        state = experiment.start(spec, spec_blob="0" * 40, source_commit="0" * 40, now=began).state
        for step in range(1, age + 1):
            stepped = experiment.step(state, _OBSERVED, began + step * INTERVAL)
            if stepped is None:
                raise SystemExit("bench: the world's experiment stopped progressing")
            state = stepped.state
        found.append((state.weight_of("stable"), state.weight_of("canary")))
    return found


def cluster(count: int, per_namespace: int) -> MemoryCluster:
    """The cluster the world runs on: one VirtualService per experiment, at its recorded split.

    A running fleet's cluster carries what the state branch records (the loop reads it
    every tick and would correct it otherwise).
    """
    memory = MemoryCluster()
    for manifest in virtual_services(count, per_namespace):
        memory.apply(manifest)
    return memory


def virtual_services(
    count: int, per_namespace: int, prefix: str = "team"
) -> Iterator[dict[str, Any]]:
    """The VirtualService of each experiment of ``build``'s world, at its recorded split."""
    by_age = splits()
    for i, member in enumerate(members(count, per_namespace, prefix)):
        stable, canary = by_age[i % AGES]
        yield {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": {"name": member.name, "namespace": member.namespace},
            "spec": {
                "hosts": [member.name],
                "http": [
                    {
                        "route": [
                            {
                                "destination": {"host": member.name, "subset": "stable"},
                                "weight": stable,
                            },
                            {
                                "destination": {"host": member.name, "subset": "canary"},
                                "weight": canary,
                            },
                        ]
                    }
                ],
            },
        }
