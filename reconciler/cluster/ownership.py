"""Who wrote a field: the field managers of an object's ``managedFields`` that own it.

The API server records, for every manager that applied or updated an object, the set of
fields it owns (``fieldsV1``: ``f:<name>`` for a field, ``k:{...}`` for a list item found
by its keys, ``i:<n>`` for one found by its index, ``.`` for the item itself). A list or
mapping that a schema leaves atomic (most CRDs' lists) is owned whole: its entry is
``{}``. ``writers`` walks a weight's path through each manager's set and names the ones
that own it, newest first, so a drift message can say who put other weights back
(``kustomize-controller``, ``argocd-controller``, ``kubectl-edit``). Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.spec import fieldpath


def writers(
    obj: Mapping[str, Any], steps: Sequence[fieldpath.Step], *, exclude: str
) -> tuple[str, ...]:
    """``manager (operation, time)`` of each manager but ``exclude`` owning ``steps``.

    Newest first (by the entry's ``time``); subresource entries (``status``) are skipped.
    """
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    found: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("subresource"):
            continue
        manager = str(entry.get("manager") or "")
        if not manager or manager == exclude:
            continue
        if owns(entry.get("fieldsV1"), obj, steps):
            when = str(entry.get("time") or "")
            found.append((when, f"{manager} ({entry.get('operation') or '?'}, {when or '?'})"))
    found.sort(reverse=True)
    return tuple(text for _when, text in found)


def owns(fields: Any, obj: Any, steps: Sequence[fieldpath.Step]) -> bool:  # noqa: ANN401 - JSON
    """Whether a ``fieldsV1`` set covers the field at ``steps`` of ``obj``."""
    node = fields
    value = obj
    for step in steps:
        if not isinstance(node, Mapping):
            return False
        if not node or set(node) == {"."}:
            return True  # an atomic value (owned whole) on the way down
        if isinstance(step, int):
            item = value[step] if isinstance(value, list) and step < len(value) else None
            key = _item_key(node, step, item)
            value = item
        else:
            key = f"f:{step}"
            value = value.get(step) if isinstance(value, Mapping) else None
        if key is None or key not in node:
            return False
        node = node[key]
    return isinstance(node, Mapping)


def _item_key(node: Mapping[str, Any], index: int, item: Any) -> str | None:  # noqa: ANN401
    if f"i:{index}" in node:
        return f"i:{index}"
    if not isinstance(item, Mapping):
        return None
    for key in node:
        if not key.startswith("k:"):
            continue
        try:
            wanted = json.loads(key[2:])
        except ValueError:
            continue
        if isinstance(wanted, Mapping) and all(item.get(k) == v for k, v in wanted.items()):
            return str(key)
    return None
