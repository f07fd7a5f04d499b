"""The seams between the controller and the outside world, as small Protocols.

Each Protocol has one real implementation per backend (``reconciler.gitstore`` for Git,
``reconciler.cluster`` for Kubernetes, ``reconciler.metrics`` for Prometheus) and an
in-process one for the demo. The value types that cross a seam live here too, so that
neither side imports the other. Nothing in this module does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.spec.metric import MetricDefinition
from reconciler.spec.model import Load, ObjectRef, WeightObjRef

DEFAULT_STATE_BRANCH = "reconciler-state"
"""The state branch's name unless the configuration names another."""

__all__ = [
    "DEFAULT_STATE_BRANCH",
    "Cluster",
    "CommitInfo",
    "CommitOrigin",
    "CommitSpec",
    "EnvStore",
    "EventSink",
    "GitOpsOperator",
    "Heads",
    "LoadGenerator",
    "LoadPlan",
    "MetricValue",
    "MetricsSource",
    "ObjectRef",
    "Plan",
    "Readiness",
    "SignatureVerifier",
    "UpdateResult",
    "WeightReading",
]


@dataclass(frozen=True)
class Heads:
    """Tips of the two branches after a fetch (hex commit ids; None: branch absent)."""

    main: str | None
    state: str | None


@dataclass(frozen=True)
class CommitSpec:
    """One commit to build on top of the previous one: file changes and a message.

    ``changes`` maps a repository path to its new content, or to None to delete it.
    """

    message: str
    changes: Mapping[str, bytes | None]
    author: tuple[str, str] | None = None
    """(name, e-mail) of a person the commit is by (None: the reconciler's identity)."""
    sign: Callable[[bytes], bytes] | None = None
    """Signs the commit's bytes (an SSH signature as git writes it); None: unsigned."""


@dataclass(frozen=True)
class UpdateResult:
    """What a compare-and-swap branch update did."""

    branch: str
    commits: tuple[str, ...]
    """New commits, oldest first (empty when the plan asked for none)."""
    tip: str | None
    """The branch tip on the remote afterwards."""
    attempts: int
    """Push attempts made, 1 when the first push was accepted."""


@dataclass(frozen=True)
class CommitInfo:
    """A commit as the audit commands and recovery read it."""

    id: str
    message: str
    time: int
    """Committer time, seconds since the epoch."""
    trailers: tuple[tuple[str, str], ...] = field(default=())
    author: str = ""
    """``Name <e-mail>`` of the commit's author (a person's command, or the reconciler)."""

    @property
    def subject(self) -> str:
        """First line of the message."""
        return self.message.split("\n", 1)[0]

    def trailer(self, key: str) -> str | None:
        """Value of the last trailer named ``key`` (case-insensitive), if any."""
        found = None
        for k, v in self.trailers:
            if k.lower() == key.lower():
                found = v
        return found


@dataclass(frozen=True)
class CommitOrigin:
    """The commit that added a file, as a command's origin: who, and their signature."""

    id: str
    author: str
    """``Name <e-mail>``."""
    signature: bytes | None = None
    """The commit's ``gpgsig`` (None: unsigned)."""
    signed: bytes = b""
    """The bytes the signature covers (the commit without its ``gpgsig`` header)."""


Plan = Callable[[str | None], Sequence[CommitSpec]]
"""Given the branch's current tip (None: absent), the commits to add on top of it."""


class EnvStore(Protocol):
    """The Env repo: main holds manifests and experiment files, the state branch our state."""

    @property
    def main_branch(self) -> str:
        """Name of the branch the GitOps operator syncs (``main``)."""
        ...

    @property
    def state_branch(self) -> str:
        """Name of the orphan state branch (``reconciler-state``)."""
        ...

    def fetch(self) -> Heads:
        """Fetch main and the state branch in one fetch; return their tips."""
        ...

    def read_file(self, commit: str, path: str) -> bytes | None:
        """Content of ``path`` at ``commit``, or None when it is absent."""
        ...

    def blob_id(self, commit: str, path: str) -> str | None:
        """Blob id of ``path`` at ``commit``, or None when it is absent."""
        ...

    def list_files(self, commit: str, prefix: str = "") -> Iterator[tuple[str, str]]:
        """Recursively list ``(path, blob id)`` under ``prefix`` (a directory) at ``commit``."""
        ...

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        """Paths added, modified or deleted between two commits (all of ``new`` if old is None)."""
        ...

    def update_branch(self, branch: str, plan: Plan, *, fresh: bool = False) -> UpdateResult:
        """Add ``plan(tip)``'s commits to ``branch`` with a compare-and-swap push.

        With ``fresh`` the branch is fetched first. On rejection the branch is fetched
        again and ``plan`` called with the new tip; bounded attempts with exponential
        backoff and jitter. Never forces.
        """
        ...

    def log(self, tip: str, *, hide: str | None = None) -> Iterator[CommitInfo]:
        """Commits reachable from ``tip`` (newest first), stopping at ``hide``'s ancestry."""
        ...

    def merge_base(self, commits: Sequence[str]) -> str | None:
        """The best common ancestor of ``commits``; None when there is none or one is unknown."""
        ...

    def origin(self, tip: str, path: str, *, limit: int = 200) -> CommitOrigin | None:
        """The commit that added ``path``, walking first parents back from ``tip``.

        None when ``path`` is absent at ``tip`` or older than ``limit`` commits.
        """
        ...


class SignatureVerifier(Protocol):
    """Checks an SSH commit signature against the reconciler's allowed signers."""

    def verify(self, signed: bytes, signature: bytes) -> tuple[str | None, str]:
        """(the allowed signer's principal, ``good``) or (None, why it does not count)."""
        ...


@dataclass(frozen=True)
class Readiness:
    """A verdict and, when not ready, why (for logs and the timeout reason)."""

    ready: bool
    reason: str


@dataclass(frozen=True)
class WeightReading:
    """What the cluster carries at one weight reference, as one read found it."""

    value: int | None
    """The weight; None when the object or the field is absent (``exists`` tells which)."""
    exists: bool = True
    """Whether the object exists (False: deleted, or not created yet by the operator)."""
    error: str | None = None
    """Why the weight could not be read (then ``value`` means nothing)."""
    writers: tuple[str, ...] = ()
    """Who else owns the field, newest first, from the object's ``managedFields``
    (``kustomize-controller (Apply, 2026-12-04T16:00:00Z)``); empty when unknown."""


class Cluster(Protocol):
    """The Kubernetes side the loop needs: weights and readiness."""

    def read_weights(self, refs: Sequence[WeightObjRef]) -> Mapping[WeightObjRef, WeightReading]:
        """The weight at every ref, read with one request per kind and namespace.

        Never raises for a failed read: the failure is the reading's ``error``.
        """
        ...

    def is_ready(self, ref: ObjectRef) -> Readiness:
        """Whether the object says it is ready (Deployment status, a Ready condition)."""
        ...

    def get_weight(self, ref: WeightObjRef) -> int | None:
        """The weight ``ref`` points at, or None when the object or field is absent."""
        ...

    def set_weights(self, weights: Sequence[tuple[WeightObjRef, int]]) -> None:
        """Set every weight; all weights in one object change in one request."""
        ...


@dataclass(frozen=True)
class MetricValue:
    """One metric for one version: a value and its sample size, or no data."""

    value: float | None
    sample_size: int | None = None
    status: str = "ok"
    """``ok``, ``no-data`` or ``unavailable`` (the source failed after its retries)."""


class MetricsSource(Protocol):
    """Where metric values come from (Prometheus, or the demo's profiles)."""

    def use_definitions(self, definitions: Sequence[MetricDefinition]) -> list[str]:
        """Resolve metric names with these Metric documents (main's) from now on.

        Returns what is wrong in them (each document with a problem is left out).
        """
        ...

    def observe(
        self,
        metric: str,
        *,
        version: str,
        namespace: str,
        elapsed_seconds: float,
        variables: Mapping[str, str],
    ) -> MetricValue:
        """Evaluate ``metric`` for one version over the time the experiment has run."""
        ...


@dataclass(frozen=True)
class LoadPlan:
    """One run the built-in load generator keeps sending requests for, and how."""

    run_id: str
    """``namespace/name@<12 hex>``: the stats of a run are kept under it."""
    namespace: str
    """The experiment's namespace (targets must be Services in it, unless allowed more)."""
    load: Load
    interval_seconds: float
    """The experiment's iteration interval: the load is paced per iteration."""
    payload: bytes | None = None
    """``load.payload_file`` as read from main (None: no file, or ``load.payload``)."""
    active: bool = True
    """False while paused or at an approval gate: no requests, the stats kept."""


class LoadGenerator(Protocol):
    """The built-in load generator: HTTP load to versions, measured as Iter8's built-in metrics."""

    def converge(self, plans: Mapping[str, LoadPlan]) -> dict[str, str]:
        """Send load for exactly ``plans`` (by run id) from now on; stop and forget the others.

        Never blocks on the load itself (it runs beside the loop). Returns, by run id, why a
        plan is refused (a target that is not an allowed in-cluster Service, a cap); a
        refused run sends nothing and its metrics have no data.
        """
        ...

    def observe(self, run_id: str, version: str, metric: str) -> MetricValue:
        """One Iter8 built-in metric of one version of a run.

        ``metric`` is ``request-count``, ``error-count``, ``error-rate``, ``mean-latency`` or
        ``latency-<50|75|90|95|99>th-percentile`` (milliseconds). Counted over every
        request this process sent for the run; no data (``MetricValue`` with status
        ``no-data``) before the first response.
        """
        ...


class EventSink(Protocol):
    """Somewhere to tell people about a transition (Kubernetes Events); never fatal."""

    def record(self, about: ObjectRef, reason: str, message: str, *, warning: bool = False) -> None:
        """Leave a note on ``about``; must not raise for a failure to write it."""
        ...


class GitOpsOperator(Protocol):
    """Argo CD or Flux, as far as the loop needs them after an outcome commit."""

    def request_sync(self, commit: str) -> None:
        """Ask the operator to look at the Env repo now."""
        ...

    def synced(self, commit: str) -> str | None:
        """The revision the operator has applied, when it names ``commit``; else None."""
        ...

    def applied_commits(self) -> list[str]:
        """The full ids of the commits the operator reports applied now."""
        ...
