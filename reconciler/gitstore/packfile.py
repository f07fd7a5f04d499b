"""Write objects as one pack file and its index (version 2), the way Git stores them.

pygit2 offers no indexer, and its ``PackBuilder`` searches for deltas, which libgit2 1.9
does again for every push: packing a tick's 5,000 new objects that way cost as much as the
push itself. The staging area (``staging``) therefore writes its objects here: whole (no
deltas; the push computes those for the wire), compressed at zlib's fastest level or, for a
big pack, stored in zlib's blocks uncompressed (``level``), with the
index that Git and libgit2 read. Both formats are Git's (``gitformat-pack``): the pack is a
header, the objects and a SHA-1 trailer; the index a fan-out table, the sorted ids, the
CRC-32 and offset of each entry, then both checksums. Files appear complete or not at all
(written aside, then renamed, the index last, since readers find packs by their index).
This module never deletes or overwrites a pack, and never reads the repository.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "FASTEST",
    "PACK_TYPES",
    "STORED",
    "index_entries",
    "install_pack",
    "pack_header",
    "write_pack",
]

PACK_TYPES = frozenset({1, 2, 3, 4})
"""Object kinds a pack holds whole: commit, tree, blob, tag (pygit2's ObjectType values)."""
FASTEST = 1
"""zlib's fastest compression level."""
STORED = 0
"""zlib's level 0: the content in stored blocks, as it is (inflating it is a copy)."""

_LARGE_OFFSET = 0x8000_0000
_MODE = 0o444
_ID_SIZE = 20
"""Bytes in a SHA-1 object id."""


def _entry_header(kind: int, size: int) -> bytes:
    """The variable-length type and size that precede an object's compressed data."""
    first = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(first | 0x80)
        first = size & 0x7F
        size >>= 7
    out.append(first)
    return bytes(out)


def _entry(oid: bytes, kind: int, data: bytes, level: int) -> bytes:
    """One object as a pack holds it whole: its header, then its content as zlib data."""
    if kind not in PACK_TYPES or len(oid) != _ID_SIZE:
        raise ValueError(f"cannot pack object {oid.hex()} of kind {kind}")
    return _entry_header(kind, len(data)) + zlib.compress(data, level)


def _index(entries: list[tuple[bytes, int, int]], pack_checksum: bytes) -> bytes:
    """The version 2 index of ``entries`` (raw id, CRC-32, offset), any order."""
    entries = sorted(entries)
    fanout = [0] * 256
    for oid, _crc, _offset in entries:
        fanout[oid[0]] += 1
    running = 0
    for i, count in enumerate(fanout):
        running += count
        fanout[i] = running
    small: list[int] = []
    large: list[int] = []
    for _oid, _crc, offset in entries:
        if offset < _LARGE_OFFSET:
            small.append(offset)
        else:
            small.append(_LARGE_OFFSET | len(large))
            large.append(offset)
    body = b"".join(
        (
            b"\377tOc",
            struct.pack(">I", 2),
            struct.pack(">256I", *fanout),
            b"".join(oid for oid, _crc, _offset in entries),
            struct.pack(f">{len(entries)}I", *(crc for _oid, crc, _offset in entries)),
            struct.pack(f">{len(small)}I", *small),
            struct.pack(f">{len(large)}Q", *large),
            pack_checksum,
        )
    )
    return body + hashlib.sha1(body, usedforsecurity=False).digest()


def write_pack(
    directory: Path, objects: Sequence[tuple[bytes, int, bytes]], *, level: int = FASTEST
) -> str:
    """Write ``objects`` (raw 20-byte id, kind, content) as a pack in ``directory``.

    Each object's content is compressed at zlib's ``level`` (``STORED``: not at all; any
    level is zlib data every reader inflates).

    The ids are trusted: they are the ones libgit2 computed when the objects were written.
    Entries are read, compressed and written one at a time, in one pass, so memory does not
    grow with the pack when ``objects`` reads each item as it is asked for. Returns the
    pack's name (``pack-<checksum>``); when a pack of that name exists
    already (the same objects, in the same order), it is kept.

    Raises:
        ValueError: an object is of a kind a pack cannot hold whole, or an id is not 20 bytes.
        OSError: the files could not be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(usedforsecurity=False)
    entries: list[tuple[bytes, int, int]] = []
    handle, temporary = tempfile.mkstemp(prefix="tmp_pack_", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            header = pack_header(len(objects))
            out.write(header)
            digest.update(header)
            offset = len(header)
            for oid, kind, data in objects:
                entry = _entry(oid, kind, data, level)
                entries.append((oid, zlib.crc32(entry), offset))
                out.write(entry)
                digest.update(entry)
                offset += len(entry)
            checksum = digest.digest()
            out.write(checksum)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return install_pack(directory, Path(temporary), checksum, entries)


def pack_header(count: int) -> bytes:
    """The 12 bytes that open a version 2 pack of ``count`` objects."""
    return b"PACK" + struct.pack(">II", 2, count)


def install_pack(
    directory: Path, temporary: Path, checksum: bytes, entries: list[tuple[bytes, int, int]]
) -> str:
    """Move the complete pack ``temporary`` into ``directory``, then write its index.

    ``entries`` are (raw id, CRC-32, offset) of each object in it, and ``checksum`` its
    trailer. When a pack of that name exists already (the same objects, in the same
    order), it is kept and ``temporary`` removed. Returns the pack's name.

    Raises:
        OSError: the files could not be moved or written (``temporary`` is removed).
    """
    name = f"pack-{checksum.hex()}"
    pack, index = directory / f"{name}.pack", directory / f"{name}.idx"
    try:
        if index.exists():
            temporary.unlink()
            return name
        temporary.chmod(_MODE)
        temporary.replace(pack)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _write_new(index, _index(entries, checksum))
    return name


def _write_new(path: Path, content: bytes) -> None:
    """Write ``path`` aside, read-only, then move it into place in one rename."""
    handle, temporary = tempfile.mkstemp(prefix="tmp_idx_", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        Path(temporary).chmod(_MODE)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def index_entries(index: Path) -> list[tuple[bytes, int, int]]:
    """(raw id, CRC-32, offset) of each object a version 2 pack index lists, by id.

    Raises:
        ValueError: the file is not a whole version 2 pack index.
        OSError: it could not be read.
    """
    data = index.read_bytes()
    fanout_end = 8 + 256 * 4
    if len(data) < fanout_end or data[:8] != b"\377tOc" + struct.pack(">I", 2):
        raise ValueError(f"{index.name} is not a version 2 pack index")
    (count,) = struct.unpack_from(">I", data, fanout_end - 4)
    crcs_at = fanout_end + count * _ID_SIZE
    offsets_at = crcs_at + count * 4
    large_at = offsets_at + count * 4
    if len(data) < large_at + 2 * _ID_SIZE:
        raise ValueError(f"{index.name} is truncated")
    crcs = struct.unpack_from(f">{count}I", data, crcs_at)
    small = struct.unpack_from(f">{count}I", data, offsets_at)
    entries = []
    for i in range(count):
        offset = small[i]
        if offset & _LARGE_OFFSET:
            at = large_at + (offset & ~_LARGE_OFFSET) * 8
            if len(data) < at + 8 + 2 * _ID_SIZE:
                raise ValueError(f"{index.name} is truncated")
            (offset,) = struct.unpack_from(">Q", data, at)
        oid = data[fanout_end + i * _ID_SIZE : fanout_end + (i + 1) * _ID_SIZE]
        entries.append((oid, crcs[i], offset))
    return entries
