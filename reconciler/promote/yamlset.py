"""Change one scalar in a YAML file and leave every other byte as it was.

A round-trip dump, even ruamel.yaml's, re-flows what it re-emits (indentation of lists,
line folding, spacing before comments). This module instead asks a YAML composer where the
scalar is (its start and end offsets in the text) and splices the new value in at that
place, in the style the old one had (plain, single- or double-quoted). A plain value is
kept plain only if it reads back as the same text under YAML 1.1 (what Kubernetes' Go YAML
and kustomize read: ``yes``, ``on`` and ``off`` are booleans there) and YAML 1.2 alike;
otherwise it is double-quoted. The result is parsed again to prove the path now holds the
new value. The composer is libyaml's C parser (through PyYAML: 30 times ruamel.yaml's
pure-Python one, which was most of a promotion's own time); a file it cannot read is
composed by ruamel.yaml instead. Pure: text in, text out; the last results are
remembered, since a promotion that lost a race edits the same file again on the new tip.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.spec import fieldpath

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (its wheels are), else PyYAML's own."""
Node = Any
"""A composed node, PyYAML's or ruamel.yaml's: both have ``id``, ``value``, ``tag``,
``style`` and start/end marks whose ``index`` counts characters."""


class YamlSetError(ValueError):
    """The path does not lead to a scalar in the file, or the file is not YAML."""


def set_scalar(text: str, path: str, value: str, *, document: int = 0) -> str:
    """``text`` with the scalar at ``path`` (a fieldPath) of document ``document`` replaced.

    Raises:
        YamlSetError: when the file does not parse, the document or path does not exist,
            or the path leads to a mapping or a list rather than a value.
    """
    return _set_scalar(text, path, value, document)


@functools.lru_cache(maxsize=64)
def _set_scalar(text: str, path: str, value: str, document: int) -> str:
    steps = fieldpath.parse(path)
    documents = _compose(text)
    if not 0 <= document < len(documents) or documents[document] is None:
        raise YamlSetError(f"has no document {document} (it has {len(documents)})")
    node: Node = documents[document]
    walked = ""
    for step in steps:
        node = _child(node, step, walked)
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    if node.id != "scalar":
        kind = "a mapping" if node.id == "mapping" else "a list"
        raise YamlSetError(f"{path} is {kind}, not a value that can be set")
    start, end = node.start_mark.index, node.end_mark.index
    updated = text[:start] + _render(node, value) + text[end:]
    if _read(updated, steps, document) != value:
        raise YamlSetError(f"{path}: setting {value!r} would not read back as that value")
    return updated


def _compose(text: str) -> list[Node]:
    """Every document of ``text``, composed (libyaml; ruamel.yaml for what it refuses)."""
    try:
        return list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.YAMLError:
        pass
    try:
        return list(YAML(typ="rt").compose_all(text))
    except YAMLError as exc:
        raise YamlSetError(f"not valid YAML: {exc}") from None


def _child(node: Node, step: str | int, walked: str) -> Node:
    where = walked or "the top of the document"
    if isinstance(step, int):
        if node.id != "sequence" or step >= len(node.value):
            raise YamlSetError(f"no item [{step}] at {where}")
        return node.value[step]
    if node.id == "mapping":
        for key, child in node.value:
            if key.id == "scalar" and key.value == step:
                return child
    raise YamlSetError(f"no field '{step}' at {where}")


def _render(node: Node, value: str) -> str:
    if node.style == "'":
        return "'" + value.replace("'", "''") + "'"
    if node.style == '"' or node.style in {"|", ">"}:
        return json.dumps(value, ensure_ascii=False)
    plain_ok = value and "\n" not in value and value == value.strip()
    if plain_ok and _plain_reads_as(value, node):
        return value
    return json.dumps(value, ensure_ascii=False)


def _plain_reads_as(value: str, node: Node) -> bool:
    """Whether ``value`` written plain reads back as itself, in YAML 1.1 and 1.2 alike."""
    line = f"k: {value}\n"
    try:
        read = [yaml.load(line, Loader=_LOADER), YAML(typ="safe").load(line)]  # noqa: S506 - a safe loader
    except (yaml.YAMLError, YAMLError):
        return False
    was_string = (node.tag or "").endswith(":str")
    for parsed in read:
        if not isinstance(parsed, dict) or "k" not in parsed:
            return False
        loaded = parsed["k"]
        same = (
            loaded == value and was_string
            if isinstance(loaded, str)
            else (not was_string and _text(loaded) == value)
        )
        if not same:
            return False
    return True


def _read(text: str, steps: tuple[str | int, ...], document: int) -> str | None:
    try:
        data = list(yaml.load_all(text, Loader=_LOADER))[document]
        found = fieldpath.get(data, steps)
    except (yaml.YAMLError, IndexError, fieldpath.FieldPathError):
        try:
            data = list(YAML(typ="safe").load_all(text))[document]
            found = fieldpath.get(data, steps)
        except (YAMLError, IndexError, fieldpath.FieldPathError):
            return None
    return _text(found)


def _text(value: Any) -> str:  # noqa: ANN401 - any decoded scalar
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
