"""What a loader leaves unread in a file: documents of other kinds, or of other APIs.

``validate`` reports them so that a folder of manifests can be passed whole and nothing is
skipped in silence. Pure: bytes in, problems out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Location
from reconciler.spec.limits import Limits
from reconciler.spec.yamldoc import Problem, excerpt, load_documents, location_of

__all__ = ["Survey", "named_objects", "survey"]


@dataclass(frozen=True)
class Survey:
    """What one parse of a file says beside the loaders: what they leave, what it holds."""

    unread: list[Problem]
    objects: list[tuple[str, str | None, str]]
    """``(kind, namespace or None, name)`` of each object."""


def survey(
    path: str,
    data: bytes,
    wanted: Mapping[str, Collection[str]],
    limits: Limits | None = None,
    *,
    strict: bool = False,
) -> Survey:
    """What loaders of ``wanted`` leave unread in ``data``, and its objects: one parse.

    ``wanted``: kind -> the apiVersions read. ``objects`` are as ``named_objects`` gives.
    A document of another kind is a ``note`` naming what it is; a wanted kind of an
    apiVersion that is not read is a ``warning`` (an ``error`` when ``strict``): it looks
    like an experiment and nothing will run it. A file that does not parse gives nothing
    here: the loaders report it.
    """
    documents, _lines, problem, _noted = load_documents(path, data, limits)
    if problem is not None:
        return Survey([], [])
    return Survey(_unread(path, documents, wanted, strict), _objects(documents))


def _unread(
    path: str, documents: list[Any], wanted: Mapping[str, Collection[str]], strict: bool
) -> list[Problem]:
    found: list[Problem] = []
    for number, doc in enumerate(documents, start=1):
        if doc is None:  # an empty document ("---" alone, or comments only)
            continue
        where = location_of(path, doc)
        if not isinstance(doc, CommentedMap):
            found.append(
                Problem(
                    where,
                    "note",
                    f"skipped document {number}: a YAML {_yaml_type(doc)}, not a Kubernetes object",
                )
            )
            continue
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if not isinstance(kind, str) or not kind:
            found.append(Problem(where, "note", f"skipped document {number}: it has no 'kind'"))
        elif kind not in wanted:
            of_api = f", apiVersion {excerpt(api_version)}" if api_version is not None else ""
            read = " or ".join(sorted(wanted))
            message = f"skipped document {number} (kind {excerpt(kind)}{of_api}): not an {read}"
            found.append(Problem(where, "note", message))
        elif isinstance(api_version, str) and api_version not in wanted[kind]:
            found.append(
                Problem(
                    where,
                    "error" if strict else "warning",
                    f"this {kind} is never read: apiVersion {excerpt(api_version)} is not "
                    f"one the reconciler reads ({', '.join(sorted(wanted[kind]))})",
                )
            )
    if not any(doc is not None for doc in documents):
        found.append(Problem(Location(path, 1), "note", "skipped: the file holds no YAML document"))
    return found


def _yaml_type(value: object) -> str:
    if isinstance(value, CommentedSeq):
        return "list"
    return "string" if isinstance(value, str) else "scalar"


def named_objects(
    path: str, data: bytes, limits: Limits | None = None
) -> list[tuple[str, str | None, str]]:
    """``(kind, namespace or None, name)`` of every Kubernetes object in ``data``."""
    documents, _lines, problem, _noted = load_documents(path, data, limits)
    return [] if problem is not None else _objects(documents)


def _objects(documents: list[Any]) -> list[tuple[str, str | None, str]]:
    found = []
    for doc in documents:
        if not isinstance(doc, CommentedMap):
            continue
        metadata = doc.get("metadata")
        kind = doc.get("kind")
        if not isinstance(metadata, CommentedMap) or not isinstance(kind, str):
            continue
        name, namespace = metadata.get("name"), metadata.get("namespace")
        if isinstance(name, str):
            found.append((kind, namespace if isinstance(namespace, str) else None, name))
    return found
