"""Load Experiment documents (Iter8 ``v2alpha2`` and our ``reconciler/v1alpha1``) from YAML.

Parsing happens here, at the edge: YAML bytes in, typed ``Experiment`` values and a list of
``Problem``s (``file:line:column: severity: message``) out. A document with an error is
left out of the result and never half-loaded; warnings (unknown fields, Iter8 actions
that we never run) keep the document. This module never executes anything a document
says and never reads a file itself: the caller passes the bytes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Location
from reconciler.spec import fieldpath
from reconciler.spec.limits import Limits
from reconciler.spec.model import (
    CopyEdit,
    Criteria,
    DeleteEdit,
    DeploymentPattern,
    Duration,
    Edit,
    Experiment,
    GitOps,
    Objective,
    ObjectRef,
    ReadinessGate,
    Replacement,
    Reward,
    SetEdit,
    TestingPattern,
    Version,
    WeightObjRef,
    Weights,
)
from reconciler.spec.repopath import split_path
from reconciler.spec.yamldoc import (
    DocumentReader,
    InvalidDocumentError,
    Problem,
    documents_of_kind,
    excerpt,
    finite_number,
)

_T = TypeVar("_T")

API_VERSIONS = frozenset({"iter8.tools/v2alpha2", "reconciler/v1alpha1"})
_KIND_LINE = re.compile(rb"^kind:[ \t]*[\"']?Experiment[\"']?[ \t]*(#.*)?$", re.MULTILINE)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
VERSION_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
"""A version name: a Kubernetes (DNS-1123 subdomain) name. Version names are written into
trailers as ``name=weight`` items (no ``,``, ``=`` or blanks), into state-document paths
and PromQL label values; this keeps every one of them able to carry it."""

__all__ = [
    "API_VERSIONS",
    "LoadResult",
    "Problem",
    "experiment_lines",
    "load_experiments",
    "looks_like_experiment",
]


@dataclass(frozen=True)
class LoadResult:
    """Experiments that loaded, and every problem found on the way."""

    experiments: tuple[Experiment, ...]
    problems: tuple[Problem, ...]

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
    path: str, data: bytes, *, repo_path: str | None = None, limits: Limits | None = None
) -> LoadResult:
    """Parse every Experiment document in one file of the Env repo.

    Args:
        path: the file's path as messages should show it.
        data: the file's content.
        repo_path: the file's path in the repository, when it differs from ``path``
            (``spec.gitops`` paths are relative to its directory).
        limits: the bounds on the file (size, documents, aliases, nesting); the
            documented defaults when None.

    Never raises: whatever the bytes hold, the answer is experiments and problems.
    """
    parsed = documents_of_kind(path, data, "Experiment", API_VERSIONS, limits)
    if parsed.problem is not None:
        return LoadResult((), (*parsed.warnings, parsed.problem))
    problems: list[Problem] = list(parsed.warnings)
    experiments: list[Experiment] = []
    for document in parsed.documents:
        reader = _Reader(path, repo_path or path)
        experiment = reader.experiment(document)
        problems.extend(sorted(reader.problems, key=lambda p: (p.location.line, p.location.column)))
        if experiment is not None and not any(p.severity == "error" for p in reader.problems):
            experiments.append(experiment)
    return LoadResult(tuple(experiments), tuple(problems))


class _Reader(DocumentReader):
    """Reads one document, recording problems with their locations."""

    def __init__(self, path: str, repo_path: str) -> None:
        super().__init__(path)
        self.repo_path = repo_path
        self.locations: dict[str, Location] = {}
        self._owner: dict[int, Location] = {}
        """Where the key that holds each mapping was written (for 'missing' errors)."""

    # -- locations and problems ------------------------------------------------------------

    def _parent(self, node: CommentedMap) -> Location:
        """Where a field missing from ``node`` should be reported: at the key holding it."""
        return self._owner.get(id(node)) or self._at(node)

    def _unknown(self, node: CommentedMap, where: str, known: set[str]) -> None:
        for key in node:
            if key not in known:
                self._warn(
                    self._at(node, key),
                    f"unknown field '{where}.{key}' is ignored (known here: "
                    f"{', '.join(sorted(known))})",
                )

    # -- typed field readers -------------------------------------------------------------

    def _map(self, node: CommentedMap, key: str, where: str, *, required: bool) -> CommentedMap:
        value = node.get(key)
        if value is None:
            if required:
                raise self._error(self._parent(node), f"'{_join(where, key)}' is missing")
            return CommentedMap()
        if not isinstance(value, CommentedMap):
            raise self._error(self._at(node, key), f"'{_join(where, key)}' must be a mapping")
        self.locations[_join(where, key)] = self._owner[id(value)] = self._at(node, key)
        return value

    def _seq(self, node: CommentedMap, key: str, where: str) -> CommentedSeq:
        value = node.get(key)
        if value is None:
            return CommentedSeq()
        if not isinstance(value, CommentedSeq):
            raise self._error(self._at(node, key), f"'{where}.{key}' must be a list")
        return value

    def _str(
        self, node: CommentedMap, key: str, where: str, *, required: bool = False
    ) -> str | None:
        value = node.get(key)
        if value is None:
            if required:
                raise self._error(self._parent(node), f"'{where}.{key}' is missing")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._error(self._at(node, key), f"'{where}.{key}' must be a non-empty string")
        self.locations[f"{where}.{key}"] = self._at(node, key)
        return str(value)

    def _req(self, node: CommentedMap, key: str, where: str) -> str:
        value = self._str(node, key, where, required=True)
        if value is None:  # _str raised already; this keeps the type precise
            raise self._error(self._parent(node), f"'{_join(where, key)}' is missing")
        return value

    def _int(
        self, node: CommentedMap, key: str, where: str, default: int, *, low: int, high: int
    ) -> int:
        value = node.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._error(
                self._at(node, key), f"'{where}.{key}' must be an integer from {low} to {high}"
            )
        return int(value)

    def _number(self, node: CommentedMap, key: str, where: str) -> float | None:
        value = node.get(key)
        if value is None:
            return None
        number = finite_number(value)
        if number is None:
            raise self._error(
                self._at(node, key),
                f"'{where}.{key}' must be a number or a quoted number like \"0.01\" (finite, "
                f"at most 1e15 in size), not {excerpt(value)}",
            )
        return number

    def _each_map(
        self, seq: CommentedSeq, where: str, read: Callable[[CommentedMap, str], Any]
    ) -> list[Any]:
        out = []
        for index, item in enumerate(seq):
            if not isinstance(item, CommentedMap):
                raise self._error(self._at(seq, index), f"'{where}[{index}]' must be a mapping")
            out.append(read(item, f"{where}[{index}]"))
        return out

    # -- the document --------------------------------------------------------------------

    def experiment(self, doc: CommentedMap) -> Experiment | None:
        try:
            return self._experiment(doc)
        except InvalidDocumentError:
            return None

    def _experiment(self, doc: CommentedMap) -> Experiment:
        api_version = self._check_document(doc, API_VERSIONS)
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
        if api_version == "reconciler/v1alpha1":
            known.update({"gitops", "readiness"})
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
        duration = self._section(
            lambda: self._duration(self._map(spec, "duration", "spec", required=False))
        )
        gitops = self._section(lambda: self._gitops(spec)) if "gitops" in known else GitOps()
        readiness = (
            self._section(lambda: self._readiness(spec))
            if "readiness" in known
            else ReadinessGate()
        )
        if (
            strategy is None
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
            api_version=api_version,
            path=self.repo_path,
            locations=self.locations,
        )
        self._check_pattern(experiment, spec, version_info)
        return experiment

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
                self._owner.get(id(version_info), pattern_at),
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
        self._check_blue_green_deletes(experiment, spec)
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

    def _check_blue_green_deletes(self, experiment: Experiment, spec: CommentedMap) -> None:
        """Warn when a blue/green promotion deletes files: maybe the winner's own manifests.

        A blue/green winner serves all traffic until the GitOps operator has applied the
        promotion (then traffic returns to the baseline, which runs the winner's version
        by then); deleting its manifests in that same commit lets the operator remove it
        while it serves.
        """
        if experiment.deployment_pattern is not DeploymentPattern.BLUE_GREEN:
            return
        deleted = [*experiment.gitops.cleanup]
        for edit in experiment.gitops.promote:
            if isinstance(edit, DeleteEdit):
                deleted.extend(edit.paths)
        if not deleted:
            return
        self._warn(
            self.locations.get("spec.gitops", self._at(spec)),
            f"BlueGreen: the promotion deletes {', '.join(deleted)}; with Argo CD or Flux "
            "configured, the winner serves all traffic until the operator has applied that "
            "commit, so if these are the winner's manifests the operator removes it while "
            "it serves. Delete them in a later commit (once the experiment is archived)",
        )

    def _strategy(self, spec: CommentedMap) -> tuple[TestingPattern, DeploymentPattern, Weights]:
        strategy = self._map(spec, "strategy", "spec", required=True)
        self._unknown(
            strategy, "spec.strategy", {"testingPattern", "deploymentPattern", "weights", "actions"}
        )
        if "actions" in strategy:
            self._warn(
                self._at(strategy, "actions"),
                "'spec.strategy.actions' is never executed (nothing in the Env repo runs as "
                "code); describe the promotion and rollback commits in 'spec.gitops' with "
                "apiVersion reconciler/v1alpha1",
            )
        testing_text = self._req(strategy, "testingPattern", "spec.strategy")
        try:
            testing = TestingPattern(testing_text)
        except ValueError:
            raise self._error(
                self._at(strategy, "testingPattern"),
                f"'spec.strategy.testingPattern' {excerpt(testing_text)} is not one of "
                f"{', '.join(p.value for p in TestingPattern)}",
            ) from None
        deployment_text = self._str(strategy, "deploymentPattern", "spec.strategy") or "Progressive"
        try:
            deployment = DeploymentPattern(deployment_text)
        except ValueError:
            raise self._error(
                self._at(strategy, "deploymentPattern"),
                f"'spec.strategy.deploymentPattern' {excerpt(deployment_text)} is not one of "
                f"{', '.join(p.value for p in DeploymentPattern)}",
            ) from None
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

    def _criteria(self, node: CommentedMap) -> Criteria:
        where = "spec.criteria"
        self._unknown(
            node,
            where,
            {
                "requestCount",
                "objectives",
                "rewards",
                "indicators",
                "failureLimit",
                "noDataLimit",
                "method",
                "confidence",
                "minRequestCount",
            },
        )

        def objective(item: CommentedMap, at: str) -> Objective:
            self._unknown(item, at, {"metric", "upperLimit", "lowerLimit"})
            metric = self._req(item, "metric", at)
            upper = self._number(item, "upperLimit", at)
            lower = self._number(item, "lowerLimit", at)
            if upper is None and lower is None:
                raise self._error(
                    self._at(item), f"'{at}' has neither 'upperLimit' nor 'lowerLimit'"
                )
            if node.get("method") != "point" and (upper == 0 or lower == 1):
                key = "upperLimit" if upper == 0 else "lowerLimit"
                self._warn(
                    self._at(item, key),
                    f"'{at}.{key}: {0 if upper == 0 else 1}' can never pass if the metric is a "
                    "proportion: no finite sample shows a rate of exactly 0 or 1 at any "
                    "confidence, so every run ends without a winner. Use a small margin "
                    "(0.001) or 'spec.criteria.method: point'",
                )
            return Objective(metric=metric, upper_limit=upper, lower_limit=lower)

        def reward(item: CommentedMap, at: str) -> Reward:
            self._unknown(item, at, {"metric", "preferredDirection"})
            metric = self._req(item, "metric", at)
            direction = self._req(item, "preferredDirection", at)
            if direction not in {"High", "Low"}:
                raise self._error(
                    self._at(item, "preferredDirection"),
                    f"'{at}.preferredDirection' must be High or Low, not {excerpt(direction)}",
                )
            return Reward(metric=metric, preferred_direction=direction)

        indicators = []
        for index, item in enumerate(self._seq(node, "indicators", where)):
            if not isinstance(item, str):
                raise self._error(
                    self._at(node, "indicators"), f"'{where}.indicators[{index}]' must be a name"
                )
            indicators.append(item)
        return Criteria(
            request_count=self._str(node, "requestCount", where),
            objectives=tuple(
                self._each_map(
                    self._seq(node, "objectives", where), f"{where}.objectives", objective
                )
            ),
            rewards=tuple(
                self._each_map(self._seq(node, "rewards", where), f"{where}.rewards", reward)
            ),
            indicators=tuple(indicators),
            failure_limit=self._int(node, "failureLimit", where, 3, low=1, high=1000),
            no_data_limit=self._int(node, "noDataLimit", where, 5, low=1, high=1000),
            method=self._method(node, where),
            confidence=self._confidence(node, where),
            min_request_count=(
                self._int(node, "minRequestCount", where, 1, low=1, high=10**12)
                if node.get("minRequestCount") is not None
                else None
            ),
        )

    def _method(self, node: CommentedMap, where: str) -> str:
        method = self._str(node, "method", where) or "exact"
        if method == "wilson":
            self._warn(
                self._at(node, "method"),
                f"'{where}.method: wilson' now means 'exact': proportions are judged with "
                "exact Clopper-Pearson bounds and Beta posteriors; write 'exact'",
            )
            return "exact"
        if method not in {"exact", "point"}:
            raise self._error(
                self._at(node, "method"),
                f"'{where}.method' must be 'exact' (proportions judged with exact bounds and "
                f"posteriors) or 'point' (plain thresholds), not {excerpt(method)}",
            )
        return method

    def _confidence(self, node: CommentedMap, where: str) -> float:
        value = self._number(node, "confidence", where)
        if value is None:
            return 0.95
        if not 0.5 <= value < 1.0:  # noqa: PLR2004 - the meaningful range of a confidence
            raise self._error(
                self._at(node, "confidence"),
                f"'{where}.confidence' must be at least 0.5 and below 1, such as 0.95",
            )
        return value

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
        names = [baseline.name, *(c.name for c in candidates)]
        if len(set(names)) != len(names):
            raise self._error(
                self._parent(node),
                f"version names must be unique, got {', '.join(map(excerpt, names))}",
            )
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

    def _gitops(self, spec: CommentedMap) -> GitOps:
        where = "spec.gitops"
        node = self._map(spec, "gitops", "spec", required=False)
        self._unknown(node, where, {"promote", "rollback", "cleanup"})
        return GitOps(
            promote=self._edits(node, "promote", where),
            rollback=self._edits(node, "rollback", where),
            cleanup=tuple(self._paths(node, "cleanup", where)),
        )

    def _edits(self, node: CommentedMap, key: str, where: str) -> tuple[Edit, ...]:
        def edit(item: CommentedMap, at: str) -> Edit:
            if set(item) == {"copy"}:
                body = self._map(item, "copy", at, required=True)
                self._unknown(body, f"{at}.copy", {"from", "to", "replace"})
                source = self._repo_path(body, "from", f"{at}.copy")
                destination = self._repo_path(body, "to", f"{at}.copy")
                replacements = []
                for index, rep in enumerate(self._seq(body, "replace", f"{at}.copy")):
                    rat = f"{at}.copy.replace[{index}]"
                    if not isinstance(rep, CommentedMap):
                        raise self._error(self._at(body, "replace"), f"'{rat}' must be a mapping")
                    self._unknown(rep, rat, {"old", "new"})
                    old = self._req(rep, "old", rat)
                    new = rep.get("new")
                    if not isinstance(new, str):
                        raise self._error(self._at(rep), f"'{rat}.new' must be a string")
                    replacements.append(Replacement(old=old, new=new))
                return CopyEdit(source, destination, tuple(replacements))
            if set(item) == {"delete"}:
                return DeleteEdit(tuple(self._paths(item, "delete", at)))
            if set(item) == {"set"}:
                return self._set_edit(self._map(item, "set", at, required=True), f"{at}.set")
            raise self._error(
                self._at(item),
                f"'{at}' must have exactly one of 'copy' (with 'from', 'to' and optional "
                f"'replace'), 'set' (with 'file', 'path' and 'value') or 'delete' (a list "
                f"of paths), got {', '.join(excerpt(k) for k in list(item)[:5])}",
            )

        return tuple(self._each_map(self._seq(node, key, where), f"{where}.{key}", edit))

    def _set_edit(self, body: CommentedMap, at: str) -> SetEdit:
        self._unknown(body, at, {"file", "path", "value", "document"})
        file = self._repo_path(body, "file", at)
        path = self._req(body, "path", at)
        try:
            fieldpath.parse(path)
        except fieldpath.FieldPathError as exc:
            raise self._error(self._at(body, "path"), str(exc)) from None
        value = body.get("value")
        if value is None or isinstance(value, (CommentedMap, CommentedSeq)):
            raise self._error(
                self._parent(body), f"'{at}.value' must be a scalar such as \"1.2.3\""
            )
        document = self._int(body, "document", at, 0, low=0, high=1000)
        return SetEdit(file=file, path=path, value=str(value), document=document)

    def _paths(self, node: CommentedMap, key: str, where: str) -> list[str]:
        seq = self._seq(node, key, where)
        return [self._normalise(seq, i, f"{where}.{key}[{i}]") for i in range(len(seq))]

    def _repo_path(self, node: CommentedMap, key: str, where: str) -> str:
        self._req(node, key, where)
        return self._normalise(node, key, f"{where}.{key}")

    def _normalise(self, node: CommentedMap | CommentedSeq, key: Any, at: str) -> str:  # noqa: ANN401
        raw = node[key]
        if not isinstance(raw, str) or not raw:
            raise self._error(self._at(node, key), f"'{at}' must be a path")
        if raw.startswith("/"):
            raise self._error(
                self._at(node, key),
                f"'{at}' is absolute ({excerpt(raw)}); write it relative to the experiment file's "
                "directory",
            )
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(self.repo_path), raw))
        if joined == ".." or joined.startswith("../") or joined == ".":
            raise self._error(
                self._at(node, key), f"'{at}' ({excerpt(raw)}) points outside the repository"
            )
        if self.repo_path.startswith(joined + "/"):
            raise self._error(
                self._at(node, key),
                f"'{at}' ({excerpt(raw)}) names the directory {excerpt(joined)}; name a file",
            )
        try:
            # What the promotion checks before it writes main's tree (an absolute path is a
            # file read outside a repository, by validate or a test).
            split_path(joined.removeprefix("/"))
        except ValueError:
            raise self._error(
                self._at(node, key),
                f"'{at}' ({excerpt(raw)}) is not a path a promotion may write: no '.git', no "
                "empty, '.' or '..' parts left after joining, no backslash, no NUL",
            ) from None
        return joined


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
