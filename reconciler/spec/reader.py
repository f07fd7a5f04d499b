"""Typed field readers shared by the Experiment and Metric loaders.

Each reader takes a mapping node, a key and the path of the node (``spec.strategy``), and
returns the value in the type asked for, or records an error at the key's line and raises
``InvalidDocumentError``, so a document's first error in a section stops that section
only. Messages name the field by its full path and say what would be accepted; a value is
quoted through ``excerpt`` (short, never an alias expanded).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Location
from reconciler.spec.yamldoc import DocumentReader, Problem, excerpt, finite_number

__all__ = ["OWN_API_VERSION", "FieldReader", "join"]

OWN_API_VERSION = "reconciler/v1alpha1"
"""Our own format: its unknown fields are errors (Iter8's are warnings unless strict)."""

_E = TypeVar("_E", bound=Enum)


def join(where: str, key: str) -> str:
    """The path of ``key`` under ``where`` (``where`` empty: the document's top)."""
    return f"{where}.{key}" if where else key


class FieldReader(DocumentReader):
    """Reads typed fields of one document, recording problems with their locations."""

    def __init__(self, path: str) -> None:
        """Messages name ``path``."""
        super().__init__(path)
        self.locations: dict[str, Location] = {}
        """Where each field read was written, by its path (``spec.duration``)."""
        self._owner: dict[int, Location] = {}
        """Where the key that holds each mapping was written (for 'missing' errors)."""
        self.strict = False
        """Unknown fields are errors, not warnings (our own apiVersion, or ``--strict``)."""

    def _parent(self, node: CommentedMap) -> Location:
        """Where a field missing from ``node`` should be reported: at the key holding it."""
        return self._owner.get(id(node)) or self._at(node)

    def _unknown(self, node: CommentedMap, where: str, known: set[str]) -> None:
        """Report each key of ``node`` not in ``known``, and read on.

        An error when ``strict``, otherwise a warning (the key is ignored); every one shows
        in the same pass, with the nearest known name when one is close.
        """
        for key in node:
            if key in known:
                continue
            field = join(where, key)
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            known_here = f"known here: {', '.join(sorted(known))}"
            if self.strict:
                self.problems.append(
                    Problem(
                        self._at(node, key),
                        "error",
                        f"unknown field '{field}' ({hint}{known_here})",
                    )
                )
            else:
                self._warn(
                    self._at(node, key),
                    f"unknown field '{field}' is ignored ({hint}{known_here})",
                )

    def _map(self, node: CommentedMap, key: str, where: str, *, required: bool) -> CommentedMap:
        value = node.get(key)
        if value is None:
            if required:
                raise self._error(self._parent(node), f"'{join(where, key)}' is missing")
            return CommentedMap()
        if not isinstance(value, CommentedMap):
            raise self._error(self._at(node, key), f"'{join(where, key)}' must be a mapping")
        self.locations[join(where, key)] = self._owner[id(value)] = self._at(node, key)
        return value

    def _seq(self, node: CommentedMap, key: str, where: str) -> CommentedSeq:
        value = node.get(key)
        if value is None:
            return CommentedSeq()
        if not isinstance(value, CommentedSeq):
            raise self._error(self._at(node, key), f"'{join(where, key)}' must be a list")
        return value

    def _str(
        self, node: CommentedMap, key: str, where: str, *, required: bool = False
    ) -> str | None:
        value = node.get(key)
        if value is None:
            if required:
                raise self._error(self._parent(node), f"'{join(where, key)}' is missing")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._error(
                self._at(node, key), f"'{join(where, key)}' must be a non-empty string"
            )
        self.locations[join(where, key)] = self._at(node, key)
        return str(value)

    def _req(self, node: CommentedMap, key: str, where: str) -> str:
        value = self._str(node, key, where, required=True)
        if value is None:  # _str raised already; this keeps the type precise
            raise self._error(self._parent(node), f"'{join(where, key)}' is missing")
        return value

    def _int(
        self, node: CommentedMap, key: str, where: str, default: int, *, low: int, high: int
    ) -> int:
        value = node.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._error(
                self._at(node, key), f"'{join(where, key)}' must be an integer from {low} to {high}"
            )
        return int(value)

    def _number(self, node: CommentedMap, key: str, where: str) -> float | None:
        value = node.get(key)
        if value is None:
            return None
        number = finite_number(value)
        if number is None:
            raise self._error(
                self._at(node, key),
                f"'{join(where, key)}' must be a number or a quoted number like \"0.01\" "
                f"(finite, at most 1e15 in size), not {excerpt(value)}",
            )
        return number

    def _enum(
        self, node: CommentedMap, key: str, where: str, kind: type[_E], default: _E | None = None
    ) -> _E:
        """One of ``kind``'s values (``default`` when absent; required when it is None)."""
        text = self._str(node, key, where, required=default is None)
        if text is None and default is not None:
            return default
        try:
            return kind(text)
        except ValueError:
            raise self._error(
                self._at(node, key),
                f"'{join(where, key)}' must be one of "
                f"{', '.join(str(member.value) for member in kind)}, not {excerpt(text)}",
            ) from None

    def _each_map(
        self, seq: CommentedSeq, where: str, read: Callable[[CommentedMap, str], Any]
    ) -> list[Any]:
        out = []
        for index, item in enumerate(seq):
            if not isinstance(item, CommentedMap):
                raise self._error(self._at(seq, index), f"'{where}[{index}]' must be a mapping")
            out.append(read(item, f"{where}[{index}]"))
        return out
