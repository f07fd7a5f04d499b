"""Which weight fields an Env repo may have the reconciler write, and in which namespaces.

An experiment's ``weightObjRef`` comes from the Env repo: anyone who can commit there
names the object and the ``fieldPath`` the reconciler writes integers into. The policy
confines that to the weight fields of the known traffic kinds, at their known paths
(``KNOWN_RULES``), plus the rules the *reconciler's* configuration adds, and to the
namespaces the configuration allows. ``WeightPolicy.refusal`` decides, for one reference,
before any request; the cluster adapters (the real one and the in-memory one alike) call
it and raise. Pure: values in, a value out; no I/O, no logging.

Rule syntax (the ``kubernetes.weightFields`` setting): ``GROUP/VERSION/KIND:FIELDPATH``,
``VERSION/KIND:FIELDPATH`` for the core group, ``*`` as VERSION for any version, and
FIELDPATH written as in experiments, with ``[*]`` for any list index, e.g.
``rollouts.example.com/*/TrafficRoute:.spec.routes[*].weight`` or
``v1/ConfigMap:.data["weight"]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from reconciler.spec import fieldpath
from reconciler.spec.model import WeightObjRef

ANY_NAMESPACE = "*"
"""In the allowed namespaces: every namespace (the cluster-wide layout opts into it)."""
NAMESPACES_SETTING = "kubernetes.weightNamespaces (RECONCILER_WEIGHT_NAMESPACES)"
FIELDS_SETTING = "kubernetes.weightFields (RECONCILER_WEIGHT_FIELDS)"

NGINX_CANARY = "nginx.ingress.kubernetes.io/canary"
NGINX_CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
NGINX_FIELD_PATHS = frozenset(
    {
        ("metadata", "annotations", NGINX_CANARY_WEIGHT),
        ("metadata", "annotations", "canary-weight"),
        ("spec", "canaryWeight"),
    }
)
"""What a ``weightObjRef`` to an ingress-nginx canary may say as its ``fieldPath``, parsed:
the annotation itself (``.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"]``)
or one of the short names that stand for it."""
NGINX_ANNOTATION_STEPS: tuple[fieldpath.Step, ...] = (
    "metadata",
    "annotations",
    NGINX_CANARY_WEIGHT,
)

PatternStep = str | int | None
"""A step of a rule's path: a key, a list index, or None for any list index (``[*]``)."""

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ANY_INDEX = "[*]"
_ANY_INDEX_MARK = "[999999999]"
"""``[*]`` is read by ``fieldpath.parse`` through this stand-in (no real list is that long)."""
_ANY_INDEX_VALUE = 999999999


class RuleError(ValueError):
    """A configured weight-field rule that does not parse."""


def is_ingress(ref: WeightObjRef) -> bool:
    """Whether ``ref`` names a Kubernetes Ingress (ingress-nginx canary weights)."""
    return ref.kind == "Ingress" and ref.api_version.startswith(
        ("networking.k8s.io/", "extensions/")
    )


def written_steps(ref: WeightObjRef) -> tuple[fieldpath.Step, ...] | None:
    """The field the reconciler writes for ``ref`` (None: its fieldPath does not parse).

    For an ingress-nginx canary the short names stand for the canary-weight annotation.
    """
    try:
        steps = fieldpath.parse(ref.field_path)
    except fieldpath.FieldPathError:
        return None
    if is_ingress(ref) and steps in NGINX_FIELD_PATHS:
        return NGINX_ANNOTATION_STEPS
    return steps


@dataclass(frozen=True)
class FieldRule:
    """Weight fields of one kind that may be written: a group, a version, a kind, a path."""

    group: str
    """API group; ``""`` for the core group."""
    version: str | None
    """API version; None for any."""
    kind: str
    steps: tuple[PatternStep, ...]

    def matches(self, api_version: str, kind: str, steps: tuple[fieldpath.Step, ...]) -> bool:
        """Whether the field ``steps`` of an object of ``api_version``/``kind`` is one of these."""
        group, _, version = api_version.rpartition("/")
        if (group, kind) != (self.group, self.kind):
            return False
        if self.version is not None and version != self.version:
            return False
        if len(steps) != len(self.steps):
            return False
        for have, want in zip(steps, self.steps, strict=True):
            if want is None:
                if not isinstance(have, int):
                    return False
            elif type(have) is not type(want) or have != want:
                return False
        return True

    @property
    def path(self) -> str:
        """The path, written as a fieldPath with ``[*]`` for any index."""
        marked = tuple(_ANY_INDEX_VALUE if s is None else s for s in self.steps)
        return fieldpath.render(marked).replace(_ANY_INDEX_MARK, _ANY_INDEX)

    def __str__(self) -> str:
        version = self.version or "*"
        api = f"{self.group}/{version}" if self.group else version
        return f"{api}/{self.kind}:{self.path}"


def parse_rule(text: str) -> FieldRule:
    """A rule from ``GROUP/VERSION/KIND:FIELDPATH`` (see the module's docstring).

    Raises:
        RuleError: naming what is wrong and showing the syntax.
    """
    syntax = (
        "expected GROUP/VERSION/KIND:FIELDPATH (VERSION/KIND:FIELDPATH for the core group, "
        "'*' as VERSION for any, '[*]' for any list index), e.g. "
        "'rollouts.example.com/*/TrafficRoute:.spec.routes[*].weight'"
    )
    head, sep, path = text.strip().partition(":")
    parts = head.split("/")
    if not sep or len(parts) not in {2, 3} or not all(parts) or not path:
        raise RuleError(f"weight field rule {text!r}: {syntax}")
    group = parts[0] if len(parts) == 3 else ""  # noqa: PLR2004 - group/version/kind
    version, kind = parts[-2], parts[-1]
    if _ANY_INDEX_MARK in path:
        raise RuleError(f"weight field rule {text!r}: index {_ANY_INDEX_MARK} is out of range")
    try:
        parsed = fieldpath.parse(path.replace(_ANY_INDEX, _ANY_INDEX_MARK))
    except fieldpath.FieldPathError as exc:
        raise RuleError(f"weight field rule {text!r}: {exc}") from None
    steps = tuple(None if s == _ANY_INDEX_VALUE else s for s in parsed)
    return FieldRule(group, None if version == "*" else version, kind, steps)


def _known(group: str, kind: str, path: str) -> FieldRule:
    return parse_rule(f"{group}/*/{kind}:{path}")


KNOWN_RULES: tuple[FieldRule, ...] = (
    _known("networking.istio.io", "VirtualService", ".spec.http[*].route[*].weight"),
    _known("gateway.networking.k8s.io", "HTTPRoute", ".spec.rules[*].backendRefs[*].weight"),
    _known("gateway.networking.k8s.io", "GRPCRoute", ".spec.rules[*].backendRefs[*].weight"),
    _known("serving.knative.dev", "Service", ".spec.traffic[*].percent"),
    _known("split.smi-spec.io", "TrafficSplit", ".spec.backends[*].weight"),
    _known("networking.k8s.io", "Ingress", f'.metadata.annotations["{NGINX_CANARY_WEIGHT}"]'),
    _known("extensions", "Ingress", f'.metadata.annotations["{NGINX_CANARY_WEIGHT}"]'),
)
"""The weight fields of the traffic kinds the reconciler knows, at any API version."""


@dataclass(frozen=True)
class Refusal:
    """Why one weight reference may not be touched, and the setting that would allow it."""

    reason: Literal["namespace", "field"]
    message: str
    setting: str


@dataclass(frozen=True)
class WeightPolicy:
    """The namespaces and weight fields an Env repo may have the reconciler read and write."""

    namespaces: frozenset[str] = frozenset({ANY_NAMESPACE})
    """Namespaces a weight object may be in; ``*`` for any."""
    namespaces_from: str = "the default (any namespace)"
    """Where ``namespaces`` came from, for messages (a setting, an Application ...)."""
    extra_rules: tuple[FieldRule, ...] = ()
    """Rules from the configuration, beside ``KNOWN_RULES``."""
    rules: tuple[FieldRule, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", KNOWN_RULES + self.extra_rules)

    def field_allowed(self, ref: WeightObjRef) -> bool:
        """Whether ``ref``'s field is a known or configured weight field of its kind."""
        steps = written_steps(ref)
        return steps is not None and any(
            rule.matches(ref.api_version, ref.kind, steps) for rule in self.rules
        )

    def namespace_allowed(self, namespace: str) -> bool:
        """Whether objects in ``namespace`` may be touched."""
        return ANY_NAMESPACE in self.namespaces or namespace in self.namespaces

    def refusal(self, ref: WeightObjRef, default_namespace: str) -> Refusal | None:
        """None when ``ref`` may be read and written, else why not.

        ``default_namespace`` is where a reference that names no namespace lands (the
        connection's namespace).
        """
        namespace = ref.namespace or default_namespace
        what = f"weightObjRef {ref.kind} {namespace}/{ref.name} ({ref.api_version})"
        if not self.namespace_allowed(namespace):
            allowed = ", ".join(sorted(self.namespaces)) or "none"
            source = (
                ""
                if self.namespaces_from == NAMESPACES_SETTING
                else f"; from {self.namespaces_from}"
            )
            return Refusal(
                "namespace",
                f"{what}, fieldPath {ref.field_path}: namespace {namespace!r} is not one an "
                f"Env repo may touch (allowed: {allowed}{source}); "
                f"to allow it, add it to the reconciler's setting {NAMESPACES_SETTING} "
                "and bind the reconciler's ClusterRole there (manifests/core/"
                "traffic-namespaces.yaml)",
                NAMESPACES_SETTING,
            )
        if not self.field_allowed(ref):
            same_kind = [str(r) for r in self.rules if r.kind == ref.kind]
            allowed = (
                f"the weight fields of {ref.kind} are {', '.join(same_kind)}"
                if same_kind
                else f"{ref.kind} is not a known traffic kind (known: "
                f"{', '.join(sorted({r.kind for r in self.rules}))})"
            )
            return Refusal(
                "field",
                f"{what}: fieldPath {ref.field_path} is not a weight field the reconciler "
                f"may write ({allowed}); to allow it, add the rule '{_suggest(ref)}' to the "
                f"reconciler's setting {FIELDS_SETTING}",
                FIELDS_SETTING,
            )
        return None


def _suggest(ref: WeightObjRef) -> str:
    """The rule that would allow ``ref``'s field, any list index and API version."""
    steps = written_steps(ref)
    if steps is None:
        return f"{ref.api_version}/{ref.kind}:{ref.field_path}"
    group, _, _version = ref.api_version.rpartition("/")
    pattern = tuple(None if isinstance(s, int) else s for s in steps)
    return str(FieldRule(group, None, ref.kind, pattern))


def policy_from_settings(
    namespaces: tuple[str, ...],
    rules: tuple[str, ...],
    *,
    namespaces_from: str = NAMESPACES_SETTING,
) -> WeightPolicy:
    """The policy the settings name (namespaces as given, rules parsed).

    Raises:
        RuleError: a rule does not parse, or a namespace is not a Kubernetes name nor ``*``.
    """
    for namespace in namespaces:
        if namespace != ANY_NAMESPACE and not _NAMESPACE.fullmatch(namespace):
            raise RuleError(
                f"weight namespace {namespace!r} is not a namespace name (or '*' for any)"
            )
    return WeightPolicy(
        namespaces=frozenset(namespaces),
        namespaces_from=namespaces_from,
        extra_rules=tuple(parse_rule(rule) for rule in rules),
    )
