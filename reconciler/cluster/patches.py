"""Weights as JSON Patch: where each weight lives in its object, and the guarded patch.

Pure functions over a decoded object. ``weight_field`` maps a ``weightObjRef`` to the
field that carries the weight: its ``fieldPath`` for Istio, Gateway API, Knative, SMI and
any other kind; for an ingress-nginx canary ``Ingress``, the
``nginx.ingress.kubernetes.io/canary-weight`` annotation (a string). ``plan_patch``
returns one JSON Patch per object: a ``test`` of every value it expects to replace (or,
where the field is absent, of the enclosing mapping), then the ``replace``/``add``
operations. Two writers therefore cannot interleave, and no request leaves an object
half-changed. An empty plan means the object already carries the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.spec import fieldpath
from reconciler.spec.model import WeightObjRef
from reconciler.spec.weightpolicy import (
    NGINX_CANARY,
    NGINX_CANARY_WEIGHT,
    NGINX_FIELD_PATHS,
    is_ingress,
)

__all__ = [
    "NGINX_CANARY",
    "NGINX_CANARY_WEIGHT",
    "NGINX_FIELD_PATHS",
    "WeightField",
    "WeightFieldError",
    "check_canary",
    "is_ingress",
    "plan_patch",
    "read_weight",
    "weight_field",
]

_ANNOTATIONS = ("metadata", "annotations")


class WeightFieldError(ValueError):
    """A weight's field does not resolve, or holds something that is not a weight."""


@dataclass(frozen=True)
class WeightField:
    """Where one weight lives: the path of steps, and whether it is a string annotation."""

    steps: tuple[fieldpath.Step, ...]
    as_string: bool = False

    @property
    def pointer(self) -> str:
        """RFC 6901 JSON Pointer of the field."""
        return fieldpath.json_pointer(self.steps)

    def encode(self, weight: int) -> int | str:
        """The JSON value that stores ``weight``."""
        return str(weight) if self.as_string else weight


def weight_field(ref: WeightObjRef) -> WeightField:
    """The field of ``ref``'s object that carries its weight.

    Raises:
        WeightFieldError: the fieldPath does not parse, or an Ingress names another field.
    """
    try:
        steps = fieldpath.parse(ref.field_path)
    except fieldpath.FieldPathError as exc:
        if not is_ingress(ref):
            raise WeightFieldError(str(exc)) from None
        steps = ()
    if is_ingress(ref):
        if steps not in NGINX_FIELD_PATHS:
            raise WeightFieldError(
                f"{ref.kind} {ref.name}: an ingress-nginx canary's weight is its "
                f"'{NGINX_CANARY_WEIGHT}' annotation; write fieldPath "
                f"'.metadata.annotations[\"{NGINX_CANARY_WEIGHT}\"]' (got {ref.field_path!r})"
            )
        return WeightField((*_ANNOTATIONS, NGINX_CANARY_WEIGHT), as_string=True)
    # Annotations are strings to the API server, whatever object they are on.
    annotation = len(steps) == len(_ANNOTATIONS) + 1 and steps[:2] == _ANNOTATIONS
    return WeightField(steps, as_string=annotation)


def read_weight(obj: Any, field: WeightField) -> int | None:  # noqa: ANN401 - decoded JSON
    """The weight at ``field``, or None when the field (or its parent) is absent."""
    try:
        value = fieldpath.get(obj, field.steps)
    except fieldpath.FieldPathError:
        return None
    return _as_weight(value, field)


def _as_weight(value: Any, field: WeightField) -> int | None:  # noqa: ANN401
    if value is None:
        return None
    if isinstance(value, bool):
        raise WeightFieldError(f"{field.pointer} holds {value!r}, not a weight")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise WeightFieldError(f"{field.pointer} holds {value!r}, not a whole-number weight")


def check_canary(obj: Mapping[str, Any], name: str) -> None:
    """Refuse to weight an Ingress that ingress-nginx does not treat as a canary."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if str(annotations.get(NGINX_CANARY, "")).lower() != "true":
        raise WeightFieldError(
            f"Ingress {name} is not an ingress-nginx canary (annotation "
            f"'{NGINX_CANARY}: \"true\"' missing), so a canary weight on it would do nothing"
        )


def plan_patch(
    obj: Mapping[str, Any], weights: Sequence[tuple[WeightField, int]]
) -> list[dict[str, Any]]:
    """The JSON Patch that sets ``weights`` in ``obj``, guarded by ``test`` operations.

    Returns:
        ``[]`` when every weight is already set; otherwise every ``test`` first (the value
        read, or the whole parent mapping where the field is absent), then the changes.

    Raises:
        WeightFieldError: a field's parent does not exist, or two weights name one field.
    """
    tests: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for field, weight in weights:
        if field.pointer in seen:
            if seen[field.pointer] != weight:
                raise WeightFieldError(
                    f"{field.pointer} is given two weights ({seen[field.pointer]} and {weight})"
                )
            continue
        seen[field.pointer] = weight
        try:
            parent = fieldpath.get(obj, field.steps[:-1])
        except fieldpath.FieldPathError as exc:
            raise WeightFieldError(f"{field.pointer}: {exc}") from None
        last = field.steps[-1]
        present = isinstance(parent, dict) and last in parent
        if isinstance(last, int):
            if not isinstance(parent, list) or last >= len(parent):
                raise WeightFieldError(f"{field.pointer}: no item [{last}] in its list")
            present = True
        elif not isinstance(parent, dict):
            raise WeightFieldError(f"{field.pointer}: its parent is not a mapping")
        current = fieldpath.get(obj, field.steps) if present else None
        if present and current is not None and _as_weight(current, field) == weight:
            continue
        value = field.encode(weight)
        if present:
            tests.append({"op": "test", "path": field.pointer, "value": current})
            changes.append({"op": "replace", "path": field.pointer, "value": value})
        else:
            parent_pointer = fieldpath.json_pointer(field.steps[:-1])
            tests.append({"op": "test", "path": parent_pointer, "value": parent})
            changes.append({"op": "add", "path": field.pointer, "value": value})
    # A test of a parent mapping must come before any change inside it (tests see the
    # document as the patch has changed it so far), so all tests go first.
    return [*tests, *changes] if changes else []
