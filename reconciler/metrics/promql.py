"""Render a metric's query for one version: every value escaped for where it lands.

Pure: a ``QueryTemplate`` (parsed by ``reconciler.spec.metric``) and values in, PromQL text
out. A value inside a quoted string is escaped for that quote; inside a ``=~``/``!~``
matcher it is first escaped as a regular expression (RE2's ``QuoteMeta``), so a version
named ``productpage-v.*`` matches only itself; outside quotes only a number is accepted;
``${elapsedTime}`` is a duration we write ourselves. Whatever a version name, namespace
or variable contains, it can only ever be the content of the literal it was meant for:
it never changes the query's structure. This module never sends a query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.errors import PermanentError
from reconciler.spec.template import (
    ELAPSED,
    IDENTIFIER,
    NAME,
    NAMESPACE,
    Context,
    Placeholder,
    QueryTemplate,
)

_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")
"""What Go's ``regexp.QuoteMeta`` escapes (Prometheus' regular expressions are RE2)."""
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class QueryRenderError(PermanentError):
    """A value cannot be put into a query safely (or a placeholder has no value)."""


@dataclass(frozen=True)
class Bindings:
    """The values a query's placeholders take for one version."""

    name: str
    """The version's name (``$name``)."""
    namespace: str
    """``$namespace``: the version's ``namespace`` variable if any, else the experiment's."""
    elapsed_seconds: float
    variables: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_version(
        cls,
        version: str,
        namespace: str,
        elapsed_seconds: float,
        variables: Mapping[str, str],
    ) -> Bindings:
        """Bindings as an experiment gives them: a ``namespace`` variable overrides ``namespace``.

        Iter8's samples set a ``namespace`` variable on each version for exactly this.
        Variables whose names are not identifiers cannot be referenced and are left out.
        """
        usable = {k: v for k, v in variables.items() if IDENTIFIER.fullmatch(k)}
        return cls(
            name=version,
            namespace=usable.get(NAMESPACE, namespace),
            elapsed_seconds=elapsed_seconds,
            variables=usable,
        )

    def value(self, placeholder: str) -> str:
        """The raw (unescaped) value of one placeholder."""
        if placeholder == NAME:
            return self.name
        if placeholder == NAMESPACE:
            return self.namespace
        if placeholder == ELAPSED:
            return duration(self.elapsed_seconds)
        if placeholder in self.variables:
            return self.variables[placeholder]
        known = ", ".join(sorted(self.variables)) or "none"
        raise QueryRenderError(
            f"the query uses ${placeholder}, which version {self.name!r} does not define "
            f"(its variables: {known})"
        )


def duration(seconds: float) -> str:
    """``seconds`` as a PromQL duration: whole seconds, rounded up, at least ``1s``."""
    if not math.isfinite(seconds):
        raise QueryRenderError(f"elapsed time {seconds!r} is not a finite number of seconds")
    return f"{max(1, math.ceil(seconds))}s"


def escape_string(value: str, quote: str) -> str:
    """``value`` as the content of a PromQL string literal delimited by ``quote``.

    PromQL strings follow Go's escapes. A backslash, the quote and control characters
    are escaped; everything else (any Unicode) stays as it is.

    Raises:
        QueryRenderError: ``quote`` is a backtick and ``value`` contains one (raw strings
            have no escapes), or ``value`` holds a lone surrogate (not UTF-8).
    """
    _check_text(value)
    if quote == "`":
        if "`" in value:
            raise QueryRenderError(
                f"{value!r} contains a backtick and cannot be put in a `raw string`; "
                "quote the placeholder with double quotes in the query"
            )
        return value
    out = []
    for char in value:
        if char == quote:
            out.append("\\" + char)
        elif char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:  # noqa: PLR2004 - ASCII control range
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def escape_regex(value: str) -> str:
    """``value`` as an RE2 regular expression that matches exactly ``value``."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in value)


def render(template: QueryTemplate, bindings: Bindings) -> str:
    """The query with every placeholder replaced by its escaped value.

    Raises:
        QueryRenderError: a placeholder has no value, or a value cannot be placed safely.
    """
    return "".join(
        part if isinstance(part, str) else _place(part, bindings) for part in template.segments
    )


def _place(placeholder: Placeholder, bindings: Bindings) -> str:
    value = bindings.value(placeholder.name)
    if placeholder.context is Context.CODE:
        if placeholder.name == ELAPSED or _NUMBER.fullmatch(value):
            return value
        raise QueryRenderError(
            f"${placeholder.name} is outside quotes in the query, where only a number is "
            f"accepted, and {value!r} is not one; quote it if it is a label value"
        )
    if placeholder.regex:
        value = escape_regex(value)
    return escape_string(value, placeholder.context.value)


def _check_text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryRenderError(f"{value!r} is not valid Unicode text") from None
