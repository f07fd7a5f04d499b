"""Trees in memory: a change set nested by directory, and the diff of two trees.

``nest`` validates a commit's file changes and nests them by directory, as
``treeedit.TreeEditor`` writes them: only the trees on the changed paths are rewritten;
every other subtree is reused by id. The diff likewise skips subtrees whose ids are equal
on both sides (libgit2's own tree diff expands every subtree). There is no working tree and
no index on disk. This module never writes a reference and never accepts a path that could
escape the tree (``..``, ``.git``, absolute paths) or that is a file and a directory at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pygit2

from reconciler.spec.repopath import split_path

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["Node", "diff_paths", "nest", "split_path"]

Node: TypeAlias = dict[str, "bytes | Node | None"]
"""Changes nested by directory: a name maps to new content, None (delete) or a ``Node``."""


def nest(changes: Mapping[str, bytes | None]) -> Node:
    """``changes`` (path -> content) as nested directories, each path validated.

    Raises:
        ValueError: a path is invalid (see ``split_path``), runs through a file of the
            same change set, or is both a file and a directory in it.
    """
    root: Node = {}
    for path, content in changes.items():
        parts = split_path(path)
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                # A path conflict is a bad value, not a bad type.
                raise ValueError(f"{path!r} runs through the file {part!r}")  # noqa: TRY004
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ValueError(f"{path!r} is both a file and a directory")  # noqa: TRY004
        node[parts[-1]] = content
    return root


def diff_paths(old: pygit2.Tree | None, new: pygit2.Tree | None, prefix: str = "") -> Iterator[str]:
    """File paths added, modified (content or mode) or deleted from ``old`` to ``new``.

    Subtrees with the same id on both sides are skipped without being read.
    """
    before = {e.name: e for e in old if e.name is not None} if old is not None else {}
    after = {e.name: e for e in new if e.name is not None} if new is not None else {}
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is not None and b is not None and a.id == b.id and a.filemode == b.filemode:
            continue
        path = f"{prefix}{name}"
        a_tree = a if isinstance(a, pygit2.Tree) else None
        b_tree = b if isinstance(b, pygit2.Tree) else None
        if a_tree is not None or b_tree is not None:
            yield from diff_paths(a_tree, b_tree, f"{path}/")
        if (a is not None and a_tree is None) or (b is not None and b_tree is None):
            yield path
