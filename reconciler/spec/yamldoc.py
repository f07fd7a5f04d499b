"""What every document loader shares: YAML in, documents of one kind out, problems located.

``documents_of_kind`` parses a file with ruamel.yaml's round-trip loader (which keeps the
line and column of every key) and returns the documents of one ``kind`` and apiVersion;
a file that is not UTF-8 or not YAML, or that breaks one of the ``Limits``, is one
``Problem`` at the place the parser stopped. Parsing is hardened against hostile input:
only the YAML core schema's tags (``!!str``, ``!!int``, ``!!float``, ``!!bool``, ``!!null``,
``!!map``, ``!!seq``) are accepted, nesting, documents, aliases and what aliases expand to
are bounded before anything is built, and whatever the YAML library raises while building
a value becomes a located problem. ``DocumentReader`` is the base of the per-document
readers: it turns a node (and a key) into a ``file:line:column`` ``Location``, refuses keys
that are not strings and text that is not text, and records problems; ``excerpt`` and
``finite_number`` are what readers quote and count with. Pure: bytes in, values out; never
renders a whole value (an alias can make one gigabytes long).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import RoundTripScanner

from reconciler.errors import Location
from reconciler.spec.limits import Limits, exceeded

Severity = Literal["error", "warning", "note"]
"""``note``: what ``unread.survey`` says a loader skipped; never from a loader."""

_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)
_DOCUMENT_START = re.compile(rb"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_EXCERPT = 40
MAX_MAGNITUDE = 1e15
"""Numbers in documents stay within this magnitude (far beyond any latency, rate or count)."""
_BUILD_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    AssertionError,
    OverflowError,
    RecursionError,
)
"""What the YAML library's constructors raise on values they cannot build (``!!bool maybe``,
an integer of 5,000 digits, a date that is no date); each becomes a located problem."""


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
    warnings: tuple[Problem, ...] = ()
    """What the YAML library warned about while reading the file (the documents load)."""


def excerpt(value: object) -> str:  # noqa: PLR0911 - one return per kind of value
    """A short rendering of ``value`` for a message: never a whole mapping, list or long text."""
    if isinstance(value, str):
        if len(value) <= _EXCERPT:
            return repr(value)
        return f"{value[:_EXCERPT]!r}... ({len(value):,} characters)"
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, int):
        if value.bit_length() > 64:  # noqa: PLR2004 - beyond any count a document holds
            return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, CommentedMap | dict):
        return "a mapping"
    if isinstance(value, CommentedSeq | list):
        return "a list"
    return f"a {type(value).__name__}"


def finite_number(value: object) -> float | None:
    """``value`` (a number or a quoted number) as a float, or None when it is none.

    NaN, the infinities and numbers beyond ``MAX_MAGNITUDE`` are no numbers here: a limit
    of ``.nan`` would pass or fail every comparison, and ``1`` followed by 400 zeros has
    no float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str) and len(value) > 100:  # noqa: PLR2004 - no number is that long
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(number) or abs(number) > MAX_MAGNITUDE:
        return None
    return number


class _Refused(Exception):  # noqa: N818 - internal signal, never leaves this module
    """A limit or a tag stops the parse; carries the located message."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


class _BoundedScanner(RoundTripScanner):
    """ruamel.yaml's scanner, refusing flow collections (``[``, ``{``) nested too deep.

    The scanner looks ahead across every open flow level for each token, so 10,000 ``[``
    in a row cost it seconds before the composer's depth check is ever reached.
    """

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:  # noqa: ANN401, N803 - ruamel.yaml's signature
        limits: Limits = self.loader.limits
        if len(self.flow_context) + 1 > limits.max_nesting_depth:
            mark = self.reader.get_mark()
            raise _Refused(
                mark.line + 1,
                mark.column + 1,
                exceeded("max_nesting_depth", "mappings and lists nest too deep here", limits),
            )
        super().fetch_flow_collection_start(TokenClass, to_push)


class _BoundedComposer(Composer):
    """ruamel.yaml's composer, refusing tags beyond the core schema, deep nesting, aliases.

    Checks run on each event before the node is built, so a 10,000-deep document stops
    at the limit, not in a ``RecursionError``; a reused anchor is legal YAML (the later
    one wins) and is not warned about.
    """

    def __init__(self, loader: Any = None) -> None:  # noqa: ANN401 - ruamel.yaml's signature
        super().__init__(loader=loader)
        self.warn_double_anchors = False
        self.limits: Limits = loader.limits
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401
        event = self.parser.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise _Refused(
                    mark.line + 1,
                    mark.column + 1,
                    exceeded("max_aliases", "the file uses more aliases", self.limits),
                )
            return super().compose_node(parent, index)
        if self.depth + 1 > self.limits.max_nesting_depth:
            raise _Refused(
                mark.line + 1,
                mark.column + 1,
                exceeded("max_nesting_depth", "mappings and lists nest too deep here", self.limits),
            )
        tag = getattr(event, "ctag", None)
        if tag is not None and str(tag) != "!" and str(tag) not in _CORE_TAGS:
            raise _Refused(
                mark.line + 1,
                mark.column + 1,
                f"the tag {excerpt(str(tag).replace('tag:yaml.org,2002:', '!!'))} is not "
                "accepted: documents use the YAML core "
                "schema only (strings, numbers, booleans, null, mappings and lists); remove "
                "the tag",
            )
        return super().compose_node(parent, index)


class _GuardedConstructor(RoundTripConstructor):
    """ruamel.yaml's round-trip constructor; a value it cannot build is a located error."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:  # noqa: ANN401
        try:
            return super().construct_object(node, deep)
        except MarkedYAMLError:
            raise
        except _BUILD_ERRORS as exc:
            kind = str(node.tag).rsplit(":", 1)[-1]
            value = node.value if isinstance(node.value, str) else ""
            raise _Refused(
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                f"cannot read {excerpt(value)} as {kind} ({type(exc).__name__}); write a "
                "plain value (integers have at most 4,300 digits) or quote it as a string",
            ) from None


class _Loader(YAML):
    """A round-trip YAML loader with the limits and guards above."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(typ="rt")
        self.limits = limits
        self.Scanner = _BoundedScanner
        self.Composer = _BoundedComposer
        self.Constructor = _GuardedConstructor


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node, limits: Limits) -> None:
    """Refuse a document whose aliases expand to too many nodes, or refer to themselves.

    Counts without expanding anything: the size of each distinct node is computed once.
    """
    sizes: dict[int, int] = {}
    path = {id(root)}
    stack: list[tuple[Node, Iterator[Node]]] = [(root, iter(_children(root)))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
            continue
        if id(child) in sizes:
            continue
        if id(child) in path:
            mark = child.start_mark
            raise _Refused(
                mark.line + 1,
                mark.column + 1,
                "an alias refers to a mapping or list that holds it (a recursive structure); "
                "write the value out instead",
            )
        path.add(id(child))
        stack.append((child, iter(_children(child))))
    added = sizes[id(root)] - len(sizes)
    if added > limits.max_alias_nodes:
        mark = root.start_mark
        raise _Refused(
            mark.line + 1,
            mark.column + 1,
            exceeded("max_alias_nodes", f"aliases expand this document by {added:,} nodes", limits),
        )


def load_documents(
    path: str, data: bytes, limits: Limits | None = None
) -> tuple[list[Any], tuple[str, ...], Problem | None, tuple[Problem, ...]]:
    """Every document of a YAML file, its lines, the problem that stopped it, its warnings."""
    limits = limits or Limits()
    if len(data) > limits.max_file_bytes:
        line = data.count(b"\n", 0, limits.max_file_bytes) + 1
        found = f"the file has {len(data):,} bytes"
        message = exceeded("max_file_bytes", found, limits)
        return [], (), Problem(Location(path, line), "error", message), ()
    markers = list(_DOCUMENT_START.finditer(data))
    if len(markers) > limits.max_documents_per_file:
        at = markers[limits.max_documents_per_file].start()
        found = f"the file has {len(markers):,} '---' document markers"
        message = exceeded("max_documents_per_file", found, limits)
        line = data.count(b"\n", 0, at) + 1
        return [], (), Problem(Location(path, line, 1), "error", message), ()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
        return [], (), Problem(Location(path, line, column), "error", message), ()
    lines = tuple(text.splitlines())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        documents, problem = _parse(path, text, limits)
    noted = tuple(
        Problem(Location(path, 1), "warning", f"YAML: {excerpt(str(w.message).strip())}")
        for w in caught
    )
    return documents, lines, problem, noted


def _parse(path: str, text: str, limits: Limits) -> tuple[list[Any], Problem | None]:
    loader = _Loader(limits)
    documents: list[Any] = []
    node: Node | None = None
    try:
        constructor, parser = loader.get_constructor_parser(text)
        composer = loader.composer
        try:
            while composer.check_node():
                if len(documents) >= limits.max_documents_per_file:
                    found = "the file has more documents"
                    raise _Refused(0, 0, exceeded("max_documents_per_file", found, limits))
                node = composer.get_node()
                _check_expansion(node, limits)
                documents.append(constructor.construct_document(node))
                node = None
        finally:
            parser.dispose()
    except _Refused as exc:
        return [], Problem(Location(path, exc.line, exc.column), "error", exc.message)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path, 1)
        what = exc.problem or exc.context or "invalid YAML"
        return [], Problem(where, "error", f"not valid YAML: {what}")
    except ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        what = f"character #x{exc.character:04x} is not allowed in YAML ({exc.reason})"
        if isinstance(exc.character, bytes):
            what = f"{exc.reason}"
        return [], Problem(Location(path, line, column), "error", f"not valid YAML: {what}")
    except YAMLError as exc:
        return [], Problem(Location(path, 1), "error", f"not valid YAML: {excerpt(str(exc))}")
    except _BUILD_ERRORS as exc:
        # Raised outside any one value (the library filling a mapping it built earlier).
        line = node.start_mark.line + 1 if node is not None else 1
        message = f"cannot read this document ({type(exc).__name__}); simplify it"
        return [], Problem(Location(path, line), "error", message)
    return documents, None


def documents_of_kind(
    path: str,
    data: bytes,
    kind: str,
    api_versions: Collection[str],
    limits: Limits | None = None,
) -> Parsed:
    """The documents in ``data`` whose ``kind`` and ``apiVersion`` match.

    A document of the wanted ``kind`` whose ``apiVersion`` is not a string is kept: its
    reader reports it (only a string can name an API).
    """
    documents, lines, problem, noted = load_documents(path, data, limits)
    if problem is not None:
        return Parsed((), lines, problem, noted)
    wanted = tuple(
        d
        for d in documents
        if isinstance(d, CommentedMap)
        and d.get("kind") == kind
        and (not isinstance(d.get("apiVersion"), str) or d.get("apiVersion") in api_versions)
    )
    return Parsed(wanted, lines, None, noted)


def location_of(path: str, node: object, key: Any = None) -> Location:  # noqa: ANN401
    """Where ``node`` (or its ``key``: a mapping key or a list index) was written in ``path``.

    The file's first line for a node that kept no position, like a plain scalar.
    """
    try:
        if key is None:
            line, col = node.lc.line, node.lc.col  # type: ignore[attr-defined]
        elif isinstance(node, CommentedSeq):
            line, col = node.lc.item(key)
        else:
            line, col = node.lc.key(key)  # type: ignore[attr-defined]
    except (AttributeError, KeyError, TypeError, IndexError):
        return Location(path, 1)
    return Location(path, line + 1, col + 1)


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
        return location_of(self.path, node, key)

    def _error(self, where: Location, message: str) -> InvalidDocumentError:
        """Record an error; the caller raises what this returns."""
        self.problems.append(Problem(where, "error", message))
        return InvalidDocumentError(message)

    def _warn(self, where: Location, message: str) -> None:
        """Record a warning and read on."""
        self.problems.append(Problem(where, "warning", message))

    def _check_document(self, doc: CommentedMap, api_versions: Collection[str]) -> str:
        r"""The document's apiVersion, once every key is a string and every string is text.

        Raises:
            InvalidDocumentError: a key that is not a string (``1:``, ``null:``, a mapping),
                a string holding a lone surrogate (``"\\ud800"``: it cannot be written to
                Git or sent anywhere), or an apiVersion that is not a string.
        """
        api_version = doc.get("apiVersion")
        if not isinstance(api_version, str) or api_version not in api_versions:
            raise self._error(
                self._at(doc, "apiVersion"),
                f"'apiVersion' must be one of {', '.join(sorted(api_versions))}, not "
                f"{excerpt(api_version)}",
            )
        seen: set[int] = set()
        stack: list[CommentedMap | CommentedSeq] = [doc]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, CommentedMap) else enumerate(node)
            for key, value in items:
                if isinstance(node, CommentedMap) and not isinstance(key, str):
                    raise self._error(
                        self._at(node, key),
                        f"mapping keys must be strings, not {excerpt(key)}; quote the key or "
                        "remove it",
                    )
                for text in (key, value):
                    if isinstance(text, str) and _SURROGATE.search(text):
                        raise self._error(
                            self._at(node, key),
                            f"{excerpt(text)} holds a lone surrogate (an escape like "
                            '"\\ud800"), which is not text; remove it',
                        )
                if isinstance(value, CommentedMap | CommentedSeq):
                    stack.append(value)
        return api_version
