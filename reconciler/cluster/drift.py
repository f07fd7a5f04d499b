"""Drift guard: would the GitOps operator undo the weights the reconciler sets?

Argo CD syncs every field Git names unless the Application lists it under
``ignoreDifferences`` (``jsonPointers``, ``jqPathExpressions``, or
``managedFieldsManagers`` naming our field manager) *and* syncs with
``RespectIgnoreDifferences=true`` (otherwise the ignore only hides the diff). Flux's
kustomize-controller server-side-applies Git over any change unless the object carries
``kustomize.toolkit.fluxcd.io/ssa: IfNotPresent`` (or ``Ignore``). Pure functions from
decoded objects to findings, each naming the object and the field; ``reconciler
doctor`` does the reading and the printing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.cluster.patches import NGINX_CANARY_WEIGHT

RESPECT_IGNORE = "RespectIgnoreDifferences=true"
FLUX_SSA = "kustomize.toolkit.fluxcd.io/ssa"
FLUX_SSA_SAFE = frozenset({"IfNotPresent", "Ignore"})
FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"

Segment = str | int | None
"""A path segment: a field name, a list index, or None for "any index"."""


@dataclass(frozen=True)
class WeightedKind:
    """A kind whose weights the reconciler sets, and where they live."""

    group: str
    kind: str
    paths: tuple[tuple[Segment, ...], ...]
    jq: str
    """The ``jqPathExpressions`` entry that covers them, for the suggested fix."""


WEIGHTED_KINDS = (
    WeightedKind(
        "networking.istio.io",
        "VirtualService",
        (("spec", "http", None, "route", None, "weight"),),
        ".spec.http[].route[].weight",
    ),
    WeightedKind(
        "gateway.networking.k8s.io",
        "HTTPRoute",
        (("spec", "rules", None, "backendRefs", None, "weight"),),
        ".spec.rules[].backendRefs[].weight",
    ),
    WeightedKind(
        "gateway.networking.k8s.io",
        "GRPCRoute",
        (("spec", "rules", None, "backendRefs", None, "weight"),),
        ".spec.rules[].backendRefs[].weight",
    ),
    WeightedKind(
        "serving.knative.dev",
        "Service",
        (("spec", "traffic", None, "percent"),),
        ".spec.traffic[].percent",
    ),
    WeightedKind(
        "split.smi-spec.io",
        "TrafficSplit",
        (("spec", "backends", None, "weight"),),
        ".spec.backends[].weight",
    ),
    WeightedKind(
        "networking.k8s.io",
        "Ingress",
        (("metadata", "annotations", NGINX_CANARY_WEIGHT),),
        f'.metadata.annotations["{NGINX_CANARY_WEIGHT}"]',
    ),
)


@dataclass(frozen=True)
class Managed:
    """An object the operator applies, and a field of it that the reconciler sets."""

    group: str
    kind: str
    namespace: str | None
    name: str
    path: tuple[Segment, ...]

    @property
    def field(self) -> str:
        """The field as a jq-like path (``.spec.http[].route[].weight``)."""
        return render(self.path)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        group = f".{self.group}" if self.group else ""
        return f"{self.kind}{group} {where}{self.name}"


@dataclass(frozen=True)
class Finding:
    """One problem: which object and field, what goes wrong, and how to fix it."""

    object: str
    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.object} {self.field}: {self.problem}. Fix: {self.fix}"


def render(path: Sequence[Segment]) -> str:
    """``.spec.http[].route[0].weight``; odd keys as ``["a/b"]``."""
    out = ""
    for segment in path:
        if segment is None:
            out += "[]"
        elif isinstance(segment, int):
            out += f"[{segment}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", segment):
            out += f".{segment}"
        else:
            out += f'["{segment}"]'
    return out


_JQ_TOKEN = re.compile(r'\.([A-Za-z_][A-Za-z0-9_-]*)|\.?\["([^"]+)"\]|\[(\d*)\]')


def parse_jq(expression: str) -> tuple[Segment, ...] | None:
    """A simple jq path (``.a.b[].c``, ``.a[0]``, ``.a["k/x"]``); None for anything else."""
    text = expression.strip()
    steps: list[Segment] = []
    position = 0
    while position < len(text):
        match = _JQ_TOKEN.match(text, position)
        if match is None:
            return None
        name, quoted, index = match.groups()
        if name is not None:
            steps.append(name)
        elif quoted is not None:
            steps.append(quoted)
        else:
            steps.append(int(index) if index else None)
        position = match.end()
    return tuple(steps) or None


def parse_pointer(pointer: str) -> tuple[Segment, ...]:
    """RFC 6901 pointer to segments (all-digit segments are list indices)."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    return tuple(int(p) if p.isdigit() else p for p in parts)


def covers(prefix: Sequence[Segment], path: Sequence[Segment]) -> bool:
    """Whether ignoring ``prefix`` (and all below it) ignores ``path``.

    ``None`` ("any index") in the prefix matches every index; a concrete index in the
    prefix covers a wildcard in ``path`` only partly and counts as not covering it.
    """
    if len(prefix) > len(path):
        return False
    for mine, theirs in zip(prefix, path, strict=False):
        if mine is None:
            if not (theirs is None or isinstance(theirs, int)):
                return False
        elif mine != theirs:
            return False
    return True


def _entry_matches(entry: Mapping[str, Any], managed: Managed) -> bool:
    if str(entry.get("group") or "") != managed.group or entry.get("kind") != managed.kind:
        return False
    if entry.get("name") and entry.get("name") != managed.name:
        return False
    return not (entry.get("namespace") and entry.get("namespace") != managed.namespace)


def argocd_findings(
    app: Mapping[str, Any], managed: Iterable[Managed], field_manager: str
) -> list[Finding]:
    """What in ``app`` lets Argo CD undo the reconciler's changes to ``managed`` fields."""
    spec = app.get("spec") or {}
    meta = app.get("metadata") or {}
    app_name = f"Application {meta.get('namespace', '')}/{meta.get('name', '')}"
    entries = [e for e in spec.get("ignoreDifferences") or [] if isinstance(e, Mapping)]
    findings: list[Finding] = []
    uncovered = False
    for item in managed:
        if not any(_entry_covers(e, item, field_manager) for e in entries):
            uncovered = True
            group = item.group or '""'
            findings.append(
                Finding(
                    str(item),
                    item.field,
                    f"{app_name} syncs this field from Git, undoing every weight change",
                    f"add to spec.ignoreDifferences: {{group: {group}, "
                    f"kind: {item.kind}, jqPathExpressions: ['{_jq_for(item)}']}} "
                    f"(or managedFieldsManagers: [{field_manager}])",
                )
            )
    options = (spec.get("syncPolicy") or {}).get("syncOptions") or []
    if entries and RESPECT_IGNORE not in options:
        findings.append(
            Finding(
                app_name,
                "spec.syncPolicy.syncOptions",
                "ignoreDifferences only hides the diff: every sync (each promotion commit) "
                "still applies Git's weights" + (" to the fields above" if uncovered else ""),
                f"add '{RESPECT_IGNORE}' to spec.syncPolicy.syncOptions",
            )
        )
    return findings


def _entry_covers(entry: Mapping[str, Any], item: Managed, field_manager: str) -> bool:
    if not _entry_matches(entry, item):
        return False
    if field_manager in (entry.get("managedFieldsManagers") or []):
        return True
    prefixes = [parse_pointer(str(p)) for p in entry.get("jsonPointers") or []]
    prefixes += [p for p in map(parse_jq, map(str, entry.get("jqPathExpressions") or [])) if p]
    return any(covers(prefix, item.path) for prefix in prefixes)


def _jq_for(item: Managed) -> str:
    for kind in WEIGHTED_KINDS:
        if (kind.group, kind.kind) == (item.group, item.kind):
            return kind.jq
    return render(item.path)


def flux_findings(obj: Mapping[str, Any], managed: Iterable[Managed]) -> list[Finding]:
    """What lets Flux's server-side apply undo the reconciler's changes to ``obj``."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(FLUX_SSA) in FLUX_SSA_SAFE or annotations.get(FLUX_RECONCILE) == "disabled":
        return []
    return [
        Finding(
            str(item),
            item.field,
            "Flux server-side-applies this object from Git, undoing every weight change "
            f"(annotation {FLUX_SSA} is {annotations.get(FLUX_SSA) or 'absent'})",
            f"annotate the object in Git with '{FLUX_SSA}: IfNotPresent'",
        )
        for item in managed
    ]


def weighted_kind(group: str, kind: str) -> WeightedKind | None:
    """The entry of ``WEIGHTED_KINDS`` for a group and kind, if the reconciler weights it."""
    return next((k for k in WEIGHTED_KINDS if (k.group, k.kind) == (group, kind)), None)


def flux_inventory(kustomization: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(namespace, name, group, kind)`` of each object a Kustomization applied."""
    inventory = ((kustomization.get("status") or {}).get("inventory") or {}).get("entries") or []
    found = []
    for entry in inventory:
        parts = str(entry.get("id", "")).split("_")
        if len(parts) == 4:  # noqa: PLR2004 - <namespace>_<name>_<group>_<kind>
            found.append((parts[0], parts[1], parts[2], parts[3]))
    return found


def argocd_resources(app: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(namespace, name, group, kind)`` of each object an Application manages."""
    return [
        (
            str(r.get("namespace") or ""),
            str(r.get("name") or ""),
            str(r.get("group") or ""),
            str(r.get("kind") or ""),
        )
        for r in (app.get("status") or {}).get("resources") or []
        if isinstance(r, Mapping)
    ]
