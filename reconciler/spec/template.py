"""PromQL query templates: literal text and placeholders, each with the context it sits in.

A metric's query is parsed into a ``QueryTemplate``: literal text and placeholders
(``$name``, ``$namespace``, ``${elapsedTime}``, version variables), each marked with where
it sits (inside a quoted string, a regular-expression matcher, or bare PromQL), so that the
renderer (``reconciler.metrics.promql``) can escape every value for exactly that place. A
placeholder that no escaping can make safe (a name outside quotes) is a ``TemplateError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ELAPSED",
    "IDENTIFIER",
    "NAME",
    "NAMESPACE",
    "RESERVED",
    "Context",
    "Placeholder",
    "QueryTemplate",
    "Segment",
    "TemplateError",
    "parse_query",
]

NAME, NAMESPACE, ELAPSED = "name", "namespace", "elapsedTime"
RESERVED = frozenset({NAME, NAMESPACE, ELAPSED})
"""Placeholders every query may use; a version's variables may add others."""

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z0-9_]")


class Context(StrEnum):
    """Where a placeholder sits in a PromQL query."""

    CODE = "code"
    """Bare PromQL, outside any string (``[${elapsedTime}]``, ``histogram_quantile($q, …)``)."""
    DOUBLE = '"'
    SINGLE = "'"
    RAW = "`"
    """A raw string: PromQL has no escapes inside backticks."""


@dataclass(frozen=True)
class Placeholder:
    """A ``$name`` or ``${name}`` in a query, and the context it must be escaped for."""

    name: str
    context: Context
    regex: bool = False
    """Inside the string of a ``=~`` or ``!~`` matcher: the value is a regular expression."""
    offset: int = 0
    """Where it starts in the query text."""


Segment = str | Placeholder


@dataclass(frozen=True)
class QueryTemplate:
    """A parsed PromQL query: literal text and placeholders, in order."""

    text: str
    segments: tuple[Segment, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        """Every placeholder, in order of appearance."""
        return tuple(s for s in self.segments if isinstance(s, Placeholder))

    @property
    def variables(self) -> frozenset[str]:
        """Placeholders that must come from a version's ``variables``."""
        return frozenset(p.name for p in self.placeholders if p.name not in RESERVED)


class TemplateError(ValueError):
    """A query that cannot be templated safely; ``offset`` points into the query text."""

    def __init__(self, message: str, text: str, offset: int) -> None:
        self.line = text.count("\n", 0, offset) + 1
        self.column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"query line {self.line}, column {self.column}: {message}")
        self.message = message
        self.offset = offset


def parse_query(text: str) -> QueryTemplate:
    """Split a PromQL query into literal text and placeholders, recording each one's context.

    Placeholders follow Python's ``string.Template`` (what Iter8 v2alpha2 used): ``$name``,
    ``${name}``, and ``$$`` for a literal ``$``; a ``$`` that starts neither is literal.
    Iter8 writes ``[${elapsedTime}s]``; we render ``${elapsedTime}`` as a duration
    (``120s``), so a directly following ``s`` is taken as part of that placeholder.

    Raises:
        TemplateError: a placeholder outside quotes other than ``${elapsedTime}``'s kin
            (names would change the query's structure), an unclosed ``${`` or string.
    """
    segments: list[Segment] = []
    literal: list[str] = []
    quote: str | None = None
    regex = False
    string_start = 0
    i = 0
    while i < len(text):
        char = text[i]
        if quote is None and char == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            literal.append(text[i:end])
            i = end
            continue
        if quote is None and char in "\"'`":
            quote, regex, string_start = char, _after_regex_operator(text, i), i
            literal.append(char)
            i += 1
            continue
        if quote is not None and char == quote:
            quote, regex = None, False
            literal.append(char)
            i += 1
            continue
        if quote is not None and quote != "`" and char == "\\":
            literal.append(text[i : i + 2])
            i += 2
            continue
        if char != "$":
            literal.append(char)
            i += 1
            continue
        placeholder, end = _placeholder(text, i, Context(quote) if quote else Context.CODE, regex)
        if placeholder is None:
            literal.append("$")
        else:
            segments.append("".join(literal))
            literal = []
            segments.append(placeholder)
        i = end
    if quote is not None:
        raise TemplateError(f"string opened with {quote} is never closed", text, string_start)
    segments.append("".join(literal))
    return QueryTemplate(text, tuple(s for s in segments if s != ""))


def _after_regex_operator(text: str, quote_at: int) -> bool:
    before = text[:quote_at].rstrip()
    return before.endswith(("=~", "!~"))


def _placeholder(
    text: str, at: int, context: Context, regex: bool
) -> tuple[Placeholder | None, int]:
    """The placeholder starting at ``text[at] == "$"`` (None: literal text) and where it ends."""
    nxt = text[at + 1 : at + 2]
    if nxt == "$":
        return None, at + 2  # "$$" is a literal "$"
    if nxt == "{":
        close = text.find("}", at + 2)
        name = text[at + 2 : close] if close >= 0 else ""
        if close < 0 or not IDENTIFIER.fullmatch(name):
            raise TemplateError(
                "'${' must be followed by a name and '}', like ${elapsedTime}", text, at
            )
        end = close + 1
    else:
        match = IDENTIFIER.match(text, at + 1)
        if match is None:
            return None, at + 1
        name, end = match.group(), match.end()
    if (
        name == ELAPSED
        and text[end : end + 1] == "s"
        and not _IDENTIFIER_CHAR.match(text[end + 1 : end + 2])
    ):
        end += 1  # Iter8's "${elapsedTime}s": we already render the unit
    if context is Context.CODE and name in {NAME, NAMESPACE}:
        raise TemplateError(
            f"'${name}' must be inside a quoted label value, like "
            f'destination_workload="${name}": outside quotes a value could change the query',
            text,
            at,
        )
    return Placeholder(name, context, regex, at), end
