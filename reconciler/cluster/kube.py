"""The ``Cluster`` port on a real API server: read and set weights, read readiness.

``read_weights`` reads the weights of every live experiment with one LIST per kind and
namespace (not one GET per object: the client costs milliseconds a request, and the loop
reads every tick), and names who else owns each weight field (``managedFields``); where
RBAC grants ``get`` but not ``list``, it falls back to one GET per object and says once
what to grant.
``set_weights`` groups the weights by object and, per object, reads it, plans one JSON
Patch guarded by ``test`` operations (``reconciler.cluster.patches``) and sends it; when
another writer changed those weights in between, the API server refuses the whole patch,
and the object is read again and the patch recomputed, within bounds. It never
overwrites a value it has not seen, and it sends nothing when the object already carries
the weights. Retries of busy or failing servers happen below, in ``Kube.request``.
Every reference is first held against the weight policy (``reconciler.cluster.guard``):
one outside the allowed namespaces, or naming a field that is not a known or configured
weight field, is refused before any request about it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reconciler.cluster import guard, ownership, patches, readiness
from reconciler.cluster.client import JSON_PATCH, Kube
from reconciler.cluster.errors import (
    ClusterPermanentError,
    ConflictError,
    FieldError,
    ForbiddenError,
    NotFoundError,
)
from reconciler.cluster.resources import ObjectRef
from reconciler.errors import ReconcilerError
from reconciler.ports import Readiness, WeightReading
from reconciler.spec.model import WeightObjRef
from reconciler.spec.weightpolicy import WeightPolicy

log = structlog.get_logger(__name__)


class KubeCluster:
    """Weights and readiness through the API server (``reconciler.ports.Cluster``)."""

    def __init__(
        self,
        kube: Kube,
        *,
        conflict_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        after_read: Callable[[ObjectRef], None] | None = None,
        policy: guard.PolicySource | None = None,
    ) -> None:
        """Use ``kube``; re-read and retry an object at most ``conflict_attempts`` times.

        ``after_read`` runs between reading an object and patching it: the window in
        which another writer can interfere (tests use it to be that writer). ``policy``
        says which weight references may be touched; by default the known weight fields
        in any namespace (``reconciler run`` always passes the configured one).
        """
        self.kube = kube
        self._policy: guard.PolicySource = policy if policy is not None else WeightPolicy()
        self._attempts = conflict_attempts
        self._sleep = sleep
        self._after_read = after_read
        self._lock = threading.Lock()
        self.requests = 0
        """Write requests sent (a set that changes nothing sends none)."""
        self.reads = 0
        """Read requests sent by ``read_weights`` (LISTs, or GETs where LIST is denied)."""
        self._unlistable: set[tuple[str, str]] = set()
        """Kinds (apiVersion, kind) whose LIST RBAC denied: read one GET per object."""
        self._read: dict[ObjectRef, dict[str, Any]] = {}
        """The objects the last ``read_weights`` read. A weight patch is planned on its
        object's copy (taken at most a tick ago; the patch's ``test`` operations refuse it
        if a weight it read has changed since) and GETs the object only after a conflict:
        one request an object set instead of two."""

    # -- weights ------------------------------------------------------------------------

    def get_weight(self, ref: WeightObjRef) -> int | None:
        """The weight ``ref`` points at, or None when the object or the field is absent.

        Raises:
            WeightPolicyError: the policy refuses ``ref`` (nothing is requested).
        """
        guard.check(
            guard.current(self._policy), [ref], default_namespace=self.kube.namespace, verb="get"
        )
        obj = self.kube.get(_object_ref(ref))
        if obj is None:
            return None
        try:
            return patches.read_weight(obj, patches.weight_field(ref))
        except patches.WeightFieldError as exc:
            raise self._field_error(ref, exc) from None

    def read_weights(self, refs: Sequence[WeightObjRef]) -> Mapping[WeightObjRef, WeightReading]:
        """The weight at every ref: one LIST per kind and namespace; failures in the reading.

        A ref the policy refuses is not read: its reading carries the refusal.
        """
        try:
            policy = guard.current(self._policy)
        except ReconcilerError as exc:
            return {ref: WeightReading(None, error=str(exc)) for ref in refs}
        allowed, out = guard.split_readable(policy, refs, default_namespace=self.kube.namespace)
        groups: dict[tuple[str, str, str | None], list[WeightObjRef]] = {}
        for ref in allowed:
            groups.setdefault((ref.api_version, ref.kind, ref.namespace), []).append(ref)
        read: dict[ObjectRef, dict[str, Any]] = {}
        for (api_version, kind, namespace), members in groups.items():
            try:
                found = self._objects_of(api_version, kind, namespace, members)
            except ReconcilerError as exc:
                out.update({ref: WeightReading(None, error=str(exc)) for ref in members})
                continue
            for ref in members:
                obj = found.get(ref.name)
                out[ref] = self._reading(ref, obj)
                if obj is not None:
                    read[_object_ref(ref)] = obj
        with self._lock:
            self._read = read
        return {ref: out[ref] for ref in refs}

    def _objects_of(
        self, api_version: str, kind: str, namespace: str | None, refs: Sequence[WeightObjRef]
    ) -> dict[str, dict[str, Any]]:
        """The objects ``refs`` name, by name: one LIST, or one GET each where LIST is denied."""
        if (api_version, kind) not in self._unlistable:
            try:
                with self._lock:
                    self.reads += 1
                items = self.kube.list_objects(api_version, kind, namespace)
            except ForbiddenError as exc:
                self._unlistable.add((api_version, kind))
                log.warning(
                    "weights_list_denied",
                    kind=kind,
                    api_version=api_version,
                    error=str(exc),
                    fix=f"grant 'list' on {kind} (manifests/core/rbac.yaml does): one request "
                    "per namespace instead of one per object, every tick",
                )
            else:
                names = {ref.name for ref in refs}
                return {
                    str(item["metadata"]["name"]): item
                    for item in items
                    if (item.get("metadata") or {}).get("name") in names
                }
        found: dict[str, dict[str, Any]] = {}
        for ref in {ref.name: ref for ref in refs}.values():  # one GET per object
            with self._lock:
                self.reads += 1
            obj = self.kube.get(_object_ref(ref))
            if obj is not None:
                found[ref.name] = obj
        return found

    def _reading(self, ref: WeightObjRef, obj: Mapping[str, Any] | None) -> WeightReading:
        if obj is None:
            return WeightReading(None, exists=False)
        try:
            field = patches.weight_field(ref)
            value = patches.read_weight(obj, field)
        except patches.WeightFieldError as exc:
            return WeightReading(None, error=str(self._field_error(ref, exc)))
        return WeightReading(
            value, writers=ownership.writers(obj, field.steps, exclude=self.kube.field_manager)
        )

    def set_weights(self, weights: Sequence[tuple[WeightObjRef, int]]) -> None:
        """Set every weight; all weights in one object change in one guarded request.

        Raises:
            ConflictError: other writers kept changing an object (after the bounded retries).
            FieldError: a fieldPath does not resolve in its object.
            WeightPolicyError: the policy refuses a ref (then nothing at all is sent).
            NotFoundError, ForbiddenError, ClusterPermanentError: reported once.
        """
        guard.check(
            guard.current(self._policy),
            [ref for ref, _ in weights],
            default_namespace=self.kube.namespace,
            verb="patch",
        )
        by_object: dict[ObjectRef, list[tuple[WeightObjRef, int]]] = {}
        for ref, weight in weights:
            by_object.setdefault(_object_ref(ref), []).append((ref, weight))
        for target, pairs in by_object.items():
            planned_from: list[str] = []
            retrying = Retrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
                retry=retry_if_exception_type(ConflictError),
                sleep=self._sleep,
                reraise=True,
            )
            retrying(self._set_object, target, pairs, planned_from)

    def _set_object(
        self,
        target: ObjectRef,
        pairs: Sequence[tuple[WeightObjRef, int]],
        planned_from: list[str],
    ) -> None:
        with self._lock:  # the copy serves the first attempt only: a retry reads afresh
            obj = self._read.pop(target, None) if not planned_from else None
        if obj is None:
            obj = self.kube.get(target)
        if obj is None:
            resource, namespace = self.kube.locate(target)
            raise NotFoundError(
                f"{target} does not exist; the weights of an experiment point at it",
                verb="get",
                target=resource.target(namespace, target.name),
                status=404,
            )
        try:
            fields = [(patches.weight_field(ref), weight) for ref, weight in pairs]
            if any(patches.is_ingress(ref) for ref, _ in pairs):
                patches.check_canary(obj, target.name)
            ops = patches.plan_patch(obj, fields)
        except patches.WeightFieldError as exc:
            raise self._field_error(pairs[0][0], exc) from None
        if not ops:
            return
        version = str(obj.get("metadata", {}).get("resourceVersion", ""))
        if planned_from and planned_from[-1] == version:
            # Refused, yet nobody changed the object: not a conflict; do not retry.
            resource, namespace = self.kube.locate(target)
            raise ClusterPermanentError(
                f"{target}: the API server refuses the weight patch {ops} although the "
                "object did not change (a field the patch names is not writable?)",
                verb="patch",
                target=resource.target(namespace, target.name),
                status=422,
            )
        planned_from.append(version)
        if self._after_read is not None:
            self._after_read(target)
        try:
            self.kube.patch(target, ops, content_type=JSON_PATCH)
        except ConflictError as exc:
            log.info("weights_conflict", object=str(target), error=str(exc))
            raise
        finally:
            with self._lock:
                self.requests += 1
        log.debug("weights_patched", object=str(target), patch=ops)

    def _field_error(self, ref: WeightObjRef, exc: Exception) -> FieldError:
        target = _object_ref(ref)
        resource, namespace = self.kube.locate(target)
        return FieldError(
            f"{target}: fieldPath {ref.field_path}: {exc}",
            verb="patch",
            target=resource.target(namespace, target.name),
        )

    # -- readiness ----------------------------------------------------------------------

    def get_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object as JSON, or None when it does not exist."""
        return self.kube.get(ref)

    def is_ready(self, ref: ObjectRef) -> Readiness:
        """Whether the Deployment (or any object with a ``Ready`` condition) is ready."""
        return readiness.assess(self.kube.get(ref))


def _object_ref(ref: WeightObjRef) -> ObjectRef:
    return ObjectRef(ref.api_version, ref.kind, ref.name, ref.namespace)
