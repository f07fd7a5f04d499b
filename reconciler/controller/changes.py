"""What an outcome changed on main, old -> new, as lines of its commit's body.

``git log main`` then says ``image: …/productpage:6.1.0 -> …/productpage:6.2.0`` rather
than only "promote v2". Per file: added, removed, or the values of the keys that name what
runs (``image``, ``newTag``, ``newName``, ``tag``, ``digest``, ``version``) that differ,
in the order they are written. The files are the Env repo's (anyone with commit rights
wrote them): values are shortened and made printable, and the lines are capped. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["change_lines"]

_KEYS = ("image", "newTag", "newName", "tag", "digest", "version")
_VALUE = re.compile(
    rb"^[ \t]*(?:-[ \t]+)?(" + b"|".join(k.encode() for k in _KEYS) + rb")[ \t]*:[ \t]*"
    rb"[\"']?([^\s\"'#]+)",
    re.MULTILINE,
)
MAX_LINES = 20
MAX_VALUE = 120


def change_lines(
    before: Mapping[str, bytes | None], after: Mapping[str, bytes | None]
) -> list[str]:
    """``Changes:`` and a line per changed file (at most ``MAX_LINES`` in all)."""
    lines: list[str] = []
    for path in sorted(after):
        old, new = before.get(path), after[path]
        if old == new:
            continue
        shown = _printable(path)
        if new is None:
            lines.append(f"  {shown}: removed")
        elif old is None:
            lines.append(f"  {shown}: added")
        else:
            differ = [
                f"{key} {_printable(a)} -> {_printable(b)}"
                for (key, a), (_, b) in zip(_values(old), _values(new), strict=False)
                if a != b
            ]
            lines.append(f"  {shown}: {'; '.join(differ) if differ else 'changed'}")
    if not lines:
        return []
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"  ... and {len(lines) - MAX_LINES} more files"]
    return ["Changes:", *lines]


def _values(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode(), m.group(2)) for m in _VALUE.finditer(data)]


def _printable(value: str | bytes) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."
