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
the cache holds more than ``PACKS_KEPT`` packs, ``merge()`` rewrites the smallest ones as one
(geometrically: the recent small packs, never the base) and removes them, keeping the
deltas a fetch brought (``packmerge``). The staged objects are whole, which takes more room
than deltas, and objects of rejected pushes are never reached again, so once the packs
beside the base (the last repack's pack, or the largest) hold ``REPACK_RATIO`` times as much
as it, ``start_repack()`` writes what the references reach as one pack with deltas
(``PackBuilder``), in a thread of its own while the caller goes on, and ``finish_repack()``
then removes every pack there was when it started: the cache stays within about
``1 + REPACK_RATIO`` times the repository's packed size, whatever the process's age.
This module never writes a reference; the only files it removes are packs
whose every object (every one still reachable, for a repack) it has just written to a new
pack. A process
reading the same cache directory at that moment (a CLI given the running reconciler's
``--cache-dir``) could miss a pack: give each process a cache of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pygit2

from reconciler.gitstore import repack
from reconciler.gitstore.packfile import FASTEST, STORED, write_pack
from reconciler.gitstore.packmerge import merge_packs

__all__ = ["Staging", "geometric_split"]

STAGED_BYTES_LIMIT = 16 * 1024 * 1024
"""Above this much staged content, ``over_limit`` asks for a pack (bounds the memory)."""
STORED_FROM = 1024 * 1024
"""A pack of this much staged content or more is written uncompressed (``packfile.STORED``):
compressing took 1.2 of the 1.7 s a 10,000-transition tick spent packing, and the push
reads every tree back (a first tick 13.0 -> 10.7 s, a running one 12.6 -> 10.1 s,
``hack/bench.py tick``). Such packs take about twice the room (172 MB instead of 78 after
that tick), until the repack they soon set off (``REPACK_RATIO``) rewrites them with
deltas. A smaller update (a promotion: a few objects) is compressed as before: it is
merged with others and may stay for long."""
PACKS_KEPT = 32
"""Above this many packs in the cache, ``merge()`` merges the small ones."""
REPACK_FROM = 1024 * 1024
"""``should_repack`` waits until the packs beside the base hold at least this much."""
REPACK_RATIO = 4
"""``should_repack`` waits until the packs beside the base hold this many times its bytes.

A repack reads and writes every reachable object, so its cost grows with the repository;
what it waits for grows with the repository too (the base is the repository, packed with
deltas), so its cost per update stays flat, whatever the history's length. The cache pays
in disk: about ``1 + REPACK_RATIO`` times the packed repository at its largest. At 1, a
tick that records 1,000 state documents (whole objects, 3.5 MB) outweighed the packed
history of its own documents, and every other update repacked everything (1.2 s at 13,000
objects, 3.7 s at 43,000; ``hack/bench.py tick``).
"""
BASE_FILE = "reconciler-base-pack"
"""The file in the cache (beside ``objects``) that names the base pack's index, so that a
process restarted over the cache knows it; Git ignores it."""
_HEX_SIZE = 40
_BACKGROUND_FROM = 256
"""Fewer staged objects are packed after the block, in this thread: a promotion's handful
is written in a millisecond, and a second thread would only compete with its push."""

REPACK_DIR = "reconciler-repack"
"""The directory in the cache (beside ``objects``) a repack writes its pack into, to move it
into ``objects/pack`` by its known name once complete; Git ignores it."""
_REPACKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-repack")
"""Repacks are waited for here, one at a time in the process (each in a child process of
its own, ``repack``): each reads and delta-searches a whole repository, so a fleet's repos
queue rather than hold as many repositories in memory."""

_MEMORY_PRIORITY = 2
"""The memory backend's priority: that of libgit2's pack backend (its loose objects' is 1).
libgit2 reads from the highest first and writes to the first that can write (the pack
backend cannot, so new objects go to memory)."""
_ABSENT = "f" * 40
"""An object id no object has (finding one would take breaking SHA-1): looked up to make
libgit2 rescan the packs (``Staging._refresh``)."""


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
        self._open()
        self._base_file = Path(repo.path) / BASE_FILE
        try:
            self._base: str | None = self._base_file.read_text().strip() or None
        except (FileNotFoundError, UnicodeDecodeError):
            self._base = None
        self._repacking: tuple[Future[tuple[str | None, int, int]], list[Path]] | None = None
        """The repack under way: its result (the pack's name, objects, peak memory) and the
        packs it replaces (those there were when it started)."""
        self.repack_peak = 0
        """The largest peak resident memory of a repack process so far, bytes."""

    def _open(self) -> None:
        """Give the repository a new object database over the packs there are now.

        libgit2 opens the packs and the loose objects itself (``git_odb_open``): pygit2
        never frees a backend made in Python and added to a database (``OdbBackendPack``
        and ``OdbBackendLoose`` live as long as the process), and two made at every fetch
        and merge, a few dozen bytes each, pinned the allocator's pools, which a merge's
        many small objects spread over new arenas. The memory backend is freed with its
        database; libgit2 lets a backend belong to one database only, so the staged objects
        move to a new one. It comes after the packs (libgit2 keeps backends of equal
        priority in the order they were added) and before the loose objects, and takes
        every write.

        Only the repository holds the database: libgit2 shares an open pack, with its
        cache of delta bases, among the databases that have it open, so one held here
        across a reopen would hand every pack to the next, and their caches would never
        be dropped (malloc's memory in use grew from 10 to 41 MiB over 1,400 fetches).
        """
        memory = _MemoryBackend()
        memory.objects, memory.size = self._memory.objects, self._memory.size
        self._memory = memory
        odb = pygit2.Odb(str(self._objects))
        odb.add_backend(self._memory, _MEMORY_PRIORITY)
        self._repo.set_odb(odb)

    def reopen(self) -> None:
        """Give the repository its object database again (after ``Repository.free``)."""
        self._open()

    def _refresh(self) -> None:
        """Make libgit2 rescan the pack directory (for a pack this module just wrote).

        libgit2 rescans it whenever an object is not found, so one that cannot be there is
        looked up (pygit2 has no ``git_odb_refresh``).
        """
        self._repo.odb.exists(_ABSENT)

    def add(self, kind: int, data: bytes, oid: bytes) -> None:
        """Stage the object ``data`` of ``kind`` whose raw id, computed by the caller, is ``oid``.

        For objects built outside libgit2 (``treeedit``): no existence check, no rescan of
        the pack directory, as libgit2 makes for every object written through it. An object
        staged twice is kept once; one already packed is staged again, and packed again
        (harmless: a reader finds either copy).
        """
        self._memory.write_cb(pygit2.Oid(raw=oid), data, kind)

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
            entries = [(oid.raw, kind, data) for oid, (kind, data) in staged]
            write_pack(self._pack_dir, entries, level=self._level())
            self._release(staged)
        return len(staged)

    def _level(self) -> int:
        """The compression of a pack of what is staged now (``STORED_FROM``)."""
        return STORED if self._memory.size >= STORED_FROM else FASTEST

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
            written = pool.submit(write_pack, self._pack_dir, entries, level=self._level())
            try:
                yield
            finally:
                written.result()
                self._release(staged)

    def merge(self) -> int:
        """Merge small packs into one when the cache holds too many; return how many.

        The packs merged are the smallest ones, as many as it takes for the sizes left to
        grow geometrically (each pack kept is at least twice all the smaller ones together,
        as ``git repack --geometric=2`` keeps them): a merge rewrites the recent small packs,
        not the whole cache, so its cost does not grow with the process's age. Every entry
        of the merged packs is copied as it lies, deltas kept (``packmerge``), into the new
        pack, which libgit2 learns of before the old packs are removed; the object database
        is then opened afresh over the packs left, so that no removed pack stays mapped or
        open. Packs with a ``.keep`` file are left alone, as Git leaves them.

        Raises:
            OSError: the new pack could not be written (the old packs all stay).
            ValueError: a pack or its index could not be read, or an entry fails its
                CRC-32 (nothing is changed).
        """
        packs = self.packs()
        if len(packs) <= PACKS_KEPT or self._repacking is not None:
            return 0
        # The base (the last repack's pack, or the first clone's, with deltas) is never
        # merged: a repack rewrites it, once the others outgrow it.
        base = self._base_of(packs)
        packs = [pack for pack in packs if pack[0] != base[0]]
        sizes = [size for _index, size in packs]
        merged = packs[: geometric_split(sizes)]
        if len(merged) < 2:  # noqa: PLR2004 - merging one pack changes nothing
            return 0
        # Oldest first: a fetch's thin pack is completed with whole copies of the delta bases
        # it lacked, which an older pack holds (often as deltas), and the first copy is kept.
        oldest_first = sorted((index for index, _size in merged), key=_written_at)
        name, _count = merge_packs(self._pack_dir, oldest_first)
        self._replace([index for index, _size in merged if index.stem != name])
        return len(merged)

    def packs(self) -> list[tuple[Path, int]]:
        """The cache's packs without a ``.keep`` file: (index path, pack bytes), smallest first."""
        found = []
        for index in self._pack_dir.glob("pack-*.idx"):
            if index.with_suffix(".keep").exists():
                continue
            try:
                found.append((index, index.with_suffix(".pack").stat().st_size))
            except FileNotFoundError:
                continue  # an index whose pack is being written or removed
        return sorted(found, key=lambda pack: (pack[1], pack[0].name))

    def _base_of(self, packs: Sequence[tuple[Path, int]]) -> tuple[Path, int]:
        """The base among ``packs`` (smallest first): the last repack's pack.

        Until the cache's first repack, the base is the largest pack at the first upkeep
        (the first fetch's, with the server's deltas), named from then on: a merge's pack
        of whole objects that grows larger never takes its place.
        """
        for pack in packs:
            if pack[0].name == self._base:
                return pack
        self._remember(packs[-1][0].name)
        return packs[-1]

    def _remember(self, base: str) -> None:
        """Name ``base`` the base pack, in memory and in ``BASE_FILE`` (best effort)."""
        self._base = base
        with contextlib.suppress(OSError):
            self._base_file.write_text(base + "\n")

    def should_repack(self) -> bool:
        """Whether the packs beside the base hold ``REPACK_RATIO`` times it, and ``REPACK_FROM``.

        The base is the last repack's pack (or the first clone's): the repository packed
        with deltas. A repack comes once the cache has written ``REPACK_RATIO`` times as
        much again, so its cost, which grows with the repository, is paid once per that
        much growth, and the cache stays within about ``1 + REPACK_RATIO`` times the
        repository's packed size (plus ``REPACK_FROM``).
        """
        packs = self.packs()
        if len(packs) < 2:  # noqa: PLR2004 - one pack is as packed as it gets
            return False
        base = self._base_of(packs)
        rest = sum(size for _index, size in packs) - base[1]
        return rest > max(REPACK_FROM, REPACK_RATIO * base[1])

    def start_repack(self, roots: Sequence[pygit2.Oid]) -> None:
        """Start writing what ``roots`` reach as one pack with deltas, in a process of its own.

        Once it is written, ``finish_repack`` removes the other packs (objects no reference
        reaches any more, and whole copies of the reachable ones); staged and loose objects
        are not touched.

        The repack reads the packs through a repository of its own, so every object
        ``roots`` reach must be packed already (nothing staged). Until ``finish_repack``
        has applied it, ``merge`` does nothing (it would remove packs the repack reads);
        new packs may come meanwhile, and stay. Nothing happens while one is under way.
        """
        if self._repacking is not None:
            return
        old = [index for index, _size in self.packs()]
        aside = Path(self._repo.path) / REPACK_DIR
        try:
            future = _REPACKS.submit(repack.run, Path(self._repo.path), aside, list(roots))
        except RuntimeError as exc:  # the interpreter is exiting
            raise OSError(f"cannot start a repack: {exc}") from None
        self._repacking = (future, old)

    @property
    def repacking(self) -> bool:
        """Whether a repack was started and not applied yet (``finish_repack``)."""
        return self._repacking is not None

    def finish_repack(self, *, wait: bool) -> int | None:
        """Apply the repack under way once written: remove the packs it replaces.

        Without ``wait``, a repack still writing is left to a later call. Returns the
        objects it wrote, None when there was none to apply.

        Raises:
            OSError: it could not be written (every old pack stays; the next may start).
        """
        if self._repacking is None:
            return None
        future, old = self._repacking
        if not wait and not future.done():
            return None
        self._repacking = None
        name, written, peak = future.result()
        self.repack_peak = max(self.repack_peak, peak)
        if name is None:
            return 0
        self._replace([index for index in old if index.stem != name])
        self._remember(f"{name}.idx")
        return written

    def _replace(self, removed: Sequence[Path]) -> None:
        """Remove ``removed``, then open the object database afresh (with the new pack).

        The new object database is made only after the removal: one made before would open
        the packs about to be removed, and keep them mapped (and their files on disk) for
        as long as it lives.
        """
        for index in removed:
            index.unlink(missing_ok=True)
            index.with_suffix(".pack").unlink(missing_ok=True)
            index.with_suffix(".rev").unlink(missing_ok=True)
        self._open()

    def _release(self, staged: list[tuple[pygit2.Oid, tuple[int, bytes]]]) -> None:
        """Make libgit2 see the new pack, then drop its objects from memory."""
        self._refresh()
        for oid, (_kind, data) in staged:
            del self._memory.objects[oid]
            self._memory.size -= len(data)


def _written_at(index: Path) -> tuple[int, str]:
    """When the pack of ``index`` was written (then its name, for a stable order)."""
    try:
        return index.with_suffix(".pack").stat().st_mtime_ns, index.name
    except FileNotFoundError:
        return 0, index.name


def geometric_split(sizes: Sequence[int]) -> int:
    """How many of the smallest packs (``sizes`` ascending) to merge.

    After the merge every pack kept is at least twice the size of all smaller ones
    together, the merged one included; at least the two smallest are merged.
    """
    total = sum(sizes)
    below = total
    split = len(sizes)
    for i in range(len(sizes) - 1, 0, -1):
        below -= sizes[i]
        if sizes[i] < 2 * below:
            break
        split = i
    else:
        split = 1
    return max(2, min(split, len(sizes)))
