"""The cache's own packs: written in Git's format, readable by git, and kept few.

The store stages new objects in memory and writes them as one pack per update
(``reconciler/gitstore/staging.py``, ``packfile.py``); these tests hold that to what the
git program itself accepts, and check that a long-running process does not pile up packs.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import tempfile
import zlib
from pathlib import Path

import pygit2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.gitstore import GitEnvStore
from reconciler.gitstore.packfile import (
    FASTEST,
    STORED,
    index_entries,
    install_pack,
    pack_header,
    write_pack,
)
from reconciler.gitstore.packmerge import merge_packs
from reconciler.gitstore.staging import PACKS_KEPT, STAGED_BYTES_LIMIT, STORED_FROM
from reconciler.ports import CommitSpec
from reconciler.testing import constant
from tests.gitutil import commit_files, git, git_env, make_bare_repo, write_files
from tests.integration.stores import AUTHOR, fetched_store

pytestmark = pytest.mark.integration


def objects_of(repo: Path) -> list[tuple[str, str]]:
    """(id, type) of every object in ``repo``, as git lists them."""
    listed = git(
        "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)", cwd=repo
    )
    return [tuple(line.split()) for line in listed.splitlines()]  # type: ignore[misc]


def cat(repo: Path, kind: str, oid: str) -> bytes:
    """The content of object ``oid`` as git reads it from ``repo``."""
    done = subprocess.run(
        ["git", "cat-file", kind, oid], cwd=repo, env=git_env(), capture_output=True, check=True
    )
    return done.stdout


@pytest.mark.parametrize("level", [FASTEST, STORED])
def test_a_written_pack_is_verified_and_read_by_git(tmp_path: Path, level: int) -> None:
    source = tmp_path / "source.git"
    make_bare_repo(
        source,
        {
            "empty": b"",
            "small.txt": b"one line\n",
            "nested/dir/big.bin": os.urandom(300_000),  # sizes need several header bytes
            "nested/dir/text.yaml": b"kind: Thing\n" * 5_000,
        },
    )
    commit_files(source, {"small.txt": "two lines\n"}, message="second")
    odb = pygit2.Repository(str(source)).odb
    listed = objects_of(source)
    objects = []
    for oid, _type in listed:
        number, data = odb.read(oid)
        objects.append((bytes.fromhex(oid), int(number), bytes(data)))

    target = tmp_path / "target.git"
    git("init", "--quiet", "--bare", target)
    name = write_pack(target / "objects" / "pack", objects, level=level)

    index = target / "objects" / "pack" / f"{name}.idx"
    verified = git("verify-pack", "-v", index)
    assert f"{name}.pack: ok" in verified
    indexed = sorted(oid.hex() for oid, _crc, _offset in index_entries(index))
    assert indexed == sorted(oid for oid, _ in listed)
    assert sorted(objects_of(target)) == sorted(listed)
    content = sum(len(data) for _oid, _kind, data in objects)
    packed = index.with_suffix(".pack").stat().st_size
    # the 60 kB of repeated YAML shrink to almost nothing, unless stored as they are
    assert (packed > content) if level == STORED else (packed < content - 50_000)
    for oid, kind in listed:
        assert cat(target, kind, oid) == cat(source, kind, oid)
    # same objects, same pack
    assert write_pack(target / "objects" / "pack", objects, level=level) == name


def test_many_updates_leave_a_cache_git_finds_whole_with_few_packs(tmp_path: Path) -> None:
    remote, cache, store = fetched_store(tmp_path)
    commits: list[str] = []
    for n in range(PACKS_KEPT + 8):
        if n % 4 == 0:  # a second writer too, so fetches bring packs of their own
            commit_files(remote, {f"ci/{n}.txt": f"{n}\n"}, message=f"ci {n}")
            store.fetch()
        spec = CommitSpec(f"change {n}", {f"state/{n}.json": f'{{"n": {n}}}\n'.encode()})
        result = store.update_branch("main", constant([spec]))
        commits.extend(result.commits)
    store.close()

    packs = list((cache / "objects" / "pack").glob("pack-*.idx"))
    assert 1 < len(packs) <= PACKS_KEPT + 1
    assert git("count-objects", "-v", cwd=cache).splitlines()[0] == "count: 0"  # none loose
    git("fsck", "--full", "--strict", cwd=cache)
    assert git("rev-parse", "refs/remotes/origin/main", cwd=cache) == git(
        "rev-parse", "main", cwd=remote
    )
    for commit in commits:  # every commit it made is still readable, from git and from us
        git("cat-file", "-e", commit, cwd=cache)
    reopened = GitEnvStore.open(str(remote), cache, author=AUTHOR)
    heads = reopened.fetch()
    assert heads.main is not None
    last = PACKS_KEPT + 7
    assert reopened.read_file(heads.main, f"state/{last}.json") == f'{{"n": {last}}}\n'.encode()


def test_a_corrupted_object_in_the_cache_fails_to_read_rather_than_read_altered(
    tmp_path: Path,
) -> None:
    # libgit2 does not hash objects again as it reads them (``read_without_rehashing``):
    # a byte changed on disk must still fail the read (zlib's checksum), never read back
    # as other content.
    remote, _cache, store = fetched_store(tmp_path)
    # bytes zlib cannot compress: stored as they are, so a changed byte inflates to
    # other content, and only the stream's checksum can tell
    content = random.Random(7).randbytes(4096)  # noqa: S311 - test data, not a secret
    tip = store.update_branch("main", constant([CommitSpec("add", {"doc.json": content})])).tip
    assert tip is not None
    store.close()
    compressed = zlib.compress(content, 1)
    packs = (tmp_path / "cache.git/objects/pack").glob("*.pack")
    holder = next(p for p in packs if compressed in p.read_bytes())
    data = bytearray(holder.read_bytes())
    at = data.index(compressed) + len(compressed) // 2
    data[at] ^= 0x01
    holder.chmod(0o644)
    holder.write_bytes(bytes(data))
    reopened = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    with pytest.raises(pygit2.GitError, match="incorrect data check"):
        reopened.read_file(tip, "doc.json")


def _versions(repo: Path, count: int) -> list[str]:
    """``count`` commits in ``repo``, each appending a line to one file and touching another."""
    git("init", "--quiet", "--initial-branch=main", repo)
    commits = []
    for n in range(count):
        with (repo / "log.txt").open("a") as log:
            log.write(hashlib.shake_128(str(n).encode()).hexdigest(50) + "\n")  # incompressible
        write_files(repo, {"last.txt": f"{n}\n"})
        git("add", "--all", cwd=repo)
        git("commit", "--quiet", "-m", f"v{n}", cwd=repo)
        commits.append(git("rev-parse", "HEAD", cwd=repo))
    return commits


def _git_pack(repo: Path, out: Path, revs: str, *, offsets: bool) -> Path:
    """Pack what ``revs`` name (``git rev-list --objects``) with git's own deltas; its index."""
    listed = git("rev-list", "--objects", *revs.split(), cwd=repo)
    flags = ["--delta-base-offset"] if offsets else []
    done = subprocess.run(
        ["git", "pack-objects", "--quiet", *flags, str(out / "pack")],
        cwd=repo,
        env=git_env(),
        input=listed + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return out / f"pack-{done.stdout.strip()}.idx"


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_merging_packs_copies_their_deltas_and_git_reads_every_object_back(
    tmp_path: Path, order: str
) -> None:
    source = tmp_path / "source"
    v = _versions(source, 40)
    made = tmp_path / "made"
    made.mkdir()
    # overlapping packs, deltas on offsets and on ids, as a fetch and git repack leave them
    packs = [
        _git_pack(source, made, v[15], offsets=True),
        _git_pack(source, made, f"{v[30]} ^{v[8]}", offsets=False),
        _git_pack(source, made, f"{v[39]} ^{v[25]}", offsets=True),
    ]
    if order == "newest first":
        packs.reverse()
    listed = sorted(set(objects_of(source / ".git")))
    target = tmp_path / "target.git"
    git("init", "--quiet", "--bare", target)
    pack_dir = target / "objects" / "pack"

    name, count = merge_packs(pack_dir, packs)

    index = pack_dir / f"{name}.idx"
    verified = git("verify-pack", "-v", index)
    assert f"{name}.pack: ok" in verified
    assert count == len(listed)
    assert sorted(objects_of(target)) == listed
    for oid, kind in listed:
        assert cat(target, kind, oid) == cat(source / ".git", kind, oid)
    merged = index.with_suffix(".pack").stat().st_size
    assert merged <= sum(p.with_suffix(".pack").stat().st_size for p in packs)
    whole = write_pack(tmp_path / "whole", [_read(source / ".git", oid) for oid, _ in listed])
    # the deltas stayed: whole copies of a growing file take several times the room
    assert 3 * merged < (tmp_path / "whole" / f"{whole}.pack").stat().st_size
    assert "chain length = " in verified


def _read(repo: Path, oid: str) -> tuple[bytes, int, bytes]:
    kind, data = pygit2.Repository(str(repo)).odb.read(oid)[:2]
    return bytes.fromhex(oid), int(kind), bytes(data)


def test_a_delta_whose_base_lies_in_another_pack_fails_the_merge_and_writes_nothing(
    tmp_path: Path,
) -> None:
    # A thin pack's delta names a base its pack does not hold: git and libgit2 read no such
    # pack from disk, and libgit2's indexer completes every fetched one. Should one come,
    # the merge says so rather than copy a delta nothing could resolve.
    repo = tmp_path / "repo.git"
    git("init", "--quiet", "--bare", repo)
    pack_dir = repo / "objects" / "pack"
    base_content = b"base version\n" * 50
    target_content = base_content + b"one more line\n"
    base_id = bytes.fromhex(git_hash(repo, base_content))
    target_id = bytes.fromhex(git_hash(repo, target_content, write=False))
    write_pack(pack_dir, [(base_id, 3, base_content)])
    delta = _size(len(base_content)) + _size(len(target_content))
    size = len(base_content)  # copy the base's bytes from 0: two size bytes, no offset
    delta += bytes([0x80 | 0x10 | 0x20, size & 0xFF, size >> 8])
    delta += bytes([14]) + b"one more line\n"  # then insert the new line
    entry = bytes([0x70 | (len(delta) & 0x0F) | 0x80, len(delta) >> 4]) + base_id
    entry += zlib.compress(delta)
    thin = _pack_of(pack_dir, [(target_id, entry)])
    other = write_pack(pack_dir, [(bytes.fromhex(git_hash(repo, b"other\n")), 3, b"other\n")])
    out = tmp_path / "out"

    with pytest.raises(ValueError, match="is a delta on another pack"):
        merge_packs(out, [thin, pack_dir / f"{other}.idx"])

    assert list(out.iterdir()) == []


def git_hash(repo: Path, content: bytes, *, write: bool = True) -> str:
    """The blob id of ``content`` (and the loose object written in ``repo``, by default)."""
    done = subprocess.run(
        ["git", "hash-object", "--stdin", *(["-w"] if write else [])],
        cwd=repo,
        env=git_env(),
        input=content,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def _size(n: int) -> bytes:
    """A size in a delta's header (little-endian base 128)."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _pack_of(pack_dir: Path, entries: list[tuple[bytes, bytes]]) -> Path:
    """A pack of ready-made ``entries`` (raw id, entry bytes), with its index."""
    body = pack_header(len(entries))
    listed = []
    for oid, entry in entries:
        listed.append((oid, zlib.crc32(entry), len(body)))
        body += entry
    checksum = hashlib.sha1(body, usedforsecurity=False).digest()
    temporary = pack_dir / "tmp_handmade"
    temporary.write_bytes(body + checksum)
    return pack_dir / f"{install_pack(pack_dir, temporary, checksum, listed)}.idx"


def test_a_byte_changed_on_disk_fails_the_merge_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "source"
    v = _versions(source, 12)
    made = tmp_path / "made"
    made.mkdir()
    first = _git_pack(source, made, v[5], offsets=True)
    second = _git_pack(source, made, f"{v[11]} ^{v[5]}", offsets=True)
    pack = second.with_suffix(".pack")
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    out = tmp_path / "out"

    with pytest.raises(ValueError, match="fails its CRC-32"):
        merge_packs(out, [first, second])

    assert list(out.iterdir()) == []  # no pack, no temporary file left


def _blob_id(content: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).digest()


def _insert_delta(base: bytes, target: bytes) -> bytes:
    """A delta that rebuilds ``target`` from ``base`` by inserting every byte of it."""
    delta = _size(len(base)) + _size(len(target))
    for at in range(0, len(target), 127):
        chunk = target[at : at + 127]
        delta += bytes([len(chunk)]) + chunk
    return delta


def _header(kind: int, size: int) -> bytes:
    out = bytearray([(kind << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def _ofs(distance: int) -> bytes:
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


_CONTENTS = [b"version %d\n" % n * (n % 7 + 1) for n in range(12)]

# Each pack: entries (content index, delta base: an earlier position in the pack, or None).
_packs = st.lists(
    st.lists(
        st.tuples(st.integers(0, len(_CONTENTS) - 1), st.one_of(st.none(), st.integers(0, 7))),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(packs=_packs, use_ref=st.booleans())
def test_any_packs_of_deltas_merge_into_one_that_reads_back_every_object(
    packs: list[list[tuple[int, int | None]]], use_ref: bool
) -> None:
    # Objects whole in one pack and deltas in another, deltas on deltas, in any order: the
    # merged pack alone gives every object back (libgit2 checks each id as it reads).
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp, "repo.git")
        pygit2.init_repository(str(repo), bare=True).free()
        pack_dir = repo / "objects" / "pack"
        indexes: list[Path] = []
        expected: dict[bytes, bytes] = {}
        for plan in packs:
            entries = _planned(plan, use_ref=use_ref)
            expected.update((oid, content) for oid, content, _entry in entries)
            index = _pack_of(pack_dir, [(oid, entry) for oid, _content, entry in entries])
            if index not in indexes:
                indexes.append(index)

        name, count = merge_packs(Path(tmp, "out"), indexes)

        assert count == len(expected)
        for index in indexes:
            index.unlink()
            index.with_suffix(".pack").unlink()
        for part in Path(tmp, "out").iterdir():
            part.replace(pack_dir / part.name)
        indexed = [oid for oid, _crc, _offset in index_entries(pack_dir / f"{name}.idx")]
        assert sorted(indexed) == sorted(expected)
        merged = pygit2.Repository(str(repo))
        for oid, content in expected.items():
            assert merged.odb.read(pygit2.Oid(raw=oid))[1] == content


def _planned(
    plan: list[tuple[int, int | None]], *, use_ref: bool
) -> list[tuple[bytes, bytes, bytes]]:
    """(id, content, entry) of one pack: each object whole, or a delta on an earlier one."""
    entries: list[tuple[bytes, bytes, bytes]] = []
    offsets: list[int] = []
    at = 12
    for content_at, base_at in plan:
        content = _CONTENTS[content_at]
        oid = _blob_id(content)
        if any(oid == known for known, _c, _e in entries):
            continue  # a pack holds each object once
        if base_at is None or base_at >= len(entries):
            entry = _header(3, len(content)) + zlib.compress(content)
        else:
            base_id, base_content, _base_entry = entries[base_at]
            delta = _insert_delta(base_content, content)
            link = base_id if use_ref else _ofs(at - offsets[base_at])
            entry = _header(7 if use_ref else 6, len(delta)) + link + zlib.compress(delta)
        entries.append((oid, content, entry))
        offsets.append(at)
        at += len(entry)
    return entries


def test_an_update_larger_than_the_staging_limit_is_packed_in_parts_and_lands_whole(
    tmp_path: Path,
) -> None:
    # 40 commits of 1 MiB each: past STAGED_BYTES_LIMIT the staged objects are packed
    # before the next commits are built; every one lands and reads back.
    remote, cache, store = fetched_store(tmp_path)
    blobs = [random.Random(n).randbytes(1024 * 1024) for n in range(40)]  # noqa: S311
    assert sum(map(len, blobs)) > 2 * STAGED_BYTES_LIMIT
    specs = [CommitSpec(f"big {n}", {f"big/{n}.bin": blob}) for n, blob in enumerate(blobs)]

    result = store.update_branch("main", constant(specs))
    store.close()

    assert git("count-objects", "-v", cwd=cache).splitlines()[0] == "count: 0"  # none loose
    git("fsck", "--connectivity-only", cwd=remote)
    assert git("rev-parse", "main", cwd=remote) == result.tip
    reopened = GitEnvStore.open(str(remote), cache, author=AUTHOR)
    heads = reopened.fetch()
    assert heads.main is not None
    for n in (0, 17, 39):
        assert reopened.read_file(heads.main, f"big/{n}.bin") == blobs[n]
    reopened.close()


def test_a_big_update_is_packed_uncompressed_and_a_small_one_compressed(tmp_path: Path) -> None:
    remote, cache, store = fetched_store(tmp_path)
    packs = cache / "objects" / "pack"

    def update(size: int, name: str) -> int:
        """Bytes of the pack the update of ``size`` bytes of text added to the cache."""
        before = {p.name: p.stat().st_size for p in packs.glob("*.pack")}
        line = f"{name}: a line of YAML that compresses well\n"
        text = (line * (size // len(line) + 1)).encode()
        store.update_branch("main", constant([CommitSpec(name, {f"{name}.yaml": text})]))
        added = [p for p in packs.glob("*.pack") if p.name not in before]
        return sum(p.stat().st_size for p in added)

    assert update(STORED_FROM // 4, "small") < STORED_FROM // 40
    assert update(2 * STORED_FROM, "big") > 2 * STORED_FROM
    tip = store.fetch().main
    assert tip is not None
    store.close()
    assert git("rev-parse", "main", cwd=remote) == tip
    git("fsck", "--connectivity-only", cwd=remote)
    text = git("show", f"{tip}:big.yaml", cwd=remote)
    assert text.startswith("big: a line of YAML")
