"""Metric documents (Iter8 ``v2alpha2`` and our ``reconciler/v1alpha1``): model, query, loader.

YAML bytes in, typed ``MetricDefinition`` values and ``Problem``s (``file:line:column``)
out, in the style of ``reconciler.spec.loader`` and with the same field readers
(``spec.reader``). A metric's PromQL query is parsed into a ``QueryTemplate``
(``spec.template``); a placeholder that no escaping can make safe (a name outside quotes)
is a load error.
This module never runs a query, never fetches a URL a document names, and never runs jq.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Location
from reconciler.spec.limits import Limits
from reconciler.spec.model import BUILTIN_LOAD_METRICS
from reconciler.spec.reader import OWN_API_VERSION, FieldReader, join
from reconciler.spec.template import (
    QueryTemplate,
    TemplateError,
    parse_query,
)
from reconciler.spec.yamldoc import (
    InvalidDocumentError,
    Problem,
    documents_of_kind,
    excerpt,
    finite_number,
)

API_VERSIONS = frozenset({"iter8.tools/v2alpha2", OWN_API_VERSION})
JQ_EXPRESSION = ".data.result[0].value[1] | tonumber"
"""The one jqExpression accepted: the first sample's value, as a number."""

_KIND_LINE = re.compile(rb"^kind:[ \t]*[\"']?Metric[\"']?[ \t]*(#.*)?$", re.MULTILINE)
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
METRIC_NAME = re.compile(rf"^{_DNS_NAME}$")
NAMESPACE_NAME = re.compile(rf"^{_DNS_LABEL}$")
METRIC_REF = re.compile(rf"^(?:(?P<namespace>{_DNS_LABEL})/)?(?P<name>{_DNS_NAME})$")
"""``namespace/name`` or ``name``: how experiments and ``sampleSize`` name a metric."""
_UNUSED_ITER8 = {
    "urlTemplate": "queries go to the Prometheus configured for the reconciler "
    "(--prometheus-url), never to a URL named in the Env repo",
    "headerTemplates": "the reconciler sends its own configured headers and credentials",
    "secret": "the reconciler reads no Kubernetes Secret for metrics; it uses its own "
    "Prometheus credentials",
    "authType": "the reconciler uses its own Prometheus credentials",
    "method": "queries are sent with GET",
    "body": "queries are sent with GET, without a body",
}


class MetricType(StrEnum):
    """Iter8's ``spec.type``: a Counter only grows, a Gauge is any value."""

    COUNTER = "Counter"
    GAUGE = "Gauge"


@dataclass(frozen=True)
class MetricDefinition:
    """A metric the reconciler can evaluate: builtin, or from a Metric document."""

    name: str
    namespace: str | None
    """None for a document without ``metadata.namespace`` (Iter8 gave it one when applied)."""
    query: QueryTemplate | None
    """None only for a mock metric."""
    metric_type: MetricType = MetricType.GAUGE
    sample_size: str | None = None
    """Reference (``namespace/name`` or ``name``) of the metric counting the sample."""
    units: str | None = None
    description: str | None = None
    mock: tuple[tuple[str, float], ...] = ()
    """Iter8 mock levels per version name: constants, not measurements."""
    api_version: str = "reconciler/v1alpha1"
    path: str | None = None
    """Repository path of the document; None for a builtin metric."""
    location: Location | None = None
    """Where the query (or the document) was written."""

    @property
    def ref(self) -> str:
        """``namespace/name``, or ``name`` when the document has no namespace."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def builtin(self) -> bool:
        """Whether this metric ships with the reconciler."""
        return self.path is None


@dataclass(frozen=True)
class MetricLoadResult:
    """Metric documents that loaded, and every problem found on the way."""

    metrics: tuple[MetricDefinition, ...]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        """Only the problems that kept a document out."""
        return tuple(p for p in self.problems if p.severity == "error")


def looks_like_metric(data: bytes) -> bool:
    """Cheap pre-filter: does the file have a top-level ``kind: Metric`` line?"""
    return _KIND_LINE.search(data) is not None


def load_metrics(
    path: str, data: bytes, *, limits: Limits | None = None, strict: bool = False
) -> MetricLoadResult:
    """Parse every Metric document in one file of the Env repo.

    Args:
        path: the file's path in the repository (used in messages).
        data: the file's content.
        limits: the bounds on the file; the documented defaults when None.
        strict: unknown fields of Iter8 documents are errors too (they always are in
            ``reconciler/v1alpha1`` documents).

    Never raises: whatever the bytes hold, the answer is metrics and problems.
    """
    parsed = documents_of_kind(path, data, "Metric", API_VERSIONS, limits)
    if parsed.problem is not None:
        return MetricLoadResult((), (*parsed.warnings, parsed.problem))
    lines = list(parsed.lines)
    metrics: list[MetricDefinition] = []
    problems: list[Problem] = list(parsed.warnings)
    for document in parsed.documents:
        reader = _Reader(path, lines)
        reader.strict = strict
        metric = reader.metric(document)
        problems.extend(reader.problems)
        if metric is not None and not any(p.severity == "error" for p in reader.problems):
            metrics.append(metric)
    return MetricLoadResult(tuple(metrics), tuple(problems))


class _Reader(FieldReader):
    """Reads one Metric document, recording problems with their locations."""

    def __init__(self, path: str, lines: list[str]) -> None:
        super().__init__(path)
        self.lines = lines

    def metric(self, doc: CommentedMap) -> MetricDefinition | None:
        try:
            return self._metric(doc)
        except InvalidDocumentError:
            return None

    def _metric(self, doc: CommentedMap) -> MetricDefinition | None:
        api_version = self._check_document(doc, API_VERSIONS)
        self.strict = self.strict or api_version == OWN_API_VERSION
        iter8 = api_version == "iter8.tools/v2alpha2"
        metadata = self._map(doc, "metadata", "", required=True)
        name = self._str(metadata, "name", "metadata")
        if name is None:
            raise self._error(self._at(doc, "metadata"), "'metadata.name' is missing")
        if not METRIC_NAME.match(name):
            raise self._error(
                self._at(metadata, "name"),
                f"'metadata.name' must be a Kubernetes name (lower-case letters, digits, '-' "
                f"and '.'), not {excerpt(name)}",
            )
        namespace = self._str(metadata, "namespace", "metadata")
        if namespace is not None and not NAMESPACE_NAME.match(namespace):
            raise self._error(
                self._at(metadata, "namespace"),
                "'metadata.namespace' must be a Kubernetes namespace name, not "
                f"{excerpt(namespace)}",
            )
        spec = self._map(doc, "spec", "", required=True)
        if iter8 and str(spec.get("provider", "")).lower() == "iter8":
            self._builtin_load(spec, name)
            return None
        known = {"description", "type", "units", "sampleSize"}
        known |= (
            {"params", "provider", "jqExpression", "mock", *_UNUSED_ITER8} if iter8 else {"query"}
        )
        self._unknown(spec, "spec", known)
        metric_type = self._type(spec)
        sample_size = self._str(spec, "sampleSize", "spec")
        if sample_size is not None and not METRIC_REF.match(sample_size):
            raise self._error(
                self._at(spec, "sampleSize"),
                f"'spec.sampleSize' must name a metric as 'namespace/name' or 'name', "
                f"not {excerpt(sample_size)}",
            )
        mock: tuple[tuple[str, float], ...] = ()
        if iter8:
            self._iter8_fields(spec)
            mock = self._mock(spec)
            query, location = (None, self._at(spec, "mock")) if mock else self._params(spec)
        else:
            query, location = self._query(spec, "query", "spec")
        return MetricDefinition(
            name=name,
            namespace=namespace,
            query=query,
            metric_type=metric_type,
            sample_size=sample_size,
            units=self._str(spec, "units", "spec"),
            description=self._str(spec, "description", "spec"),
            mock=mock,
            api_version=api_version,
            path=self.path,
            location=location,
        )

    def _builtin_load(self, spec: CommentedMap, name: str) -> None:
        """An Iter8 ``provider: iter8`` document (Iter8's install ships nine): nothing to load.

        Those metrics are measured by the built-in load generator for experiments that send
        load (``spec.load`` or a ``metrics/collect`` task), by their names; the document
        defines no query, so it adds nothing to the catalog.
        """
        if name not in BUILTIN_LOAD_METRICS:
            raise self._error(
                self._at(spec, "provider"),
                f"provider iter8 measures Iter8's built-in metrics only "
                f"({', '.join(sorted(BUILTIN_LOAD_METRICS))}), not {excerpt(name)}",
            )

    def _type(self, spec: CommentedMap) -> MetricType:
        return self._enum(spec, "type", "spec", MetricType, MetricType.GAUGE)

    def _iter8_fields(self, spec: CommentedMap) -> None:
        provider = self._str(spec, "provider", "spec")
        if provider is not None and provider.lower() != "prometheus":
            raise self._error(
                self._at(spec, "provider"),
                f"provider {excerpt(provider)} is not supported: this reconciler reads Prometheus "
                "only (provider: prometheus, with a 'query' param)",
            )
        jq = spec.get("jqExpression")
        if jq is not None and (not isinstance(jq, str) or _squash(jq) != _squash(JQ_EXPRESSION)):
            raise self._error(
                self._at(spec, "jqExpression"),
                f"'spec.jqExpression' {excerpt(jq)} is not supported: jq is never run, only the "
                f"common form '{JQ_EXPRESSION}' (the first sample's value) is understood; "
                "compute the value in the PromQL query instead",
            )
        for key, why in _UNUSED_ITER8.items():
            if key in spec:
                self._warn(self._at(spec, key), f"'spec.{key}' is not used: {why}")

    def _mock(self, spec: CommentedMap) -> tuple[tuple[str, float], ...]:
        node = spec.get("mock")
        if node is None:
            return ()
        if not isinstance(node, CommentedSeq) or not node:
            raise self._error(self._at(spec, "mock"), "'spec.mock' must be a non-empty list")
        levels = []
        for index, item in enumerate(node):
            at = f"spec.mock[{index}]"
            if not isinstance(item, CommentedMap):
                raise self._error(self._at(node, index), f"'{at}' must be a mapping")
            version = self._str(item, "name", at)
            number = finite_number(item.get("level"))
            if version is None or number is None:
                raise self._error(
                    self._at(node, index),
                    f"'{at}' needs a version 'name' and a finite numeric 'level'",
                )
            levels.append((version, number))
        self._warn(
            self._at(spec, "mock"),
            "'spec.mock' values are constants, not measurements: never rely on them as "
            "objectives in production",
        )
        return tuple(levels)

    def _params(self, spec: CommentedMap) -> tuple[QueryTemplate, Location]:
        params = spec.get("params")
        if not isinstance(params, CommentedSeq):
            where = self._at(spec, "params") if "params" in spec else self._at(spec)
            raise self._error(
                where, "'spec.params' must be a list holding the 'query' param (or use 'mock')"
            )
        found: tuple[QueryTemplate, Location] | None = None
        for index, item in enumerate(params):
            at = f"spec.params[{index}]"
            if not isinstance(item, CommentedMap):
                raise self._error(self._at(params, index), f"'{at}' must be a mapping")
            param = self._str(item, "name", at)
            if param == "query":
                found = self._query(item, "value", at)
            else:
                self._warn(
                    self._at(params, index),
                    f"param {excerpt(param)} is not used: only 'query' is sent to Prometheus",
                )
        if found is None:
            raise self._error(self._at(spec, "params"), "'spec.params' has no 'query' param")
        return found

    def _query(self, node: CommentedMap, key: str, where: str) -> tuple[QueryTemplate, Location]:
        text = self._str(node, key, where)
        where = join(where, key)
        if text is None:
            raise self._error(self._at(node), f"'{where}' is missing")
        at = self._at(node, key)
        try:
            return parse_query(text.strip()), at
        except TemplateError as exc:
            raise self._error(
                self._in_value(node, key, text, exc) or at, f"'{where}': {exc.message}"
            ) from None

    def _in_value(
        self, node: CommentedMap, key: str, text: str, exc: TemplateError
    ) -> Location | None:
        """The file position of a query error, for block and single-line scalars."""
        try:
            line, col = node.lc.value(key)
        except (AttributeError, KeyError, TypeError):
            return None
        source = self.lines[line] if line < len(self.lines) else ""
        lead = len(text) - len(text.lstrip())
        offset = exc.offset + lead
        query_line = text.count("\n", 0, offset)
        query_col = offset - (text.rfind("\n", 0, offset) + 1)
        if source[col : col + 1] in {"|", ">"}:
            target = line + 1 + query_line
            if target >= len(self.lines):
                return None
            indent = len(self.lines[target]) - len(self.lines[target].lstrip())
            return Location(self.path, target + 1, indent + query_col + 1)
        if "\n" in text:
            return None
        quoted = 1 if source[col : col + 1] in {'"', "'"} else 0
        return Location(self.path, line + 1, col + quoted + query_col + 1)


def _squash(text: str) -> str:
    return "".join(text.split())
