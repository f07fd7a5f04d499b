"""New objects held in memory while commits are built, then written as one pack.

libgit2 writes every new object as a loose file: a file created, written and renamed per
object. A tick that records 1,000 transitions creates about 5,000 objects (a state
document, three trees and a commit each), and on a busy disk one file creation alone
took 1 to 2 ms here. ``Staging`` gives the cache an object database whose writes go to a
backend in memory (reads look in the packs first, then in memory, then in loose files);
``pack()`` then writes what it holds as one pack with its index (``packfile``), and the
next tick reads its state from that pack rather than from thousands of files; ``packing()``
does the same in a second thread while the caller pushes (compression releases the GIL,
and libgit2's push runs without it). Objects are dropped from memory only once the pack
that holds them is written and libgit2 knows of it; ``over_limit`` says when enough is
staged that the caller should pack before going on. Each update and each fetch that
brings objects adds a pack, and libgit2 searches every pack for an object it reads, so once
the cache holds more than ``PACKS_KEPT`` packs, ``merge()`` rewrites the small ones (under
``MERGE_BELOW`` bytes each: the last ones written and fetched) as one and removes them; the
large pack of the first clone stays as it is. This module never writes a reference; the only
files it removes are packs whose every object it has just written to a new pack. A process
reading the same cache directory at that moment (a CLI given the running reconciler's
``--cache-dir``) could miss a pack: give each process a cache of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import overload

import pygit2

from reconciler.gitstore.packfile import index_ids, write_pack

__all__ = ["Staging"]

STAGED_BYTES_LIMIT = 16 * 1024 * 1024
"""Above this much staged content, ``over_limit`` asks for a pack (bounds the memory)."""
PACKS_KEPT = 32
"""Above this many packs in the cache, ``merge()`` merges the small ones."""
MERGE_BELOW = 64 * 1024 * 1024
"""Packs smaller than this are merged; larger ones (a first clone) are left alone."""
_HEX_SIZE = 40
_BACKGROUND_FROM = 256
"""Fewer staged objects are packed after the block, in this thread: a promotion's handful
is written in a millisecond, and a second thread would only compete with its push."""

_PACKED, _MEMORY, _LOOSE = 3, 2, 1
"""Backend priorities: libgit2 reads from the highest first and writes to the first that
can write (the pack backend cannot, so new objects go to memory)."""


class _MemoryBackend(pygit2.OdbBackend):
    """An object database backend in a dict (libgit2 computes the ids, then calls us)."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[pygit2.Oid, tuple[int, bytes]] = {}
        self.size = 0

    def read_cb(self, oid: pygit2.Oid) -> tuple[int, bytes]:
        return self.objects[oid]  # KeyError is libgit2's "not found"

    def read_header_cb(self, oid: pygit2.Oid) -> tuple[int, int]:
        kind, data = self.objects[oid]
        return kind, len(data)

    def read_prefix_cb(self, prefix: str) -> tuple[int, bytes, pygit2.Oid]:
        oid = self._unique(prefix)
        kind, data = self.objects[oid]
        return kind, data, oid

    def write_cb(self, oid: pygit2.Oid, data: bytes, kind: int) -> None:
        if oid not in self.objects:
            self.objects[oid] = (kind, data)
            self.size += len(data)

    def exists_cb(self, oid: pygit2.Oid) -> bool:
        return oid in self.objects

    def exists_prefix_cb(self, prefix: str) -> pygit2.Oid:
        return self._unique(prefix)

    def _unique(self, prefix: str) -> pygit2.Oid:
        """The one staged id starting with ``prefix`` (libgit2 asks with full ids too)."""
        if len(prefix) == _HEX_SIZE:
            oid = pygit2.Oid(hex=prefix)
            if oid in self.objects:
                return oid
            raise KeyError(prefix)
        found = [oid for oid in self.objects if str(oid).startswith(prefix)]
        if len(found) != 1:
            raise KeyError(prefix)  # absent here, or ambiguous: libgit2 asks the others
        return found[0]

    def refresh_cb(self) -> None:
        """Nothing to refresh: this backend sees every write."""

    def __iter__(self) -> Iterator[pygit2.Oid]:
        return iter(list(self.objects))


class Staging:
    """The object database of one bare cache, with new objects staged in memory."""

    def __init__(self, repo: pygit2.Repository) -> None:
        """Give ``repo`` an object database: its packs, then memory, then loose objects."""
        self._repo = repo
        self._objects = Path(repo.path) / "objects"
        self._pack_dir = self._objects / "pack"
        self._memory = _MemoryBackend()
        self._packs = self._open()

    def _open(self) -> pygit2.OdbBackendPack:
        """Give the repository a new object database over the packs there are now.

        libgit2 lets a backend belong to one database only: the staged objects move to a
        new memory backend.
        """
        memory = _MemoryBackend()
        memory.objects, memory.size = self._memory.objects, self._memory.size
        self._memory = memory
        packs = pygit2.OdbBackendPack(str(self._objects))
        odb = pygit2.Odb()
        odb.add_backend(packs, _PACKED)
        odb.add_backend(self._memory, _MEMORY)
        loose = pygit2.OdbBackendLoose(str(self._objects), -1, False)  # noqa: FBT003 - positional
        odb.add_backend(loose, _LOOSE)
        self._repo.set_odb(odb)
        return packs

    @property
    def pending(self) -> int:
        """Objects written since the last ``pack()``."""
        return len(self._memory.objects)

    @property
    def over_limit(self) -> bool:
        """Whether the staged objects hold more than ``STAGED_BYTES_LIMIT`` bytes."""
        return self._memory.size > STAGED_BYTES_LIMIT

    def pack(self) -> int:
        """Write every staged object into one new pack (with its index); return how many.

        Raises:
            OSError: the pack could not be written; the objects stay staged.
        """
        staged = list(self._memory.objects.items())
        if staged:
            write_pack(self._pack_dir, [(oid.raw, kind, data) for oid, (kind, data) in staged])
            self._release(staged)
        return len(staged)

    @contextlib.contextmanager
    def packing(self) -> Iterator[None]:
        """Pack what is staged now in a second thread while the block runs.

        The block (a push) may read the staged objects: they leave memory, and libgit2
        learns of the new pack, only after the block is over, never under it. A few
        objects are packed in this thread once the block is over.

        Raises:
            OSError: after the block, when the pack could not be written (the objects
                stay staged).
        """
        staged = list(self._memory.objects.items())
        if len(staged) < _BACKGROUND_FROM:
            try:
                yield
            finally:
                self.pack()
            return
        entries = [(oid.raw, kind, data) for oid, (kind, data) in staged]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack") as pool:
            written = pool.submit(write_pack, self._pack_dir, entries)
            try:
                yield
            finally:
                written.result()
                self._release(staged)

    def merge(self) -> int:
        """Merge the small packs into one when the cache holds too many; return how many.

        Every object of the merged packs is read (whole) and written to the new pack,
        which libgit2 learns of before the old packs are removed. Packs with a ``.keep``
        file are left alone, as Git leaves them.

        Raises:
            OSError: the new pack could not be written (the old packs all stay).
            ValueError: a pack index could not be read (nothing is changed).
        """
        indexes = sorted(self._pack_dir.glob("pack-*.idx"))
        if len(indexes) <= PACKS_KEPT:
            return 0
        small = [
            index
            for index in indexes
            if not index.with_suffix(".keep").exists()
            and index.with_suffix(".pack").stat().st_size < MERGE_BELOW
        ]
        if len(small) < 2:  # noqa: PLR2004 - merging one pack changes nothing
            return 0
        ids = sorted({oid for index in small for oid in index_ids(index)})
        name = write_pack(self._pack_dir, _Stored(self._repo.odb, ids))
        # A new object database, so that libgit2 drops the packs removed next.
        self._packs = self._open()
        for index in small:
            if index.stem == name:
                continue
            index.unlink()
            index.with_suffix(".pack").unlink(missing_ok=True)
            index.with_suffix(".rev").unlink(missing_ok=True)
        return len(small)

    def _release(self, staged: list[tuple[pygit2.Oid, tuple[int, bytes]]]) -> None:
        """Make libgit2 see the new pack, then drop its objects from memory."""
        self._packs.refresh()
        for oid, (_kind, data) in staged:
            del self._memory.objects[oid]
            self._memory.size -= len(data)


class _Stored(Sequence[tuple[bytes, int, bytes]]):
    """Objects of the object database, read one at a time as ``write_pack`` asks."""

    def __init__(self, odb: pygit2.Odb, ids: list[bytes]) -> None:
        self._odb = odb
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> tuple[bytes, int, bytes]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[bytes, int, bytes]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[bytes, int, bytes] | Sequence[tuple[bytes, int, bytes]]:
        if isinstance(index, slice):
            return _Stored(self._odb, self._ids[index])
        raw = self._ids[index]
        kind, data = self._odb.read(pygit2.Oid(raw=raw))[:2]
        return raw, int(kind), bytes(data)
