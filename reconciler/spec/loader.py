"""Load Experiment documents (Iter8 ``v2alpha2`` and our ``reconciler/v1alpha1``) from YAML.

Parsing happens here, at the edge: YAML bytes in, typed ``Experiment`` values and a list of
``Problem``s (``file:line:column: severity: message``) out. A document with an error is
left out of the result and never half-loaded; warnings (unknown fields, Iter8 actions
that we never run) keep the document. This module never executes anything a document
says and never reads a file itself: the caller passes the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Location
from reconciler.spec import fieldpath
from reconciler.spec.criteria_reader import CriteriaReader
from reconciler.spec.limits import Limits
from reconciler.spec.load_reader import LoadReader
from reconciler.spec.model import (
    BUILTIN_LOAD_METRICS,
    Approval,
    Criteria,
    DeploymentPattern,
    Duration,
    Experiment,
    GitOps,
    Load,
    ObjectRef,
    ReadinessGate,
    TestingPattern,
    Version,
    WeightObjRef,
    Weights,
)
from reconciler.spec.reader import OWN_API_VERSION
from reconciler.spec.yamldoc import (
    InvalidDocumentError,
    Problem,
    documents_of_kind,
    excerpt,
)

_T = TypeVar("_T")

API_VERSIONS = frozenset({"iter8.tools/v2alpha2", OWN_API_VERSION})
_KIND_LINE = re.compile(rb"^kind:[ \t]*[\"']?Experiment[\"']?[ \t]*(#.*)?$", re.MULTILINE)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
VERSION_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
"""A version name: a Kubernetes (DNS-1123 subdomain) name. Version names are written into
trailers as ``name=weight`` items (no ``,``, ``=`` or blanks), into state-document paths
and PromQL label values; this keeps every one of them able to carry it."""

__all__ = [
    "API_VERSIONS",
    "LoadResult",
    "MetricReference",
    "Problem",
    "experiment_lines",
    "load_experiments",
    "looks_like_experiment",
]


@dataclass(frozen=True)
class MetricReference:
    """A metric an Experiment document names, and where."""

    field: str
    """``spec.criteria.objectives[0].metric``."""
    metric: str
    namespace: str
    """The experiment's namespace: a bare metric name may resolve in it."""
    location: Location


@dataclass(frozen=True)
class LoadResult:
    """Experiments that loaded, and every problem found on the way."""

    experiments: tuple[Experiment, ...]
    problems: tuple[Problem, ...]
    references: tuple[MetricReference, ...] = ()
    """The metrics every document names whose criteria could be read, loaded or not: a
    check of them (``validate``) shows in the same pass as the document's other errors."""

    @property
    def errors(self) -> tuple[Problem, ...]:
        """Only the problems that kept a document out."""
        return tuple(p for p in self.problems if p.severity == "error")


def looks_like_experiment(data: bytes) -> bool:
    """Cheap pre-filter: does the file have a top-level ``kind: Experiment`` line?

    Lets discovery skip parsing the many manifests that cannot be experiments.
    """
    return _KIND_LINE.search(data) is not None


def experiment_lines(data: bytes) -> int:
    """How many top-level ``kind: Experiment`` lines the file has (one per such document)."""
    return len(_KIND_LINE.findall(data))


def load_experiments(
    path: str,
    data: bytes,
    *,
    repo_path: str | None = None,
    limits: Limits | None = None,
    strict: bool = False,
) -> LoadResult:
    """Parse every Experiment document in one file of the Env repo.

    Args:
        path: the file's path as messages should show it.
        data: the file's content.
        repo_path: the file's path in the repository, when it differs from ``path``
            (``spec.gitops`` paths are relative to its directory).
        limits: the bounds on the file (size, documents, aliases, nesting); the
            documented defaults when None.
        strict: unknown fields of Iter8 documents are errors too (they always are in
            ``reconciler/v1alpha1`` documents).

    Never raises: whatever the bytes hold, the answer is experiments and problems.
    """
    parsed = documents_of_kind(path, data, "Experiment", API_VERSIONS, limits)
    if parsed.problem is not None:
        return LoadResult((), (*parsed.warnings, parsed.problem))
    problems: list[Problem] = list(parsed.warnings)
    experiments: list[Experiment] = []
    references: list[MetricReference] = []
    for document in parsed.documents:
        reader = _Reader(path, repo_path or path)
        reader.strict = strict
        experiment = reader.experiment(document)
        problems.extend(sorted(reader.problems, key=lambda p: (p.location.line, p.location.column)))
        references.extend(reader.references)
        if experiment is not None and not any(p.severity == "error" for p in reader.problems):
            experiments.append(experiment)
    return LoadResult(tuple(experiments), tuple(problems), tuple(references))


class _Reader(CriteriaReader, LoadReader):
    """Reads one Experiment document, recording problems with their locations."""

    def __init__(self, path: str, repo_path: str) -> None:
        super().__init__(path)
        self.repo_path = repo_path
        self.references: list[MetricReference] = []

    # -- the document --------------------------------------------------------------------

    def experiment(self, doc: CommentedMap) -> Experiment | None:
        try:
            return self._experiment(doc)
        except InvalidDocumentError:
            return None

    def _experiment(self, doc: CommentedMap) -> Experiment:
        api_version = self._check_document(doc, API_VERSIONS)
        self.strict = self.strict or api_version == OWN_API_VERSION
        self._unknown(doc, "", {"apiVersion", "kind", "metadata", "spec"})
        metadata = self._map(doc, "metadata", "", required=True)
        name = self._req(metadata, "name", "metadata")
        spec = self._map(doc, "spec", "", required=True)
        target = self._req(spec, "target", "spec")
        target_namespace = target.split("/", 1)[0] if "/" in target else None
        namespace = self._str(metadata, "namespace", "metadata") or target_namespace or "default"
        for label, value in (("metadata.name", name), ("metadata.namespace", namespace)):
            if not _NAME.match(value) or len(value) > 253:  # noqa: PLR2004 - Kubernetes' limit
                raise self._error(
                    self.locations.get(label, self._at(metadata)),
                    f"'{label}' must be a Kubernetes name (lower-case letters, digits, '-' "
                    f"and '.'), not {excerpt(value)}",
                )
        known = {"target", "strategy", "criteria", "duration", "versionInfo"}
        if api_version == OWN_API_VERSION:
            known.update({"gitops", "readiness", "approval", "load"})
        self._unknown(spec, "spec", known)
        # Each section is read on its own, so one error per section shows at once, not only
        # the first of the document; the rules that tie sections together need them all.
        strategy = self._section(lambda: self._strategy(spec))
        version_info = self._section(lambda: self._map(spec, "versionInfo", "spec", required=True))
        versions = (
            self._section(lambda: self._versions(version_info))
            if version_info is not None
            else None
        )
        criteria = self._section(
            lambda: self._criteria(self._map(spec, "criteria", "spec", required=False))
        )
        if criteria is not None:
            self.references = self._references(criteria, namespace)
        duration = self._section(
            lambda: self._duration(self._map(spec, "duration", "spec", required=False))
        )
        gitops = self._section(lambda: self._gitops(spec)) if "gitops" in known else GitOps()
        readiness = (
            self._section(lambda: self._readiness(spec))
            if "readiness" in known
            else ReadinessGate()
        )
        approval = (
            self._section(lambda: self._approval(spec)) if "approval" in known else Approval()
        )
        load = self._section(lambda: self._load(spec, namespace, own="load" in known))
        if (
            approval is None
            or load is None
            or strategy is None
            or version_info is None
            or versions is None
            or criteria is None
            or duration is None
            or gitops is None
            or readiness is None
        ):
            raise InvalidDocumentError(self.path)
        testing, deployment, weights = strategy
        baseline, candidates = versions
        experiment = Experiment(
            name=name,
            namespace=namespace,
            target=target,
            testing_pattern=testing,
            deployment_pattern=deployment,
            criteria=criteria,
            duration=duration,
            weights=weights,
            baseline=baseline,
            candidates=candidates,
            gitops=gitops,
            readiness=readiness,
            approval=approval,
            load=load or None,
            api_version=api_version,
            path=self.repo_path,
            locations=self.locations,
        )
        self._check_pattern(experiment, spec, version_info)
        return experiment

    def _load(self, spec: CommentedMap, namespace: str, *, own: bool) -> Load | Literal[False]:
        """The built-in load (False when none: None is the section's failure)."""
        strategy = spec.get("strategy")
        actions = strategy.get("actions") if isinstance(strategy, CommentedMap) else None
        collect = None
        if isinstance(actions, CommentedMap):
            collect = self._collect_load(actions, namespace, self._at(strategy, "actions"))
        elif actions is not None:
            self._warn(
                self._at(strategy, "actions"),
                "'spec.strategy.actions' is never executed (nothing in the Env repo runs as "
                "code); describe the promotion and rollback commits in 'spec.gitops' with "
                "apiVersion reconciler/v1alpha1",
            )
        written = self._own_load(spec, namespace) if own else None
        if written is not None and collect is not None:
            raise self._error(
                self._at(spec, "load"),
                "'spec.load' and a metrics/collect task both ask for load: keep one",
            )
        found = written or collect
        if found is not None and not found.load_only:
            measured = {f"iter8-system/{name}" for name in BUILTIN_LOAD_METRICS}
            self.references = [r for r in self.references if r.metric not in measured]
        return found or False

    def _references(self, criteria: Criteria, namespace: str) -> list[MetricReference]:
        named = [("spec.criteria.requestCount", criteria.request_count)]
        named += [
            (f"spec.criteria.objectives[{i}].metric", o.metric)
            for i, o in enumerate(criteria.objectives)
        ]
        named += [
            (f"spec.criteria.rewards[{i}].metric", r.metric) for i, r in enumerate(criteria.rewards)
        ]
        named += [(f"spec.criteria.indicators[{i}]", m) for i, m in enumerate(criteria.indicators)]
        fallback = self.locations.get("spec.criteria", Location(self.path))
        return [
            MetricReference(field, metric, namespace, self.locations.get(field, fallback))
            for field, metric in named
            if metric is not None
        ]

    @staticmethod
    def _section(read: Callable[[], _T]) -> _T | None:
        """``read()``, or None when it recorded an error (which stops only that section)."""
        try:
            return read()
        except InvalidDocumentError:
            return None

    def _check_pattern(
        self, experiment: Experiment, spec: CommentedMap, version_info: CommentedMap
    ) -> None:
        """Rules that tie the testing pattern to the versions and criteria."""
        testing = experiment.testing_pattern
        pattern_at = self.locations.get("spec.strategy.testingPattern", self._at(spec))
        count = len(experiment.candidates)
        if testing is TestingPattern.CONFORMANCE and count:
            raise self._error(
                self._at(version_info, "candidates"),
                "Conformance tests one version: remove 'spec.versionInfo.candidates' or use "
                "testingPattern Canary",
            )
        if testing in {TestingPattern.CANARY, TestingPattern.AB} and count != 1:
            raise self._error(
                self._owner.get(id(version_info), pattern_at),
                f"{testing.value} needs exactly one candidate in "
                f"'spec.versionInfo.candidates', found {count}; use A/B/n for several",
            )
        if testing is TestingPattern.ABN and count < 1:
            raise self._error(
                self._owner.get(id(version_info), pattern_at),
                "A/B/n needs at least one candidate in 'spec.versionInfo.candidates'",
            )
        if testing in {TestingPattern.AB, TestingPattern.ABN} and not experiment.criteria.rewards:
            raise self._error(
                self.locations.get("spec.criteria", pattern_at),
                f"{testing.value} picks the version that is best on a reward: add "
                "'spec.criteria.rewards' with a metric and preferredDirection High or Low",
            )
        if testing is TestingPattern.CONFORMANCE:
            return
        self._check_blue_green(experiment, spec)
        missing = [v.name for v in experiment.versions if v.weight_obj_ref is None]
        if not missing:
            return
        message = (
            f"versions {', '.join(missing)} have no 'weightObjRef', so their traffic cannot be set"
        )
        if experiment.deployment_pattern is DeploymentPattern.FIXED_SPLIT:
            self._warn(
                self._owner.get(id(version_info), pattern_at),
                f"{message}: a rollback cannot return traffic to the baseline",
            )
        else:
            raise self._error(
                self._owner.get(id(version_info), pattern_at),
                f"{message}; {experiment.deployment_pattern.value} shifts traffic, add a "
                "weightObjRef (apiVersion, kind, name, fieldPath) to each version",
            )

    def _strategy(self, spec: CommentedMap) -> tuple[TestingPattern, DeploymentPattern, Weights]:
        strategy = self._map(spec, "strategy", "spec", required=True)
        self._unknown(
            strategy, "spec.strategy", {"testingPattern", "deploymentPattern", "weights", "actions"}
        )
        testing = self._enum(strategy, "testingPattern", "spec.strategy", TestingPattern)
        deployment = self._enum(
            strategy, "deploymentPattern", "spec.strategy", DeploymentPattern,
            DeploymentPattern.PROGRESSIVE,
        )  # fmt: skip
        node = self._map(strategy, "weights", "spec.strategy", required=False)
        self._unknown(
            node, "spec.strategy.weights", {"maxCandidateWeight", "maxCandidateWeightIncrement"}
        )
        weights = Weights(
            max_candidate_weight=self._int(
                node, "maxCandidateWeight", "spec.strategy.weights", 100, low=0, high=100
            ),
            max_candidate_weight_increment=self._int(
                node, "maxCandidateWeightIncrement", "spec.strategy.weights", 10, low=1, high=100
            ),
        )
        return testing, deployment, weights

    def _duration(self, node: CommentedMap) -> Duration:
        where = "spec.duration"
        self._unknown(node, where, {"intervalSeconds", "iterationsPerLoop", "maxLoops"})
        return Duration(
            interval_seconds=self._int(node, "intervalSeconds", where, 20, low=1, high=86400),
            iterations_per_loop=self._int(node, "iterationsPerLoop", where, 15, low=1, high=10000),
            max_loops=self._int(node, "maxLoops", where, 1, low=1, high=1000),
        )

    def _versions(self, node: CommentedMap) -> tuple[Version, tuple[Version, ...]]:
        where = "spec.versionInfo"
        self._unknown(node, where, {"baseline", "candidates"})
        baseline = self._version(
            self._map(node, "baseline", where, required=True), f"{where}.baseline"
        )
        candidates = tuple(
            self._each_map(
                self._seq(node, "candidates", where), f"{where}.candidates", self._version
            )
        )
        fields = [
            f"{where}.baseline",
            *(f"{where}.candidates[{i}]" for i in range(len(candidates))),
        ]
        first: dict[str, str] = {}
        for field, version in zip(fields, (baseline, *candidates), strict=True):
            if version.name in first:
                raise self._error(
                    self.locations.get(f"{field}.name", self._parent(node)),
                    f"'{field}.name' {excerpt(version.name)} is already the name of "
                    f"'{first[version.name]}': version names must be unique",
                )
            first[version.name] = field
        return baseline, candidates

    def _version(self, node: CommentedMap, at: str) -> Version:
        self._unknown(node, at, {"name", "variables", "weightObjRef"})
        name = self._req(node, "name", at)
        if not VERSION_NAME.fullmatch(name):
            raise self._error(
                self._at(node, "name"),
                f"'{at}.name' must be a Kubernetes name (lower-case letters, digits, '-' and "
                f"'.', at most 253, starting and ending with a letter or digit; it is written "
                f"into commit trailers and queries), not {excerpt(name)}",
            )

        def variable(item: CommentedMap, vat: str) -> tuple[str, str]:
            self._unknown(item, vat, {"name", "value"})
            key = self._req(item, "name", vat)
            value = item.get("value")
            if value is None or isinstance(value, (CommentedMap, CommentedSeq)):
                raise self._error(self._at(item), f"'{vat}.value' must be a scalar")
            return key, str(value)

        variables = tuple(
            self._each_map(self._seq(node, "variables", at), f"{at}.variables", variable)
        )
        ref = None
        if "weightObjRef" in node:
            ref = self._weight_ref(
                self._map(node, "weightObjRef", at, required=True), f"{at}.weightObjRef"
            )
        return Version(name=name, variables=variables, weight_obj_ref=ref)

    def _weight_ref(self, node: CommentedMap, at: str) -> WeightObjRef:
        self._unknown(node, at, {"apiVersion", "kind", "namespace", "name", "fieldPath"})
        values = {
            key: self._req(node, key, at) for key in ("apiVersion", "kind", "name", "fieldPath")
        }
        path = values["fieldPath"]
        try:
            fieldpath.parse(path)
        except fieldpath.FieldPathError as exc:
            raise self._error(self._at(node, "fieldPath"), str(exc)) from None
        return WeightObjRef(
            api_version=str(values["apiVersion"]),
            kind=str(values["kind"]),
            name=str(values["name"]),
            field_path=path,
            namespace=self._str(node, "namespace", at),
        )

    def _readiness(self, spec: CommentedMap) -> ReadinessGate:
        where = "spec.readiness"
        node = self._map(spec, "readiness", "spec", required=False)
        self._unknown(node, where, {"objects", "timeoutSeconds"})

        def one(item: CommentedMap, at: str) -> ObjectRef:
            self._unknown(item, at, {"apiVersion", "kind", "name", "namespace"})
            return ObjectRef(
                api_version=self._req(item, "apiVersion", at),
                kind=self._req(item, "kind", at),
                name=self._req(item, "name", at),
                namespace=self._str(item, "namespace", at),
            )

        return ReadinessGate(
            objects=tuple(
                self._each_map(self._seq(node, "objects", where), f"{where}.objects", one)
            ),
            timeout_seconds=self._int(node, "timeoutSeconds", where, 300, low=1, high=86400),
        )
