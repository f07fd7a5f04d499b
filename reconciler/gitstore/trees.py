"""Trees in memory: build a commit's tree from its parent's and file changes, and diff two.

Only the trees on the changed paths are rewritten (one ``TreeBuilder`` per touched
directory); every other subtree is reused by id, so adding one file to a tree of thousands
costs the trees on its path, not the whole tree. A directory left empty by a deletion
disappears, as in Git. The diff likewise skips subtrees whose ids are equal on both sides
(libgit2's own tree diff expands every subtree). There is no working tree and no index on
disk. This module never writes a reference and never accepts a path that could escape the
tree (``..``, ``.git``, absolute paths) or that is a file and a directory at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pygit2
from pygit2.enums import FileMode, ObjectType

from reconciler.gitstore.names import held
from reconciler.spec.repopath import split_path

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["Node", "build_tree", "diff_paths", "nest", "split_path"]

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


def _write(
    repo: pygit2.Repository, tree: pygit2.Tree | None, node: Node, prefix: str
) -> pygit2.Oid | None:
    """Write ``tree`` with ``node``'s changes applied; None when the result is empty."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for given, change in node.items():
        name = held(given)
        path = f"{prefix}{name}"
        existing = tree[name] if tree is not None and name in tree else None
        if isinstance(change, dict):
            _write_subtree(repo, builder, existing=existing, name=name, node=change, path=path)
            continue
        if existing is not None and existing.type == ObjectType.TREE:
            raise ValueError(f"{path!r} is a directory; change the files in it instead")
        if change is None:
            if existing is not None:
                builder.remove(name)
            continue
        mode = FileMode.BLOB
        if existing is not None and existing.filemode == FileMode.BLOB_EXECUTABLE:
            mode = FileMode.BLOB_EXECUTABLE
        builder.insert(name, repo.create_blob(change), mode)
    if len(builder) == 0:
        return None
    return builder.write()


def _write_subtree(
    repo: pygit2.Repository,
    builder: pygit2.TreeBuilder,
    *,
    existing: pygit2.Object | None,
    name: str,
    node: Node,
    path: str,
) -> None:
    if existing is not None and not isinstance(existing, pygit2.Tree):
        raise ValueError(f"cannot write under {path!r}: it is a file")
    written = _write(repo, existing, node, f"{path}/")
    if written is not None:
        builder.insert(name, written, FileMode.TREE)
    elif existing is not None:
        builder.remove(name)


def build_tree(
    repo: pygit2.Repository, base: pygit2.Tree | None, changes: Mapping[str, bytes | None]
) -> pygit2.Oid:
    """Write the tree ``base`` becomes after ``changes`` (path -> content, None deletes).

    ``base`` None starts from an empty tree. Deleting an absent path is a no-op.

    Raises:
        ValueError: a path is invalid (see ``split_path``), is a directory, or runs
            through a file.
    """
    written = _write(repo, base, nest(changes), "")
    return written if written is not None else repo.TreeBuilder().write()


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
