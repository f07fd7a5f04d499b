"""A chain of commits' trees edited in memory, each object written in Git's own format.

A tick records one commit per transition (invariant 3), each rewriting the trees on its
path: ``experiments/<namespace>/``, ``experiments/`` and the root. Built through libgit2,
every commit read its parent's trees back from the object database (pack windows
inflated again, trees of more than 4 KB parsed again: libgit2 does not cache them), and
every object written took a round of existence checks and a rescan of the pack directory
before it reached the staging area: 10,000 transitions took 12 to 18 s
(``hack/bench.py tick``). ``TreeEditor`` reads each directory it changes once per update,
keeps its entries in memory, and writes each new tree (and ``commit_bytes`` each new
commit) as the exact bytes libgit2 would, hashed here and handed to the staging area: the
ids are the ones libgit2 computes (tests compare them). Directories no change reaches are
never read. It never writes a reference and accepts the same paths, with the same errors,
as libgit2's ``TreeBuilder`` did (the tests keep that one as their reference).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

import pygit2
from pygit2.enums import FileMode, ObjectType

from reconciler.gitstore.trees import nest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from reconciler.gitstore.trees import Node

__all__ = ["ObjectSink", "TreeEditor", "commit_bytes", "object_id"]

_KIND_NAMES = {
    ObjectType.COMMIT: b"commit",
    ObjectType.TREE: b"tree",
    ObjectType.BLOB: b"blob",
    ObjectType.TAG: b"tag",
}


class ObjectSink(Protocol):
    """Where new objects go (``Staging``): stored under the id computed here."""

    def add(self, kind: int, data: bytes, oid: bytes) -> None:
        """Keep the object ``data`` of ``kind`` under its raw ``oid``."""


def object_id(kind: int, data: bytes) -> bytes:
    """The raw SHA-1 id Git gives the object ``data`` of ``kind``."""
    header = _KIND_NAMES[ObjectType(kind)] + b" %d\0" % len(data)
    digest = hashlib.sha1(header, usedforsecurity=False)
    digest.update(data)
    return digest.digest()


def _signature_line(header: bytes, signature: pygit2.Signature) -> bytes:
    offset = signature.offset
    sign = b"-" if offset < 0 else b"+"
    hours, minutes = divmod(abs(offset), 60)
    return b"%s %s <%s> %d %s%02d%02d\n" % (
        header,
        signature.raw_name,
        signature.raw_email,
        signature.time,
        sign,
        hours,
        minutes,
    )


def commit_bytes(
    tree: bytes,
    parents: Sequence[bytes],
    author: pygit2.Signature,
    committer: pygit2.Signature,
    message: str,
) -> bytes:
    """An unsigned commit's content, byte for byte as libgit2's ``git_commit_create``."""
    lines = [b"tree %s\n" % tree.hex().encode()]
    lines += [b"parent %s\n" % parent.hex().encode() for parent in parents]
    lines.append(_signature_line(b"author", author))
    lines.append(_signature_line(b"committer", committer))
    lines.append(b"\n")
    lines.append(message.encode("utf-8"))
    return b"".join(lines)


def _parse_tree(data: bytes) -> dict[bytes, tuple[int, bytes]]:
    """The entries of a tree object: name -> (mode, raw id)."""
    entries: dict[bytes, tuple[int, bytes]] = {}
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        entries[data[space + 1 : nul]] = (int(data[at:space], 8), data[nul + 1 : nul + 21])
        at = nul + 21
    return entries


def _order(name: bytes, mode: int) -> bytes:
    """Git's sort key of a tree entry: a directory sorts as if its name ended in '/'."""
    return name + b"/" if mode == FileMode.TREE else name


class _Dir:
    """One directory of the tree being edited: its entries, and the subdirectories read."""

    __slots__ = ("children", "encoded", "entries", "order")

    def __init__(self, entries: dict[bytes, tuple[int, bytes]]) -> None:
        self.entries = entries
        self.children: dict[bytes, _Dir] = {}
        self.encoded: dict[bytes, bytes] = {}
        self.order: list[bytes] | None = None

    def set(self, name: bytes, mode: int, oid: bytes) -> None:
        if name not in self.entries:
            self.order = None
        self.entries[name] = (mode, oid)
        self.encoded[name] = b"%o %s\0%s" % (mode, name, oid)

    def remove(self, name: bytes) -> None:
        if self.entries.pop(name, None) is not None:
            self.order = None
        self.encoded.pop(name, None)
        self.children.pop(name, None)

    def content(self) -> bytes:
        if self.order is None:
            self.order = sorted(self.entries, key=lambda n: _order(n, self.entries[n][0]))
        encoded = self.encoded
        for name in self.order:
            if name not in encoded:
                mode, oid = self.entries[name]
                encoded[name] = b"%o %s\0%s" % (mode, name, oid)
        return b"".join([encoded[name] for name in self.order])


class TreeEditor:
    """The tree of a chain of commits, edited in memory, one change set at a time."""

    def __init__(self, repo: pygit2.Repository, sink: ObjectSink, base: bytes | None) -> None:
        """Edit from the tree ``base`` (a raw id; None: the empty tree) of ``repo``."""
        self._repo = repo
        self._sink = sink
        self._root = self._read(base) if base is not None else _Dir({})

    def _read(self, oid: bytes) -> _Dir:
        kind, data = self._repo.odb.read(pygit2.Oid(raw=oid))[:2]
        if kind != ObjectType.TREE:
            raise ValueError(f"object {oid.hex()} is not a tree")
        return _Dir(_parse_tree(data))

    def _write(self, kind: int, data: bytes) -> bytes:
        oid = object_id(kind, data)
        self._sink.add(kind, data, oid)
        return oid

    def apply(self, changes: Mapping[str, bytes | None]) -> bytes:
        """Apply ``changes`` (path -> content, None deletes); return the new tree's raw id.

        The tree libgit2's ``TreeBuilder`` builds from the previous one (the tests compare
        them): only the trees on the changed paths are new; a directory left empty
        disappears; a file keeps its executable bit.

        Raises:
            ValueError: a path is invalid, is a directory, or runs through a file. The
                editor is then unusable (its tree is half changed).
        """
        written = self._apply(self._root, nest(changes), "")
        return written if written is not None else self._write(ObjectType.TREE, b"")

    def _apply(self, node: _Dir, changes: Node, prefix: str) -> bytes | None:
        for given, change in changes.items():
            name = given.encode("utf-8")
            path = f"{prefix}{given}"
            existing = node.entries.get(name)
            if isinstance(change, dict):
                self._apply_subtree(node, name, existing, change, path)
                continue
            if existing is not None and existing[0] == FileMode.TREE:
                raise ValueError(f"{path!r} is a directory; change the files in it instead")
            if change is None:
                if existing is not None:
                    node.remove(name)
                continue
            mode = FileMode.BLOB
            if existing is not None and existing[0] == FileMode.BLOB_EXECUTABLE:
                mode = FileMode.BLOB_EXECUTABLE
            node.set(name, mode, self._write(ObjectType.BLOB, change))
        if not node.entries:
            return None
        return self._write(ObjectType.TREE, node.content())

    def _apply_subtree(
        self,
        node: _Dir,
        name: bytes,
        existing: tuple[int, bytes] | None,
        changes: Node,
        path: str,
    ) -> None:
        if existing is not None and existing[0] != FileMode.TREE:
            raise ValueError(f"cannot write under {path!r}: it is a file")
        child = node.children.get(name)
        if child is None:
            child = self._read(existing[1]) if existing is not None else _Dir({})
        written = self._apply(child, changes, f"{path}/")
        if written is None:
            node.remove(name)
            return
        node.set(name, FileMode.TREE, written)
        node.children[name] = child
