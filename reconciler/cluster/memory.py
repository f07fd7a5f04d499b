"""An in-process cluster for the demo: objects in memory, weights patched by ``fieldPath``.

It behaves like the API server where the loop can tell: weights of one object change
together (one "request" per object), setting what is already there sends nothing, and a
path that does not resolve is an error naming the object, and the weight policy refuses
what it refuses in a real cluster, before touching anything (``reconciler.cluster.guard``).
``sync`` plays the GitOps operator: it applies the manifests found in main's files.
Never talks to a network.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML

from reconciler.cluster import guard
from reconciler.cluster.readiness import assess
from reconciler.errors import PermanentError
from reconciler.ports import Readiness, WeightReading
from reconciler.spec import fieldpath
from reconciler.spec.model import ObjectRef, WeightObjRef
from reconciler.spec.weightpolicy import WeightPolicy

ObjectKey = tuple[str, str, str | None, str]


class ObjectNotFoundError(PermanentError):
    """The object a weight points at does not exist."""


class MemoryCluster:
    """Kubernetes objects held in a dict, keyed by apiVersion, kind, namespace and name."""

    def __init__(
        self, *, policy: guard.PolicySource | None = None, namespace: str = "default"
    ) -> None:
        """Start empty; ``policy`` as ``KubeCluster`` takes it, ``namespace`` the default one."""
        self._policy: guard.PolicySource = policy if policy is not None else WeightPolicy()
        self.namespace = namespace
        """Where a reference that names no namespace lands, for the policy."""
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.requests = 0
        """Write requests served (a no-op set sends none)."""
        self.reads = 0
        """Read requests ``read_weights`` stands for: one per kind and namespace, as a LIST."""
        self.writers: dict[tuple[ObjectKey, str], str] = {}
        """Who last wrote a field by hand (``edit``), as ``managedFields`` would say."""

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create or replace one object, as ``kubectl apply`` would."""
        metadata = manifest.get("metadata") or {}
        key = (
            str(manifest["apiVersion"]),
            str(manifest["kind"]),
            metadata.get("namespace"),
            str(metadata["name"]),
        )
        with self._lock:
            self._objects[key] = copy.deepcopy(manifest)
            self.requests += 1

    def sync(self, files: Iterable[tuple[str, bytes]], namespace: str = "default") -> int:
        """Apply every Kubernetes object in these YAML files, skipping experiments.

        Returns:
            The number of objects applied.
        """
        yaml = YAML(typ="safe")
        count = 0
        for _path, data in files:
            for document in yaml.load_all(data.decode()):
                if not isinstance(document, dict) or "kind" not in document:
                    continue
                if document["kind"] in {"Experiment", "Metric", "Kustomization"}:
                    continue
                document.setdefault("metadata", {}).setdefault("namespace", namespace)
                self.apply(document)
                count += 1
        return count

    def clear(self) -> None:
        """Forget every object, as a rebuilt cluster would."""
        with self._lock:
            self._objects.clear()

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """A deep copy of one object, or None."""
        with self._lock:
            found = self._objects.get((api_version, kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def is_ready(self, ref: ObjectRef) -> Readiness:
        """Readiness as the API server's status would say (Deployment, Ready condition)."""
        return assess(self.get(ref.api_version, ref.kind, ref.namespace, ref.name))

    def get_weight(self, ref: WeightObjRef) -> int | None:
        """The weight at ``ref``, or None when the object or the field is absent."""
        guard.check(
            guard.current(self._policy), [ref], default_namespace=self.namespace, verb="get"
        )
        obj = self.get(ref.api_version, ref.kind, ref.namespace, ref.name)
        return _weight_at(obj, ref) if obj is not None else None

    def read_weights(self, refs: Sequence[WeightObjRef]) -> Mapping[WeightObjRef, WeightReading]:
        """Every ref's weight, counted as one read per kind and namespace (a LIST).

        A ref the policy refuses is not read: its reading carries the refusal.
        """
        allowed, out = guard.split_readable(
            guard.current(self._policy), refs, default_namespace=self.namespace
        )
        groups = {(ref.api_version, ref.kind, ref.namespace) for ref in allowed}
        with self._lock:
            self.reads += len(groups)
            for ref in allowed:
                key = (ref.api_version, ref.kind, ref.namespace, ref.name)
                obj = self._objects.get(key)
                if obj is None:
                    out[ref] = WeightReading(None, exists=False)
                    continue
                writer = self.writers.get((key, ref.field_path))
                out[ref] = WeightReading(_weight_at(obj, ref), writers=(writer,) if writer else ())
        return {ref: out[ref] for ref in refs}

    def edit(self, ref: WeightObjRef, weight: int, *, manager: str) -> None:
        """Set one weight as someone else would (a person with kubectl, another controller)."""
        key = (ref.api_version, ref.kind, ref.namespace, ref.name)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise ObjectNotFoundError(f"{ref.kind} {ref.namespace}/{ref.name} does not exist")
            fieldpath.set_value(current, fieldpath.parse(ref.field_path), weight)
            self.writers[(key, ref.field_path)] = f"{manager} (Update, now)"
            self.requests += 1

    def set_weights(self, weights: Sequence[tuple[WeightObjRef, int]]) -> None:
        """Set the weights; one write per object whose weights change.

        Raises:
            WeightPolicyError: the policy refuses a ref (then nothing changes).
            ObjectNotFoundError: an object, or a field's parent, is missing.
        """
        guard.check(
            guard.current(self._policy),
            [ref for ref, _ in weights],
            default_namespace=self.namespace,
            verb="patch",
        )
        by_object: dict[ObjectKey, list[tuple[WeightObjRef, int]]] = {}
        for ref, weight in weights:
            key = (ref.api_version, ref.kind, ref.namespace, ref.name)
            by_object.setdefault(key, []).append((ref, weight))
        with self._lock:
            for key, pairs in by_object.items():
                current = self._objects.get(key)
                if current is None:
                    raise ObjectNotFoundError(
                        f"{key[1]} {key[2]}/{key[3]} ({key[0]}) does not exist; the weights "
                        "of this experiment point at it"
                    )
                updated = copy.deepcopy(current)
                for ref, weight in pairs:
                    steps = fieldpath.parse(ref.field_path)
                    try:
                        fieldpath.set_value(updated, steps, weight)
                    except fieldpath.FieldPathError as exc:
                        raise ObjectNotFoundError(
                            f"{key[1]} {key[2]}/{key[3]}: {ref.field_path}: {exc}"
                        ) from None
                if updated != current:
                    self._objects[key] = updated
                    self.requests += 1


def _weight_at(obj: dict[str, Any], ref: WeightObjRef) -> int | None:
    """The weight ``ref``'s fieldPath holds in ``obj`` (None when the field is absent)."""
    try:
        value = fieldpath.get(obj, fieldpath.parse(ref.field_path))
    except fieldpath.FieldPathError:
        return None
    return int(value) if value is not None else None


class MemoryOperator:
    """Plays Argo CD or Flux for the demo and the tests: told to sync, it reports when it did.

    ``applied`` is the main commit whose manifests were last applied to the cluster (the
    caller applies them and then sets it, as the operator's sync would).
    """

    def __init__(self) -> None:
        """Nothing requested, nothing applied."""
        self.requested: list[str] = []
        self.applied: str | None = None

    def request_sync(self, commit: str) -> None:
        """Note the request (a real operator would look at the repo now)."""
        self.requested.append(commit)

    def synced(self, commit: str) -> str | None:
        """``commit`` once it is the applied revision."""
        return commit if self.applied == commit else None

    def applied_commits(self) -> list[str]:
        """The applied revision, if any."""
        return [self.applied] if self.applied else []
