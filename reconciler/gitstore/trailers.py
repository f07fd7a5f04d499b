"""Commit messages with Git trailers: build them, read them back, encode small mappings.

Every commit the reconciler writes ends in a paragraph of ``Key: value`` trailers that plain
git can query (``git log --format='%(trailers:key=Rollout-Weights,valueonly)'``). This
module turns a subject, an optional body and trailer pairs into such a message, parses the
trailer paragraph the way git does (the last paragraph, after the subject, when every one of
its lines is a trailer), and encodes the ``name=value,name=value`` mappings used in values
such as ``Rollout-Weights``. It is pure: no Git, no I/O, and it never accepts a key or value
that git would read back differently from what was written.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["decode_mapping", "encode_mapping", "format_message", "parse_trailers"]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILER_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*):[ \t]*(.*?)[ \t]*")
_MAPPING_PART = re.compile(r"[^\s,=]+")
_LINE_BREAKS = ("\n", "\r")


def _check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid trailer key {key!r}: use letters, digits and '-'")


def _check_value(key: str, value: str) -> None:
    if any(ch in value for ch in _LINE_BREAKS):
        raise ValueError(f"trailer {key}: the value must be a single line, got {value!r}")
    if not value or value != value.strip():
        # git trims trailer values, so such a value would not read back as written.
        raise ValueError(
            f"trailer {key}: the value must be non-empty without surrounding blanks, got {value!r}"
        )


def format_message(subject: str, trailers: Sequence[tuple[str, str]], body: str = "") -> str:
    """Build ``subject``, an optional ``body`` paragraph and the trailer paragraph.

    Raises:
        ValueError: the subject is empty or spans lines, a key is not
            ``[A-Za-z0-9][A-Za-z0-9-]*``, a value is empty, multi-line or padded, or the
            text is not Unicode that UTF-8 can carry (a lone surrogate).
    """
    if not subject.strip() or any(ch in subject for ch in _LINE_BREAKS):
        raise ValueError(f"the subject must be one non-empty line, got {subject!r}")
    for key, value in trailers:
        _check_key(key)
        _check_value(key, value)
    parts = [subject.strip()]
    body = body.strip("\n").rstrip()
    if body:
        parts.append(body)
    if trailers:
        parts.append("\n".join(f"{key}: {value}" for key, value in trailers))
    message = "\n\n".join(parts) + "\n"
    try:
        message.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = message[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise ValueError(f"the message cannot be written as UTF-8 ({bad}: {exc.reason})") from None
    return message


def _paragraphs(message: str) -> list[list[str]]:
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for raw in message.split("\n"):
        line = raw.rstrip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def parse_trailers(message: str) -> tuple[tuple[str, str], ...]:
    """Trailers of ``message``: its last paragraph when every line of it is ``Key: value``.

    The first paragraph is the subject and never holds trailers, as in git. Values are
    trimmed; an empty tuple means the message has no trailer paragraph.
    """
    paragraphs = _paragraphs(message)
    if len(paragraphs) < 2:  # noqa: PLR2004 - the subject paragraph, then the trailers
        return ()
    found: list[tuple[str, str]] = []
    for line in paragraphs[-1]:
        match = _TRAILER_LINE.fullmatch(line)
        if match is None:
            return ()
        found.append((match.group(1), match.group(2)))
    return tuple(found)


def encode_mapping(mapping: Mapping[str, int | str]) -> str:
    """``{"a": 1, "b": "x"}`` -> ``"a=1,b=x"``, in the mapping's own order.

    Raises:
        ValueError: a key or value is empty or holds ``,``, ``=`` or whitespace.
    """
    parts = []
    for key, value in mapping.items():
        text = str(value)
        for part in (key, text):
            if not _MAPPING_PART.fullmatch(part):
                raise ValueError(
                    f"cannot encode {key!r}={text!r}: keys and values must be non-empty "
                    "without ',', '=' or whitespace"
                )
        parts.append(f"{key}={text}")
    return ",".join(parts)


def decode_mapping(text: str) -> dict[str, str]:
    """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``; an empty string is an empty mapping.

    Raises:
        ValueError: an item is not ``key=value`` or a key repeats.
    """
    result: dict[str, str] = {}
    if not text.strip():
        return result
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not _MAPPING_PART.fullmatch(key) or not _MAPPING_PART.fullmatch(value):
            raise ValueError(f"malformed mapping item {item!r} in {text!r}: expected key=value")
        if key in result:
            raise ValueError(f"key {key!r} repeats in {text!r}")
        result[key] = value
    return result


def add_trailers(message: str, trailers: Sequence[tuple[str, str]]) -> str:
    """``message`` with ``trailers`` at the end of its trailer paragraph (a new one if none).

    Raises:
        ValueError: a key or value ``format_message`` would refuse.
    """
    for key, value in trailers:
        _check_key(key)
        _check_value(key, value)
    if not trailers:
        return message
    lines = "\n".join(f"{key}: {value}" for key, value in trailers)
    text = message.rstrip("\n")
    glue = "\n" if parse_trailers(message) else "\n\n"
    return f"{text}{glue}{lines}\n"
