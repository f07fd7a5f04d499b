"""The weight policy, enforced the same way by every ``Cluster``: before any request.

``reconciler.spec.weightpolicy`` decides; this module turns its refusals into what the
``Cluster`` port promises: ``set_weights`` and ``get_weight`` raise ``WeightPolicyError``
(permanent, naming the object, the field and the setting that would allow it), and
``read_weights`` reports a refused reference as the reading's error, never reads it.
``KubeCluster`` and ``MemoryCluster`` both call these functions, so the demo and the
tests meet the rule exactly as the real adapter does. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from reconciler.cluster.errors import Target, WeightPolicyError
from reconciler.ports import WeightReading
from reconciler.spec.model import WeightObjRef
from reconciler.spec.weightpolicy import WeightPolicy

PolicySource = WeightPolicy | Callable[[], WeightPolicy]
"""A fixed policy, or a function that returns the one in force now (it may raise a
``ReconcilerError`` when it cannot tell, e.g. the Argo CD Application is unreadable)."""


def current(source: PolicySource) -> WeightPolicy:
    """The policy in force."""
    return source if isinstance(source, WeightPolicy) else source()


def check(
    policy: WeightPolicy, refs: Iterable[WeightObjRef], *, default_namespace: str, verb: str
) -> None:
    """Raise for the first reference the policy refuses.

    Raises:
        WeightPolicyError: naming the object, the fieldPath and the setting to change.
    """
    for ref in refs:
        refusal = policy.refusal(ref, default_namespace)
        if refusal is not None:
            namespace = ref.namespace or default_namespace
            raise WeightPolicyError(
                f"refused by the reconciler's weight policy: {refusal.message}",
                verb=verb,
                target=Target(f"{ref.kind} ({ref.api_version})", namespace, ref.name),
                setting=refusal.setting,
                field_path=ref.field_path,
            )


def split_readable(
    policy: WeightPolicy, refs: Sequence[WeightObjRef], *, default_namespace: str
) -> tuple[list[WeightObjRef], dict[WeightObjRef, WeightReading]]:
    """The references that may be read, and a reading with the refusal for each other one."""
    allowed: list[WeightObjRef] = []
    refused: dict[WeightObjRef, WeightReading] = {}
    for ref in refs:
        refusal = policy.refusal(ref, default_namespace)
        if refusal is None:
            allowed.append(ref)
        else:
            refused[ref] = WeightReading(
                None, error=f"refused by the reconciler's weight policy: {refusal.message}"
            )
    return allowed, refused
