"""Merge packs into one by copying their entries as they are, deltas and all.

A fetch brings a pack of deltas: each CI commit that appends a line to a file arrives as a
few dozen bytes against the file's last version. Rewriting such packs with whole objects
(``packfile.write_pack``) made each merge turn those deltas into whole copies of an
ever-larger file, so the bytes that set off a repack grew with the file, not with the
commits (600 fetches through ``git daemon``, each of one commit appending a 68-byte line to
one file: 619 KB of cache, against 179 KB merged this way and 139 KB as ``git gc`` packs it),
and the repacks came as often in the hour's last minutes as in its first, each dearer. Here every
entry is copied compressed, as it lies in its pack: whole objects and deltas on an id
(REF_DELTA) unchanged, deltas on an offset (OFS_DELTA) with the offset of their base in the
new pack. Nothing is inflated or compressed again. A delta on an id its own pack does not
hold (a thin pack's, never completed) fails the merge: neither Git nor libgit2 reads one
from a pack on disk, and libgit2's indexer completes every pack a fetch brings.

Each object is taken from the first pack that holds it, in the order given, and packs are
read in offset order: an object's delta base is then always written before it or held in
the same source pack, so the merged pack has no delta cycle. Every entry's CRC-32 is
checked against its index before it is copied: a byte changed on disk fails the merge
(``ValueError``) rather than moving into the new pack. This module never deletes a pack and
never reads the repository.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from reconciler.gitstore.packfile import (
    PACK_TYPES,
    index_entries,
    install_pack,
    pack_header,
)

__all__ = ["merge_packs"]

_OFS_DELTA, _REF_DELTA = 6, 7
_ID_SIZE = 20
_HEADER_SIZE = 12
_CONTINUE = 0x80


class _Source:
    """One pack to merge: its entries in offset order, and its content mapped."""

    def __init__(self, index: Path) -> None:
        listed = index_entries(index)
        self.name = index.with_suffix(".pack").name
        self.ids = {oid for oid, _crc, _offset in listed}
        self.id_at = {offset: oid for oid, _crc, offset in listed}
        with index.with_suffix(".pack").open("rb") as handle:
            self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        end = len(self.data) - _ID_SIZE
        if end < _HEADER_SIZE or self.data[:_HEADER_SIZE] != pack_header(len(listed)):
            self.data.close()
            raise ValueError(f"{self.name} does not match its index")
        ordered = sorted((offset, oid, crc) for oid, crc, offset in listed)
        self.entries = [
            (oid, crc, offset, ordered[i + 1][0] if i + 1 < len(ordered) else end)
            for i, (offset, oid, crc) in enumerate(ordered)
        ]
        if any(not _HEADER_SIZE <= start < stop <= end for _o, _c, start, stop in self.entries):
            self.data.close()
            raise ValueError(f"{self.name}: its index gives an entry outside the pack")


def merge_packs(directory: Path, indexes: Sequence[Path]) -> tuple[str, int]:
    """Write the objects of the packs ``indexes`` name as one pack in ``directory``.

    Returns the new pack's name and how many objects it holds. The packs merged are left
    in place: the caller removes them once the new pack is known.

    Raises:
        ValueError: a pack or index is not one Git wrote, an entry fails its CRC-32, or a
            delta's base is not in its pack.
        OSError: a file could not be read or written.
    """
    sources: list[_Source] = []
    try:
        sources.extend(_Source(index) for index in indexes)
        count = len(set().union(*(source.ids for source in sources)))
        return _Merge().write(directory, sources, count), count
    finally:
        for source in sources:
            source.data.close()


class _Merge:
    """One merge's new pack: where each object went in it, and its index entries."""

    def __init__(self) -> None:
        self._written: dict[bytes, int] = {}
        self._entries: list[tuple[bytes, int, int]] = []

    def write(self, directory: Path, sources: list[_Source], count: int) -> str:
        """Copy each object once, in source then offset order, into a pack of ``count``."""
        directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix="tmp_pack_", dir=directory)
        try:
            with os.fdopen(handle, "wb") as out:
                checksum = self._copy(out, sources, count)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return install_pack(directory, Path(temporary), checksum, self._entries)

    def _copy(self, out: BinaryIO, sources: list[_Source], count: int) -> bytes:
        """Write the pack to ``out``; return its checksum (written as its trailer too)."""
        digest = hashlib.sha1(usedforsecurity=False)
        header = pack_header(count)
        out.write(header)
        digest.update(header)
        offset = len(header)
        for source in sources:
            for oid, crc, start, stop in source.entries:
                if oid in self._written:
                    continue
                entry = self._entry(source, oid, crc, start, stop, offset)
                self._written[oid] = offset
                self._entries.append((oid, zlib.crc32(entry), offset))
                out.write(entry)
                digest.update(entry)
                offset += len(entry)
        checksum = digest.digest()
        out.write(checksum)
        return checksum

    def _entry(  # noqa: PLR0917 - one entry's place in its pack and in the new one
        self, source: _Source, oid: bytes, crc: int, start: int, stop: int, offset: int
    ) -> bytes:
        """The entry at ``start:stop`` in ``source`` as the new pack holds it at ``offset``."""
        raw = source.data[start:stop]
        if zlib.crc32(raw) != crc:
            raise ValueError(f"{source.name}: object {oid.hex()} fails its CRC-32")
        kind, body = _type_and_body(raw, source.name)
        if kind in PACK_TYPES:
            return raw
        if kind == _REF_DELTA:
            if raw[body : body + _ID_SIZE] not in source.ids:
                raise ValueError(f"{source.name}: object {oid.hex()} is a delta on another pack")
            return raw
        if kind != _OFS_DELTA:
            raise ValueError(f"{source.name}: object {oid.hex()} has unknown type {kind}")
        distance, data = _read_distance(raw, body, source.name)
        base = source.id_at.get(start - distance)
        if base is None or base not in self._written:
            raise ValueError(f"{source.name}: object {oid.hex()} has no delta base before it")
        return raw[:body] + _distance(offset - self._written[base]) + raw[data:]


def _type_and_body(raw: bytes, name: str) -> tuple[int, int]:
    """An entry's type, and where what follows its type-and-size header begins."""
    at = 0
    while at < len(raw) and raw[at] & _CONTINUE:
        at += 1
    if at >= len(raw):
        raise ValueError(f"{name}: an entry's header runs past its end")
    return (raw[0] >> 4) & 0x07, at + 1


def _read_distance(raw: bytes, at: int, name: str) -> tuple[int, int]:
    """An OFS_DELTA's distance back to its base, and where its compressed data begins."""
    if at >= len(raw):
        raise ValueError(f"{name}: a delta's base offset runs past its entry")
    byte = raw[at]
    distance = byte & 0x7F
    while byte & _CONTINUE:
        at += 1
        if at >= len(raw):
            raise ValueError(f"{name}: a delta's base offset runs past its entry")
        byte = raw[at]
        distance = ((distance + 1) << 7) | (byte & 0x7F)
    return distance, at + 1


def _distance(distance: int) -> bytes:
    """Encode an OFS_DELTA's distance back to its base, as Git does (``gitformat-pack``)."""
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(_CONTINUE | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))
