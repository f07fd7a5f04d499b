"""The namespaces an Env repo may touch in a cluster, as ``reconciler run`` is configured.

In order: the namespaces the setting ``kubernetes.weightNamespaces`` lists; else the
destination of the GitOps object the configuration names for the hand-off (an Argo CD
Application's ``spec.destination.namespace``, a Flux Kustomization's
``spec.targetNamespace``), read from the cluster and read again every ``refresh``
seconds; else, and when that object names no destination namespace, the reconciler's own
namespace only. Never the experiment's ``metadata.namespace``: it comes from the Env repo
itself, so it would confine nothing. The decision itself is
``reconciler.spec.weightpolicy``; this module only finds its namespaces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from reconciler.cluster.client import Kube
from reconciler.cluster.guard import PolicySource
from reconciler.cluster.handoff import ArgoCDApp, HandoffTarget
from reconciler.errors import ReconcilerError
from reconciler.spec.weightpolicy import (
    NAMESPACES_SETTING,
    FieldRule,
    WeightPolicy,
    policy_from_settings,
)

log = structlog.get_logger(__name__)


def destination_namespace(target: HandoffTarget, obj: Mapping[str, Any] | None) -> str | None:
    """The namespace the operator's object deploys into, if it names one."""
    spec = (obj or {}).get("spec") or {}
    if isinstance(target, ArgoCDApp):
        found = (spec.get("destination") or {}).get("namespace")
    else:
        found = spec.get("targetNamespace")
    return str(found) if found else None


def _source_object(target: HandoffTarget) -> str:
    if isinstance(target, ArgoCDApp):
        return f"the destination of Argo CD Application {target.namespace}/{target.name}"
    applier = target.applier
    return f"the targetNamespace of Flux Kustomization {applier.namespace}/{applier.name}"


class DestinationPolicy:
    """The policy whose namespaces are the GitOps destination's, read from the cluster."""

    def __init__(
        self,
        kube: Kube,
        target: HandoffTarget,
        rules: tuple[FieldRule, ...] = (),
        *,
        refresh: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read ``target``'s object at first use, and again once ``refresh`` seconds passed."""
        self._kube = kube
        self._target = target
        self._rules = rules
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._known: tuple[float, WeightPolicy] | None = None

    def __call__(self) -> WeightPolicy:
        """The policy in force.

        Raises:
            ReconcilerError: the object could not be read, and it never was before.
        """
        with self._lock:
            now = self._clock()
            if self._known is not None and now - self._known[0] < self._refresh:
                return self._known[1]
            obj_ref = (
                self._target.application
                if isinstance(self._target, ArgoCDApp)
                else self._target.applier
            )
            source = _source_object(self._target)
            try:
                obj = self._kube.get(obj_ref)
            except ReconcilerError as exc:
                if self._known is None:
                    raise
                log.warning("weight_namespaces_unread", source=source, error=str(exc))
                return self._known[1]
            namespace = destination_namespace(self._target, obj)
            if namespace is None:
                why = "does not exist" if obj is None else "names no namespace"
                policy = WeightPolicy(
                    frozenset({self._kube.namespace}),
                    f"the reconciler's own namespace, as {source} {why}",
                    self._rules,
                )
            else:
                policy = WeightPolicy(frozenset({namespace}), source, self._rules)
            if self._known is None or self._known[1].namespaces != policy.namespaces:
                log.info(
                    "weight_namespaces",
                    namespaces=sorted(policy.namespaces),
                    source=policy.namespaces_from,
                )
            self._known = (now, policy)
            return policy


def weight_policy(
    kube: Kube,
    *,
    namespaces: tuple[str, ...],
    rules: tuple[str, ...],
    target: HandoffTarget | None,
) -> PolicySource:
    """The policy ``reconciler run`` enforces, from its settings (see the module's docstring).

    Raises:
        RuleError: a configured rule or namespace does not parse.
    """
    configured = policy_from_settings(namespaces, rules)
    if namespaces:
        return configured
    if target is not None:
        return DestinationPolicy(kube, target, configured.extra_rules)
    return WeightPolicy(
        frozenset({kube.namespace}),
        f"the reconciler's own namespace (neither {NAMESPACES_SETTING} nor an Argo CD "
        "Application or Flux Kustomization is configured)",
        configured.extra_rules,
    )
