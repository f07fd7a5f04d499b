"""Change one scalar in a YAML file and leave every other byte as it was.

A round-trip dump, even ruamel.yaml's, re-flows what it re-emits (indentation of lists,
line folding, spacing before comments). This module instead asks ruamel.yaml's composer
where the scalar is (its start and end offsets in the text) and splices the new value in
at that place, in the style the old one had (plain, single- or double-quoted; a plain value
that would read back as something else is double-quoted). The result is parsed again to
prove the path now holds the new value. Pure: text in, text out; so the last results are
remembered, since a promotion that lost a race to another writer edits the same file again
on the new tip, and both parses (pure-Python ruamel.yaml) are most of a promotion's own time.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.spec import fieldpath


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
    try:
        documents = list(YAML(typ="rt").compose_all(text))
    except YAMLError as exc:
        raise YamlSetError(f"not valid YAML: {exc}") from None
    if not 0 <= document < len(documents) or documents[document] is None:
        raise YamlSetError(f"has no document {document} (it has {len(documents)})")
    node: Node = documents[document]
    walked = ""
    for step in steps:
        node = _child(node, step, walked)
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    if not isinstance(node, ScalarNode):
        kind = "a mapping" if isinstance(node, MappingNode) else "a list"
        raise YamlSetError(f"{path} is {kind}, not a value that can be set")
    start, end = node.start_mark.index, node.end_mark.index
    updated = text[:start] + _render(node, value) + text[end:]
    if _read(updated, steps, document) != value:
        raise YamlSetError(f"{path}: setting {value!r} would not read back as that value")
    return updated


def _child(node: Node, step: str | int, walked: str) -> Node:
    where = walked or "the top of the document"
    if isinstance(step, int):
        if not isinstance(node, SequenceNode) or step >= len(node.value):
            raise YamlSetError(f"no item [{step}] at {where}")
        child: Node = node.value[step]
        return child
    if isinstance(node, MappingNode):
        for key, child in node.value:
            if isinstance(key, ScalarNode) and key.value == step:
                found: Node = child
                return found
    raise YamlSetError(f"no field '{step}' at {where}")


def _render(node: ScalarNode, value: str) -> str:
    if node.style == "'":
        return "'" + value.replace("'", "''") + "'"
    if node.style == '"' or node.style in {"|", ">"}:
        return json.dumps(value, ensure_ascii=False)
    plain_ok = value and "\n" not in value and value == value.strip()
    if plain_ok and _plain_reads_as(value, node):
        return value
    return json.dumps(value, ensure_ascii=False)


def _plain_reads_as(value: str, node: ScalarNode) -> bool:
    """Whether ``value`` written plain reads back as the same text and the same kind."""
    try:
        parsed = YAML(typ="safe").load(f"k: {value}\n")
    except YAMLError:
        return False
    if not isinstance(parsed, dict) or "k" not in parsed:
        return False
    loaded = parsed["k"]
    was_string = (node.tag or "").endswith(":str")
    if isinstance(loaded, str):
        return loaded == value and was_string
    return not was_string and _text(loaded) == value


def _read(text: str, steps: tuple[str | int, ...], document: int) -> str | None:
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
