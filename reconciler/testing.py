"""A whole Env repo world in one object, for the demo and the tests.

``Harness`` holds a real bare Env repo (``WORKDIR/env.git``), the reconciler's cache of it,
the demo's in-memory cluster synced from main (as Argo CD would), profile-driven metrics
that follow the cluster's weights, and a ``Reconciler`` wired to them. Time comes from the
clock it is given: ``DrivenClock`` lets a test step it, ``time.time`` runs it for real.
``restart`` replaces the reconciler by a fresh one with a new cache, as a restarted
process would be. Nothing here is faked below the adapters: Git is real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.cluster.memory import MemoryCluster
from reconciler.controller.loop import Reconciler, TickReport
from reconciler.gitstore.admin import init_bare_repository
from reconciler.gitstore.repo import GitEnvStore
from reconciler.metrics.profile import Profile, ProfileMetrics
from reconciler.ports import CommitSpec
from reconciler.spec.loader import load_experiments, looks_like_experiment
from reconciler.spec.model import Experiment, WeightObjRef

AUTHOR = ("reconciler demo", "reconciler-demo@example.invalid")


class DrivenClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def constant(commits: list[CommitSpec]) -> Callable[[str | None], list[CommitSpec]]:
    """A plan that adds the same commits whatever the tip."""
    return lambda _tip: commits


@dataclass
class Harness:
    """An Env repo, a cluster synced from it, metrics, and a reconciler process."""

    workdir: Path
    clock: Callable[[], float]
    store: GitEnvStore
    cluster: MemoryCluster
    metrics: ProfileMetrics
    namespace: str
    refs: dict[str, WeightObjRef] = field(default_factory=dict)
    processes: int = 0
    reconciler: Reconciler | None = None

    @classmethod
    def create(
        cls,
        workdir: Path,
        commits: Sequence[tuple[str, Mapping[str, bytes]]],
        profiles: Mapping[str, Profile],
        *,
        namespace: str,
        clock: Callable[[], float],
        requests_per_second: float = 2000.0,
        load_per_version: float = 0.0,
    ) -> Harness:
        """Push ``commits`` (message, files) to a new Env repo's main and sync the cluster."""
        remote = init_bare_repository(workdir / "env.git")
        store = GitEnvStore.open(str(remote), workdir / "cache-0.git", author=AUTHOR)
        store.fetch()
        for message, files in commits:
            store.update_branch(store.main_branch, constant([CommitSpec(message, dict(files))]))
        cluster = MemoryCluster()
        refs: dict[str, WeightObjRef] = {}
        metrics = ProfileMetrics(
            profiles,
            lambda version: weight_at(cluster, refs, version),
            clock,
            requests_per_second=requests_per_second,
            load_per_version=load_per_version,
        )
        harness = cls(workdir, clock, store, cluster, metrics, namespace, refs)
        harness.sync()
        harness.restart()
        return harness

    @property
    def remote(self) -> str:
        """The Env repo's path (a bare repository)."""
        return str(self.workdir / "env.git")

    def sync(self) -> int:
        """Apply main's manifests to the cluster, as the GitOps operator would."""
        main = self.store.fetch().main
        if main is None:
            return 0
        files = [(p, self.store.read_file(main, p) or b"") for p, _ in self.store.list_files(main)]
        for path, data in files:
            if looks_like_experiment(data):
                self.refs.update(weight_refs(load_experiments(path, data).experiments))
        return self.cluster.sync(files, namespace=self.namespace)

    def weight_of(self, version: str) -> int:
        """The weight the cluster gives ``version`` now (0 when it has none)."""
        return weight_at(self.cluster, self.refs, version)

    def restart(self, **options: Any) -> Reconciler:  # noqa: ANN401 - Reconciler's options
        """A fresh process: a new cache, nothing in memory but what the Env repo holds.

        ``options`` go to ``Reconciler`` (an operator, ``may_act``, events...).
        """
        self.processes += 1
        store = GitEnvStore.open(
            self.remote, self.workdir / f"cache-{self.processes}.git", author=AUTHOR
        )
        self.reconciler = Reconciler(store, self.cluster, self.metrics, clock=self.clock, **options)
        return self.reconciler

    def tick(self) -> TickReport:
        """One tick of the current process."""
        if self.reconciler is None:
            raise RuntimeError("no reconciler; call restart()")
        return self.reconciler.tick()

    def push_main(self, message: str, files: Mapping[str, bytes | None]) -> str:
        """Commit to main as CI would; returns the new tip."""
        self.store.fetch()
        result = self.store.update_branch(
            self.store.main_branch, constant([CommitSpec(message, dict(files))])
        )
        return result.commits[-1]


def weight_refs(specs: Iterable[Experiment]) -> dict[str, WeightObjRef]:
    """Each version's weight field, by version name, its namespace filled in."""
    return {
        version.name: replace(ref, namespace=ref.namespace or spec.namespace)
        for spec in specs
        for version in spec.versions
        if (ref := version.weight_obj_ref) is not None
    }


def weight_at(cluster: MemoryCluster, refs: Mapping[str, WeightObjRef], version: str) -> int:
    """The weight ``cluster`` gives ``version`` by ``refs`` (0 when it has none)."""
    ref = refs.get(version)
    return (cluster.get_weight(ref) or 0) if ref is not None else 0
