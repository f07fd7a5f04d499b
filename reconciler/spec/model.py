"""The experiment as a typed value: what the loader produces and the engine consumes.

Frozen dataclasses only; every field that a person wrote keeps the location it came from
(in ``Experiment.locations``) so that errors can say ``file:line:column``. This module does
no I/O and parses nothing: ``reconciler.spec.loader`` builds these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.errors import Location


class TestingPattern(StrEnum):
    """How versions are judged (Iter8 ``spec.strategy.testingPattern``)."""

    CANARY = "Canary"
    AB = "A/B"
    ABN = "A/B/n"
    CONFORMANCE = "Conformance"


class DeploymentPattern(StrEnum):
    """How traffic moves (Iter8 ``spec.strategy.deploymentPattern`` plus our BlueGreen)."""

    PROGRESSIVE = "Progressive"
    FIXED_SPLIT = "FixedSplit"
    BLUE_GREEN = "BlueGreen"


@dataclass(frozen=True)
class ObjectRef:
    """One Kubernetes object: ``apiVersion``, ``kind``, name and namespace.

    ``namespace`` None means the connection's default namespace, or none at all for a
    cluster-scoped kind.
    """

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name} ({self.api_version})"


@dataclass(frozen=True)
class WeightObjRef:
    """The field in a Kubernetes object that carries a version's weight."""

    api_version: str
    kind: str
    name: str
    field_path: str
    namespace: str | None = None


@dataclass(frozen=True)
class Version:
    """A baseline or candidate version."""

    name: str
    variables: tuple[tuple[str, str], ...] = ()
    weight_obj_ref: WeightObjRef | None = None

    def variable(self, name: str) -> str | None:
        """Value of the variable ``name``, if the version defines it."""
        for key, value in self.variables:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Objective:
    """A metric that must stay within limits for a version to be valid."""

    metric: str
    upper_limit: float | None = None
    lower_limit: float | None = None

    def holds(self, value: float) -> bool:
        """Whether ``value`` is within both limits (limits are inclusive)."""
        if self.upper_limit is not None and value > self.upper_limit:
            return False
        return not (self.lower_limit is not None and value < self.lower_limit)


@dataclass(frozen=True)
class Reward:
    """A metric to optimise: the winner is best on the first reward."""

    metric: str
    preferred_direction: str  # "High" | "Low"


@dataclass(frozen=True)
class Criteria:
    """What a version must meet and what it should maximise."""

    request_count: str | None = None
    objectives: tuple[Objective, ...] = ()
    rewards: tuple[Reward, ...] = ()
    indicators: tuple[str, ...] = ()
    failure_limit: int = 3
    """Consecutive failed iterations before a rollback (ours: ``failureLimit``)."""
    no_data_limit: int = 5
    """Consecutive iterations without enough data before failing safe (``noDataLimit``)."""
    method: str = "exact"
    """``exact`` (proportions judged with exact bounds and posteriors) or ``point``."""
    confidence: float = 0.95
    """Confidence for proportion objectives and for declaring a reward winner."""
    min_request_count: int | None = None
    """Requests a version must have served before it passes (``minRequestCount``); None:
    ``engine.analysis.default_min_requests`` of the objectives and the confidence."""


@dataclass(frozen=True)
class Duration:
    """How often and how long the experiment runs."""

    interval_seconds: int = 20
    iterations_per_loop: int = 15
    max_loops: int = 1

    @property
    def iterations(self) -> int:
        """Total number of iterations."""
        return self.iterations_per_loop * self.max_loops


@dataclass(frozen=True)
class Weights:
    """Bounds on the candidate's traffic (Iter8 ``spec.strategy.weights``)."""

    max_candidate_weight: int = 100
    max_candidate_weight_increment: int = 10


@dataclass(frozen=True)
class Replacement:
    """A literal text replacement applied while copying a file."""

    old: str
    new: str


@dataclass(frozen=True)
class CopyEdit:
    """Copy ``source`` to ``destination`` with literal replacements."""

    source: str
    destination: str
    replacements: tuple[Replacement, ...] = ()


@dataclass(frozen=True)
class DeleteEdit:
    """Delete files."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class SetEdit:
    """Set one scalar of a YAML file (``.images[0].newTag``), every other byte unchanged."""

    file: str
    path: str
    value: str
    document: int = 0


Edit = CopyEdit | DeleteEdit | SetEdit


@dataclass(frozen=True)
class GitOps:
    """What the outcome commit does to main (``spec.gitops``).

    Paths are relative to the repository root, already normalised by the loader.
    ``cleanup`` is deleted by both outcomes; ``promote`` runs before it when a candidate
    wins, ``rollback`` when none does.
    """

    promote: tuple[Edit, ...] = ()
    rollback: tuple[Edit, ...] = ()
    cleanup: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadinessGate:
    """Objects that must say they are ready before the first iteration (``spec.readiness``)."""

    objects: tuple[ObjectRef, ...] = ()
    timeout_seconds: int = 300
    """Past this, counted from the start, an experiment still waiting ends with no winner."""


BUILTIN_LOAD_METRICS = frozenset(
    {
        "request-count",
        "error-count",
        "error-rate",
        "mean-latency",
        "latency-50th-percentile",
        "latency-75th-percentile",
        "latency-90th-percentile",
        "latency-95th-percentile",
        "latency-99th-percentile",
    }
)
"""Iter8's built-in metrics (namespace ``iter8-system``), measured from the built-in load."""


@dataclass(frozen=True)
class VersionLoad:
    """Where the built-in load generator sends one version's requests."""

    version: str
    """A version of ``versionInfo``; another name is a pseudo version (load, no metrics)."""
    url: str
    """``http(s)://NAME.NAMESPACE.svc[.cluster.local][:PORT][/path]``: an in-cluster Service."""
    headers: tuple[tuple[str, str], ...] = ()
    qps: float | None = None
    """This version's rate, when it is not the load's ``qps``."""


@dataclass(frozen=True)
class Load:
    """The built-in load generator's work for one experiment: requests to each version.

    Read from ``spec.load`` or Iter8's ``metrics/collect`` task; measured as Iter8's
    built-in metrics (``iter8-system/request-count``, ``error-rate``, ``mean-latency``...).
    In every iteration each version gets ``qps`` requests a second over the iteration's
    interval, or over ``duration_seconds`` of it, or ``requests`` requests (at ``qps``);
    the metrics count every request since the run started loading.
    """

    versions: tuple[VersionLoad, ...] = ()
    qps: float = 8.0
    """Requests a second to each version (Iter8's default: 8)."""
    duration_seconds: float | None = None
    requests: int | None = None
    connections: int = 4
    """Parallel connections to each version (Iter8's default: 4)."""
    method: str = "GET"
    payload: str | None = None
    """Inline body (Iter8's ``payloadStr``); POST unless ``method`` says otherwise."""
    payload_file: str | None = None
    """A file of the Env repo (a path from the repository root), size-capped, read from
    main when the run starts loading."""
    payload_url: str | None = None
    """Iter8's ``payloadURL``: fetched once per run from an in-cluster Service (checked as
    the targets are), size-capped."""
    content_type: str | None = None
    timeout_seconds: float = 10.0
    load_only: bool = False
    """Send the requests, record no metrics (Iter8's ``loadOnly``)."""


class GateName(StrEnum):
    """Where an approval gate stands (``spec.approval.before``)."""

    START = "start"
    """Before the candidate gets any traffic (Kargo's approval before a stage)."""
    PROMOTION = "promotion"
    """Before a decided promotion is pushed to main (Flagger's confirm-promotion)."""


class OnTimeout(StrEnum):
    """What an unanswered gate does once ``spec.approval.timeoutSeconds`` passed."""

    ROLLBACK = "rollback"
    PROCEED = "proceed"


@dataclass(frozen=True)
class Approval:
    """Gates a person passes with ``reconciler approve`` (``spec.approval``)."""

    before: tuple[GateName, ...] = ()
    timeout_seconds: int = 86400
    """Counted from when the gate opened."""
    on_timeout: OnTimeout = OnTimeout.ROLLBACK
    require_signed: bool = False
    """Only an approval commit signed by a key of the reconciler's allowed signers counts."""

    def gates(self, name: GateName) -> bool:
        """Whether the experiment waits for an approval at ``name``."""
        return name in self.before


@dataclass(frozen=True)
class Experiment:
    """One experiment document, validated."""

    name: str
    namespace: str
    target: str
    testing_pattern: TestingPattern
    deployment_pattern: DeploymentPattern
    criteria: Criteria
    duration: Duration
    weights: Weights
    baseline: Version
    candidates: tuple[Version, ...]
    gitops: GitOps = GitOps()
    readiness: ReadinessGate = ReadinessGate()
    approval: Approval = Approval()
    load: Load | None = None
    """The built-in load generator's work (None: this experiment sends no load)."""
    api_version: str = "reconciler/v1alpha1"
    path: str = ""
    """Repository path of the file the experiment came from."""
    locations: dict[str, Location] = field(default_factory=dict, compare=False, hash=False)
    """Where each field was written, keyed by its dotted path (``spec.target``)."""

    @property
    def key(self) -> str:
        """``namespace/name``: the experiment's name in the state branch."""
        return f"{self.namespace}/{self.name}"

    @property
    def versions(self) -> tuple[Version, ...]:
        """Baseline first, then the candidates in the order written."""
        return (self.baseline, *self.candidates)

    @property
    def blue_green_cleanup(self) -> tuple[str, ...]:
        """What a blue/green promotion deletes in its later cleanup commit, not in its outcome.

        The winner serves all traffic until the baseline runs its version: the files the
        promotion would delete (``spec.gitops.promote`` deletions and ``cleanup``, the
        candidate's manifests) stay until then. Empty for other patterns.
        """
        if self.deployment_pattern is not DeploymentPattern.BLUE_GREEN:
            return ()
        deleted = [p for e in self.gitops.promote if isinstance(e, DeleteEdit) for p in e.paths]
        return tuple(dict.fromkeys((*deleted, *self.gitops.cleanup)))
