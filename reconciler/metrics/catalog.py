"""Which metric a name in an experiment means: the builtin library plus the Env repo's documents.

Experiments name metrics as ``namespace/name`` (``iter8-istio/error-rate``) or ``name``
(in the experiment's namespace); ``sampleSize`` does the same relative to its document.
Resolution order: a builtin library (``istio/…``, ``gateway/…``, ``nginx/…``,
``linkerd/…``: reserved, documents cannot shadow them); a document with that namespace
and name; the one document with that name and no namespace (Iter8 files often have
none: ``kubectl apply -n`` gave them one); Iter8's builtin ``iter8-system/…`` mapped to
our library where the meaning is the same. Pure: built from values, never reads files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.errors import Location, PermanentError
from reconciler.metrics.builtin import BUILTIN, ITER8_SYSTEM, ITER8_SYSTEM_MAP, LIBRARY_NAMES
from reconciler.spec.loader import Problem
from reconciler.spec.metric import METRIC_REF, MetricDefinition, load_metrics


class MetricNotFoundError(PermanentError):
    """A metric reference that names no builtin metric and no loaded document."""


@dataclass(frozen=True)
class Resolved:
    """A metric definition and the namespace its relative references resolve in."""

    definition: MetricDefinition
    namespace: str
    """The namespace the reference was resolved in (for ``sampleSize`` without one)."""


class Catalog:
    """Builtin metrics and Metric documents, looked up by reference."""

    def __init__(
        self,
        documents: Iterable[MetricDefinition] = (),
        *,
        iter8_system_library: str = "istio",
    ) -> None:
        """Index ``documents``; conflicts are kept in ``problems`` (first one wins).

        Args:
            documents: loaded Metric documents (``reconciler.spec.metric.load_metrics``).
            iter8_system_library: the builtin library Iter8's ``iter8-system/…`` maps to.
        """
        if iter8_system_library not in LIBRARY_NAMES:
            raise ValueError(
                f"iter8_system_library must be one of {', '.join(sorted(LIBRARY_NAMES))}"
            )
        self._iter8_library = iter8_system_library
        self.iter8_system_library = iter8_system_library
        """The builtin library Iter8's ``iter8-system/…`` maps to."""
        self._all: list[MetricDefinition] = []
        self._documents: dict[tuple[str, str], MetricDefinition] = {}
        self._unscoped: dict[str, list[MetricDefinition]] = {}
        problems = []
        for document in documents:
            where = document.location or Location(document.path or "")
            if document.namespace in LIBRARY_NAMES:
                problems.append(
                    Problem(
                        where,
                        "warning",
                        f"metric {document.ref} is ignored: namespace {document.namespace!r} "
                        "is reserved for the builtin library",
                    )
                )
                continue
            if document.namespace is None:
                # Applied into some namespace later: several may share a name (ambiguous
                # only if a reference actually needs one of them).
                self._unscoped.setdefault(document.name, []).append(document)
                self._all.append(document)
                continue
            key = (document.namespace, document.name)
            if key in self._documents:
                first = self._documents[key]
                problems.append(
                    Problem(
                        where,
                        "warning",
                        f"metric {document.ref} is defined again and ignored (first defined "
                        f"at {first.location or first.path})",
                    )
                )
                continue
            self._documents[key] = document
            self._all.append(document)
        self.problems: tuple[Problem, ...] = tuple(problems)

    @classmethod
    def from_files(
        cls, files: Iterable[tuple[str, bytes]], *, iter8_system_library: str = "istio"
    ) -> Catalog:
        """Load every Metric document in ``(path, content)`` pairs; problems in ``problems``."""
        documents: list[MetricDefinition] = []
        problems: list[Problem] = []
        for path, data in files:
            result = load_metrics(path, data)
            documents.extend(result.metrics)
            problems.extend(result.problems)
        catalog = cls(documents, iter8_system_library=iter8_system_library)
        catalog.problems = (*problems, *catalog.problems)
        return catalog

    @property
    def documents(self) -> tuple[MetricDefinition, ...]:
        """The documents in use, in the order given."""
        return tuple(self._all)

    @staticmethod
    def builtin() -> tuple[MetricDefinition, ...]:
        """Every builtin metric, library by library."""
        return tuple(BUILTIN.values())

    def resolve(self, reference: str, namespace: str) -> Resolved:
        """The metric ``reference`` names, seen from ``namespace`` (for a bare ``name``).

        Raises:
            MetricNotFoundError: malformed, unknown, or ambiguous reference; the message
                says what is known.
        """
        match = METRIC_REF.match(reference)
        if match is None:
            raise MetricNotFoundError(
                f"{reference!r} is not a metric reference ('namespace/name' or 'name')"
            )
        scope = match.group("namespace") or namespace
        name = match.group("name")
        builtin = BUILTIN.get(f"{scope}/{name}")
        if builtin is not None:
            return Resolved(builtin, scope)
        if scope in LIBRARY_NAMES:
            raise MetricNotFoundError(
                f"{reference!r}: the builtin {scope} library has no metric {name!r} (it has "
                f"{', '.join(sorted(d.name for d in BUILTIN.values() if d.namespace == scope))})"
            )
        document = self._documents.get((scope, name))
        if document is not None:
            return Resolved(document, scope)
        unscoped = self._unscoped.get(name, [])
        if len(unscoped) == 1:
            return Resolved(unscoped[0], scope)
        if len(unscoped) > 1:
            paths = ", ".join(str(d.path) for d in unscoped)
            raise MetricNotFoundError(
                f"{reference!r} is ambiguous: Metric documents without a namespace named "
                f"{name!r} are in {paths}; give them metadata.namespace"
            )
        if scope == ITER8_SYSTEM and name in ITER8_SYSTEM_MAP:
            mapped = f"{self._iter8_library}/{ITER8_SYSTEM_MAP[name]}"
            return Resolved(BUILTIN[mapped], self._iter8_library)
        hint = (
            f"; Iter8's {ITER8_SYSTEM}/{name} has no builtin equivalent here (see docs/metrics.md)"
            if scope == ITER8_SYSTEM
            else ""
        )
        raise MetricNotFoundError(
            f"no metric {scope}/{name}: not builtin ({', '.join(sorted(LIBRARY_NAMES))}) and "
            f"no Metric document defines it{hint}"
        )
