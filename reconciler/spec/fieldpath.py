"""Iter8's ``fieldPath`` (``.spec.http[0].route[1].weight``): parse it, read and write by it.

A key that is not a plain name (an annotation's, with dots and a slash) is written in
brackets and quotes, as kubectl's JSONPath has it: ``.metadata.annotations["a.b/c"]``
(single quotes too; a backslash escapes the quote or itself).

Pure functions over plain dicts and lists (a decoded Kubernetes object). The cluster
adapters use them to patch weights; the loader uses ``parse`` to reject a path that would
never resolve. They never create intermediate objects: a path that does not exist is an
error, not a silent insert.
"""

from __future__ import annotations

import re
from typing import Any

Step = str | int

_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
_TOKEN = re.compile(
    r"\.(" + _NAME.pattern + r")"
    r"|\[(\d+)\]"
    r'|\["((?:[^"\\]|\\.)+)"\]'
    r"|\['((?:[^'\\]|\\.)+)'\]"
)
_ESCAPE = re.compile(r"\\(.)")


class FieldPathError(ValueError):
    """A field path that does not parse, or does not resolve in an object."""


def parse(path: str) -> tuple[Step, ...]:
    """Split ``.spec.http[0].route[1].weight`` into ``("spec", "http", 0, "route", 1, "weight")``.

    Raises:
        FieldPathError: when the path is empty or has anything but ``.name`` and ``[index]``.
    """
    steps: list[Step] = []
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            raise FieldPathError(
                f"fieldPath {path!r} does not parse at offset {position}: expected "
                "'.field', '[index]' or '[\"key\"]', as in '.spec.http[0].route[1].weight'"
            )
        name, index, double, single = match.groups()
        if index is not None:
            steps.append(int(index))
        else:
            key = name if name is not None else double if double is not None else single
            steps.append(_ESCAPE.sub(r"\1", key) if name is None else key)
        position = match.end()
    if not steps:
        raise FieldPathError(
            "fieldPath is empty: expected something like '.spec.traffic[1].percent'"
        )
    return tuple(steps)


def json_pointer(steps: tuple[Step, ...]) -> str:
    """The RFC 6901 JSON Pointer for ``steps`` (for JSON Patch ``path``)."""
    escaped = (str(s).replace("~", "~0").replace("/", "~1") for s in steps)
    return "/" + "/".join(escaped)


def get(obj: Any, steps: tuple[Step, ...]) -> Any:  # noqa: ANN401 - decoded JSON is untyped
    """The value at ``steps`` in ``obj``.

    Raises:
        FieldPathError: naming the first step that does not exist.
    """
    current = obj
    for depth, step in enumerate(steps):
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                raise FieldPathError(f"no item [{step}] at {_render(steps[:depth])}")
        elif not isinstance(current, dict) or step not in current:
            raise FieldPathError(f"no field '{step}' at {_render(steps[:depth])}")
        current = current[step]
    return current


def set_value(obj: Any, steps: tuple[Step, ...], value: Any) -> None:  # noqa: ANN401
    """Set the value at ``steps`` in ``obj`` in place; the parent must exist.

    The last step may name a missing mapping key (Istio omits ``weight: 0``), never a
    missing list item.
    """
    parent = get(obj, steps[:-1])
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(parent, list) or last >= len(parent):
            raise FieldPathError(f"no item [{last}] at {_render(steps[:-1])}")
    elif not isinstance(parent, dict):
        raise FieldPathError(f"{_render(steps[:-1])} is not a mapping")
    parent[last] = value


def render(steps: tuple[Step, ...]) -> str:
    """The fieldPath that ``parse`` reads back as ``steps``."""
    return "".join(_step(s) for s in steps)


def _step(step: Step) -> str:
    if isinstance(step, int):
        return f"[{step}]"
    if _NAME.fullmatch(step):
        return f".{step}"
    escaped = step.replace("\\", "\\\\").replace('"', '\\"')
    return f'["{escaped}"]'


def _render(steps: tuple[Step, ...]) -> str:
    return render(steps) or "the top of the object"
