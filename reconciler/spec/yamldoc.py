"""What every document loader shares: YAML in, documents of one kind out, problems located.

``documents_of_kind`` parses a file with ruamel.yaml's round-trip loader (which keeps the
line and column of every key) and returns the documents of one ``kind`` and apiVersion;
a file that is not UTF-8 or not YAML is one ``Problem`` at the place the parser stopped.
``DocumentReader`` is the base of the per-document readers: it turns a node (and a key)
into a ``file:line:column`` ``Location`` and records problems. Pure: bytes in, values out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.errors import Location

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """Something wrong (error) or doubtful (warning) in a document, and where."""

    location: Location
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Parsed:
    """The documents of the wanted kind, the file's lines, or why there are none."""

    documents: tuple[CommentedMap, ...]
    lines: tuple[str, ...]
    problem: Problem | None = None


def documents_of_kind(path: str, data: bytes, kind: str, api_versions: Collection[str]) -> Parsed:
    """The documents in ``data`` whose ``kind`` and ``apiVersion`` match."""
    try:
        text = data.decode("utf-8")
        documents = list(YAML(typ="rt").load_all(text))
    except UnicodeDecodeError as exc:
        return Parsed((), (), Problem(Location(path), "error", f"not UTF-8 text ({exc.reason})"))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        what = exc.problem or exc.context or "invalid YAML"
        return Parsed((), (), Problem(where, "error", f"not valid YAML: {what}"))
    except YAMLError as exc:
        return Parsed((), (), Problem(Location(path), "error", f"not valid YAML: {exc}"))
    wanted = tuple(
        d
        for d in documents
        if isinstance(d, CommentedMap)
        and d.get("kind") == kind
        and d.get("apiVersion") in api_versions
    )
    return Parsed(wanted, tuple(text.splitlines()))


class InvalidDocumentError(Exception):
    """Internal to the readers: stops reading a document once an error is recorded."""


class DocumentReader:
    """Locations and problems for one document of one file."""

    def __init__(self, path: str) -> None:
        """Messages name ``path``."""
        self.path = path
        self.problems: list[Problem] = []

    def _at(self, node: CommentedMap | CommentedSeq, key: Any = None) -> Location:  # noqa: ANN401
        """Where ``node`` (or its ``key``: a mapping key or a list index) was written."""
        try:
            if key is None:
                line, col = node.lc.line, node.lc.col
            elif isinstance(node, CommentedSeq):
                line, col = node.lc.item(key)
            else:
                line, col = node.lc.key(key)
        except (AttributeError, KeyError, TypeError):
            return Location(self.path)
        return Location(self.path, line + 1, col + 1)

    def _error(self, where: Location, message: str) -> InvalidDocumentError:
        """Record an error; the caller raises what this returns."""
        self.problems.append(Problem(where, "error", message))
        return InvalidDocumentError(message)

    def _warn(self, where: Location, message: str) -> None:
        """Record a warning and read on."""
        self.problems.append(Problem(where, "warning", message))
