"""The cache's own packs: written in Git's format, readable by git, and kept few.

The store stages new objects in memory and writes them as one pack per update
(``reconciler/gitstore/staging.py``, ``packfile.py``); these tests hold that to what the
git program itself accepts, and check that a long-running process does not pile up packs.
"""

from __future__ import annotations

import os
import random
import subprocess
import zlib
from pathlib import Path

import pygit2
import pytest

from reconciler.gitstore import GitEnvStore
from reconciler.gitstore.packfile import index_ids, write_pack
from reconciler.gitstore.staging import PACKS_KEPT
from reconciler.ports import CommitSpec
from reconciler.testing import constant
from tests.gitutil import commit_files, git, git_env, make_bare_repo

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")


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


def test_a_written_pack_is_verified_and_read_by_git(tmp_path: Path) -> None:
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
    name = write_pack(target / "objects" / "pack", objects)

    index = target / "objects" / "pack" / f"{name}.idx"
    verified = git("verify-pack", "-v", index)
    assert f"{name}.pack: ok" in verified
    assert sorted(oid.hex() for oid in index_ids(index)) == sorted(oid for oid, _ in listed)
    assert sorted(objects_of(target)) == sorted(listed)
    for oid, kind in listed:
        assert cat(target, kind, oid) == cat(source, kind, oid)
    assert write_pack(target / "objects" / "pack", objects) == name  # same objects, same pack


def test_many_updates_leave_a_cache_git_finds_whole_with_few_packs(tmp_path: Path) -> None:
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    cache = tmp_path / "cache.git"
    store = GitEnvStore.open(str(remote), cache, author=AUTHOR)
    store.fetch()
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
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    # bytes zlib cannot compress: stored as they are, so a changed byte inflates to
    # other content, and only the stream's checksum can tell
    content = random.Random(7).randbytes(4096)  # noqa: S311 - test data, not a secret
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    store.fetch()
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
