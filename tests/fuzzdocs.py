"""Hostile experiment and Metric files for property tests: mutants of the valid corpus.

``files()`` is a hypothesis strategy of ``(name, bytes)``: a valid experiment or Metric file
of the corpus (``tests/data`` and the demo's files), mutated at the structure level (nodes
deleted, duplicated, retyped or replaced; tags, anchors and aliases, deep nesting, huge
numbers, odd keys and version names inserted) and then, sometimes, at the byte level (bytes
flipped, inserted, deleted, spliced). Structure mutants are written by a small emitter of
our own, because no YAML library will write the broken YAML wanted here. The lead's loop
property test draws documents from it too; nothing here touches the disk after import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from ruamel.yaml import YAML

_DATA = Path(__file__).parent / "data"
_DEMO = Path(str(resources.files("reconciler.demo").joinpath("data")))


def corpus() -> tuple[tuple[str, bytes], ...]:
    """The valid experiment and Metric files the mutants start from."""
    paths = sorted((_DATA / "iter8").glob("*.yaml")) + sorted(_DEMO.rglob("*.yaml"))
    found = []
    for path in paths:
        data = path.read_bytes()
        if b"kind: Experiment" in data or b"kind: Metric" in data:
            found.append((path.name, data))
    return tuple(found)


CORPUS = corpus()
_TREES = tuple(
    (name, [d for d in YAML(typ="safe", pure=True).load_all(data.decode()) if d is not None])
    for name, data in CORPUS
)


@dataclass(frozen=True)
class Raw:
    """Text written as it is, in a value's place (a tag, a number too big, ``[[[...]]]``)."""

    text: str


@dataclass(frozen=True)
class Anchored:
    """A value written with an anchor, ``&name value``."""

    name: str
    value: Any


_RAW_VALUES = (
    "!!omap [{a: 1}, {a: 2}]",
    "!!bool maybe",
    "!!int x",
    "!!float y",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!python/object:os.system ls",
    "!custom {a: 1}",
    "!!timestamp 2001-13-45",
    ".nan",
    "-.inf",
    "1e400",
    "1" + "0" * 400,
    "9" * 5000,
    "2001-12-14",
    "[" * 3000 + "]" * 3000,
    "{a: " * 200 + "1" + "}" * 200,
    '"\\ud800"',
    '"productpage v2"',
    '"pp=v2,x"',
    '"a\\nb"',
    '"../../.git/config"',
    '"a\\\\b"',
    '"a\\0b"',
    '"."',
    "*undefined",
    "~",
    "[]",
    "{}",
    '""',
)
_ODD_KEYS = (1, True, None, 1.5, "", " ", "<<", "spec", "kind", "apiVersion", "x" * 300)


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
        st.sampled_from([Raw(r) for r in _RAW_VALUES]),
    )


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a parsed document."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _mutate(data: st.DataObject, doc: Any) -> Any:  # noqa: C901, PLR0912
    """One structure mutation of ``doc`` (a fresh copy): the node at a random path changes."""
    doc = json.loads(json.dumps(doc, default=str))
    paths = _paths(doc)
    path = data.draw(st.sampled_from(paths))
    op = data.draw(
        st.sampled_from(
            ["delete", "duplicate", "retype", "replace", "raw", "key", "anchor", "deep", "bomb"]
        )
    )
    if not path:
        return Raw(data.draw(st.sampled_from(_RAW_VALUES))) if op == "raw" else doc
    parent, last = _get(doc, path[:-1]), path[-1]
    value = parent[last]
    if op == "delete":
        del parent[last]
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.append(value)
        else:
            parent[f"{last}-copy"] = value
    elif op == "retype":
        parent[last] = data.draw(
            st.sampled_from([[value], {"value": value}, str(value), None, 0, True])
        )
    elif op == "replace":
        parent[last] = data.draw(_scalars())
    elif op == "raw":
        parent[last] = Raw(data.draw(st.sampled_from(_RAW_VALUES)))
    elif op == "key" and isinstance(parent, dict):
        parent[data.draw(st.sampled_from(_ODD_KEYS))] = value
    elif op == "anchor":
        parent[last] = Anchored("a", value)
        if isinstance(parent, list):
            parent.extend([Raw("*a")] * data.draw(st.integers(1, 3)))
        else:
            parent["alias-of-a"] = Raw("*a")
    elif op == "deep":
        depth = data.draw(st.sampled_from([10, 63, 65, 200, 10_000]))
        parent[last] = Raw("[" * depth + "1" + "]" * depth)
    elif op == "bomb":
        parent[last] = Raw(_bomb(data.draw(st.integers(2, 9))))
    return doc


def _bomb(levels: int) -> str:
    """A billion-laughs value: ``levels`` of ten aliases each to the level below."""
    parts = ['&l0 ["lol"]']
    parts += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


def emit(value: Any, indent: int = 0) -> str:  # noqa: PLR0911
    """YAML text for ``value`` (block style), with ``Raw`` and ``Anchored`` written as given."""
    pad = "  " * indent
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Anchored):
        return f"&{value.name} " + _inline(value.value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for key, item in value.items():
            text = emit(item, indent + 1)
            head = f"{pad}{_key(key)}:"
            if isinstance(item, dict | list) and item:
                lines.append(f"{head}\n{text}")
            else:
                lines.append(f"{head} {text}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n".join(f"{pad}- {_inline(item)}" for item in value)
    return _scalar(value)


def _inline(value: Any) -> str:
    if isinstance(value, Raw | Anchored) or not isinstance(value, dict | list):
        return emit(value)
    return json.dumps(value, default=str)


def _key(key: Any) -> str:
    return _scalar(key) if not isinstance(key, str) or not key.isidentifier() else key


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}.get(str(value), repr(value))
    return json.dumps(str(value))


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, str]:
    """``(name, text)``: one corpus file with one to three structure mutations."""
    name, docs = draw(st.sampled_from(_TREES))
    data = draw(st.data())
    mutated: list[Any] = list(docs)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(mutated) - 1))
        mutated[index] = _mutate(data, mutated[index])
    return name, "\n---\n".join(emit(doc) for doc in mutated) + "\n"


@st.composite
def _byte_mutant(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
        if op == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[at:at] = draw(
                st.sampled_from(
                    [b"\xff", b"\x00", b"&a ", b"*a", b"!!omap ", b"[", b"{", b"---\n", b"\t"]
                )
            )
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 20))]
        else:
            other = draw(st.sampled_from(CORPUS))[1]
            start = draw(st.integers(0, len(other) - 1))
            out[at:at] = other[start : start + draw(st.integers(1, 200))]
    return bytes(out)


@st.composite
def files(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(name, bytes)``: a structure mutant, a byte mutant of one, or of a corpus file."""
    kind = draw(st.sampled_from(["structure", "bytes", "both"]))
    if kind == "bytes":
        name, data = draw(st.sampled_from(CORPUS))
    else:
        name, text = draw(documents())
        data = text.encode("utf-8", "surrogatepass")
    if kind != "structure":
        data = draw(_byte_mutant(data))
    return name, data


@dataclass(frozen=True)
class Outcome:
    """What loading one input cost, and the exception it raised (None: none did)."""

    seconds: float
    peak_bytes: int
    error: BaseException | None


def load_everything(name: str, data: bytes) -> Outcome:
    """Load ``data`` as experiments and Metric documents and validate it, measuring both.

    The caller runs ``tracemalloc`` (started once); the peak is reset for each input.
    """
    import time  # noqa: PLC0415 - only this measuring helper needs them
    import tracemalloc  # noqa: PLC0415

    from reconciler.cli.validate import validate_files  # noqa: PLC0415
    from reconciler.spec.loader import load_experiments  # noqa: PLC0415
    from reconciler.spec.metric import load_metrics  # noqa: PLC0415

    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.process_time()  # this process's CPU: a busy machine does not count
    error: BaseException | None = None
    try:
        load_experiments(name, data)
        load_metrics(name, data)
        validate_files([(name, data)])
        validate_files([(name, data)], strict=True)
    except Exception as exc:  # noqa: BLE001 - the fuzzer counts what escapes, by kind
        error = exc
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    return Outcome(seconds, peak, error)
