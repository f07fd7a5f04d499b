"""The cache of a process that runs for months: bounded on disk, no removed pack kept open.

A long-running process writes a pack per update and receives one per fetch; merging them
(``Staging.merge``) keeps them few, and repacking what the references reach
(``Staging.start_repack``) keeps the cache within about ``1 + REPACK_RATIO`` times the repository's
packed size
instead of growing with every whole copy of a file that changes a little each commit. A
volume that is full fails an update with a clear error and loses nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from reconciler.gitstore import GitEnvStore
from reconciler.gitstore import staging as staging_module
from reconciler.gitstore.staging import PACKS_KEPT, REPACK_DIR, REPACK_FROM, REPACK_RATIO
from reconciler.ports import CommitSpec
from reconciler.testing import constant
from tests.fixtures.git import GitDaemon
from tests.gitutil import commit_files, git
from tests.integration.stores import AUTHOR, fetched_store

pytestmark = pytest.mark.integration

UPDATES = 400
LINE = 200
"""Bytes appended to ``log.txt`` by each update: a file that changes a little each commit,
as CI's files and the state documents do, so whole copies add up quadratically."""


def _line(n: int) -> str:
    # Hex of a hash: compresses like real content, not like a repeated pattern.
    return hashlib.shake_128(str(n).encode()).hexdigest(LINE // 2)[: LINE - 1] + "\n"


def _deleted_mapped(under: Path) -> list[str]:
    """Files under ``under`` mapped into this process although deleted."""
    return sorted(
        {
            line.split(maxsplit=5)[-1]
            for line in Path("/proc/self/maps").read_text().splitlines()
            if line.endswith(" (deleted)") and str(under) in line
        }
    )


def _packed_size(repo: Path, work: Path) -> int:
    """Bytes of ``repo``'s objects as ``git gc`` packs them (one pack, with deltas)."""
    copy = work / "gc.git"
    git("clone", "--quiet", "--mirror", repo, copy)
    git("gc", "--quiet", "--prune=now", cwd=copy)
    return sum(p.stat().st_size for p in (copy / "objects" / "pack").glob("pack-*.pack"))


def test_the_cache_stays_within_a_multiple_of_the_packed_repository_and_maps_no_removed_pack(
    tmp_path: Path,
) -> None:
    remote, cache, store = fetched_store(tmp_path)
    log = ""
    written = 0
    for n in range(UPDATES):
        if n % 10 == 0:  # a second writer, so fetches bring packs of their own
            commit_files(remote, {f"ci/{n}.txt": f"{n}\n"}, message=f"ci {n}")
            store.fetch()
        log += _line(n)
        written += len(log)
        spec = CommitSpec(f"change {n}", {"log.txt": log.encode()})
        store.update_branch("main", constant([spec]))
        assert _deleted_mapped(cache) == [], f"after update {n}"
    store.wait_upkeep()
    stats = store.cache_stats()
    packed = _packed_size(remote, tmp_path)
    store.close()

    assert written > 10 * REPACK_FROM, "the whole copies alone would outgrow the bound"
    assert stats.repacks >= 1
    assert stats.packs <= PACKS_KEPT + 1
    assert stats.bytes <= (1 + REPACK_RATIO) * packed + REPACK_FROM + 256 * 1024, (stats, packed)
    # nothing reachable was lost: git finds the cache whole, and a new store reads it
    git("fsck", "--connectivity-only", cwd=cache)
    reopened = GitEnvStore.open(str(remote), cache, author=AUTHOR)
    heads = reopened.fetch()
    assert heads.main is not None
    assert reopened.read_file(heads.main, "log.txt") == log.encode()
    assert len(list(reopened.log(heads.main))) == UPDATES + UPDATES // 10 + 1
    reopened.close()


FULL_VOLUME = """
import os, resource, signal, sys
from pathlib import Path
from reconciler import logs
from reconciler.errors import GitTemporaryError
from reconciler.gitstore import GitEnvStore
from reconciler.ports import CommitSpec

logs.configure(json=False, level="error")
url, cache = sys.argv[1], Path(sys.argv[2])
store = GitEnvStore.open(url, cache, author=("r", "r@example.test"))
store.fetch()
blob = os.urandom(64 * 1024)  # does not compress
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
try:
    store.update_branch("main", lambda _tip: [CommitSpec("big", {"big.bin": blob})])
except GitTemporaryError as exc:
    print("error:", exc)
else:
    print("error: none")
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
heads = store.fetch()
print("read:", store.read_file(heads.main, "big.bin") == blob)
result = store.update_branch("main", lambda _tip: [CommitSpec("next", {"next.txt": b"n"})])
print("next:", result.tip)
"""


def test_a_full_volume_fails_the_update_clearly_loses_nothing_and_the_next_one_lands(
    tmp_path: Path, git_daemon: GitDaemon, env_remote: str
) -> None:
    # RLIMIT_FSIZE stands for a full volume (no root for a small tmpfs): every file the
    # process writes is cut at 16 KiB. The git daemon, another process, is not limited.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_VOLUME), env_remote, str(tmp_path / "c")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert "cannot write new objects to the cache" in lines["error"], lines
    assert lines["read"] == "True"  # the push had landed: nothing lost
    remote = git_daemon.path(env_remote)
    assert git("rev-parse", "main", cwd=remote) == lines["next"]
    assert git("log", "--format=%s", "main", cwd=remote).splitlines()[:2] == ["next", "big"]


WIDE_UPDATES = 24
WIDE_FILES = 120
WIDE_LINES = 40


class _WideFiles:
    """``WIDE_FILES`` files of ``WIDE_LINES`` lines, each update changing a line of each."""

    def __init__(self) -> None:
        self.files = {f"state/{f}.json": [_line(f * 1000 + n) for n in range(WIDE_LINES)]
                      for f in range(WIDE_FILES)}  # fmt: skip

    def update(self, store: GitEnvStore, n: int) -> None:
        for f, lines in enumerate(self.files.values()):
            lines[n % WIDE_LINES] = _line(10**6 * (n + 1) + f)
        contents = {p: "".join(ls).encode() for p, ls in self.files.items()}
        store.update_branch("main", constant([CommitSpec(f"tick {n}", contents)]))


def test_updates_that_rewrite_many_files_repack_once_per_ratio_not_every_other_time(
    tmp_path: Path,
) -> None:
    # As a tick that records every running experiment: each update rewrites many files a
    # little, so its pack (whole objects) outweighs the whole history packed with deltas.
    # The repack, whose cost grows with the history, must still wait for REPACK_RATIO
    # times the last repack's pack, not come every other update.
    remote, _cache, store = fetched_store(tmp_path)
    wide = _WideFiles()
    repacked_after = []
    for n in range(WIDE_UPDATES):
        before = store.cache_stats().repacks
        wide.update(store, n)
        store.wait_upkeep()  # the repack it set off, if any, is written and applied
        if store.cache_stats().repacks > before:
            repacked_after.append(n)
    stats = store.cache_stats()
    packed = _packed_size(remote, tmp_path)
    store.close()

    update_bytes = WIDE_FILES * WIDE_LINES * LINE
    assert update_bytes > packed / 4, "each update's whole objects are a real part of the cache"
    assert repacked_after, "the whole copies outgrow the bound, so a repack must come"
    gaps = [b - a for a, b in itertools.pairwise(repacked_after)]
    # each repack waits for more updates than the one before (the history it rewrites
    # grew): its cost per update stays flat
    assert len(repacked_after) >= 2, repacked_after
    assert gaps == sorted(gaps), repacked_after
    assert min(gaps) >= 4, repacked_after  # at a ratio of 1: every other update
    assert stats.bytes <= (1 + REPACK_RATIO) * packed + REPACK_FROM + update_bytes, (stats, packed)


def test_a_repack_runs_beside_the_updates_and_keeps_every_pack_written_meanwhile(
    tmp_path: Path,
) -> None:
    # A tick that sets off a repack goes on to set weights without waiting for it; the
    # packs written while it runs (later updates) hold objects it never saw, and stay.
    _remote, cache, store = fetched_store(tmp_path)
    wide = _WideFiles()
    pack_dir = cache / "objects" / "pack"

    n = 0
    while not store.cache_stats().repacking:
        n += 1
        assert n < WIDE_UPDATES, "the whole copies outgrow the bound: a repack must start"
        wide.update(store, n)
    # the update that set it off returned before any pack was replaced
    at_start = set(pack_dir.glob("pack-*.idx"))
    assert store.cache_stats().repacks == 0
    written_meanwhile: set[Path] = set()
    for m in range(n + 1, n + 4):
        before = set(pack_dir.glob("pack-*.idx"))
        wide.update(store, m)
        if store.cache_stats().repacking:  # not applied yet: the new pack is the update's
            written_meanwhile |= set(pack_dir.glob("pack-*.idx")) - before
    store.wait_upkeep()

    stats = store.cache_stats()
    assert (stats.repacks, stats.repacking) == (1, False)
    remaining = set(pack_dir.glob("pack-*.idx"))
    assert written_meanwhile <= remaining, "a pack written during the repack was removed"
    assert not at_start & remaining, "the packs it replaced are all gone"
    assert not list((cache / REPACK_DIR).rglob("pack-*")), "the pack was moved in, whole"
    git("fsck", "--connectivity-only", cwd=cache)
    tip = store.fetch().main
    assert tip is not None
    for path, lines in wide.files.items():
        assert store.read_file(tip, path) == "".join(lines).encode()
    store.close()


def test_packs_written_while_a_repack_waits_behind_another_repos_are_merged_once_it_is_applied(
    tmp_path: Path,
) -> None:
    # Repacks run one at a time in the process (a fleet's repos queue), so one repo's can
    # wait behind another's while its updates go on writing packs, which no merge touches
    # until the repack is applied. Under CI's load one ran long enough for 43 to pile up.
    _remote, _cache, store = fetched_store(tmp_path)
    wide = _WideFiles()
    other_repos_repack = threading.Event()
    queue = staging_module._REPACKS  # noqa: SLF001 - the queue every repo's repack waits in
    ahead = queue.submit(other_repos_repack.wait, 60)
    try:
        n = 0
        while not store.cache_stats().repacking:
            n += 1
            assert n < WIDE_UPDATES, "the whole copies outgrow the bound: a repack must start"
            wide.update(store, n)
        for m in range(n + 1, n + PACKS_KEPT + 8):  # small updates: one pack each
            spec = CommitSpec(f"small {m}", {f"small/{m}.txt": f"{m}\n".encode()})
            store.update_branch("main", constant([spec]))
        waiting = store.cache_stats()
    finally:
        other_repos_repack.set()
    ahead.result()
    store.wait_upkeep()
    stats = store.cache_stats()
    tip = store.fetch().main
    assert tip is not None
    for path, lines in wide.files.items():
        assert store.read_file(tip, path) == "".join(lines).encode()
    store.close()

    assert waiting.repacking, waiting
    assert waiting.packs > PACKS_KEPT + 1, waiting
    assert (stats.repacks, stats.repacking) == (1, False)
    assert stats.packs <= PACKS_KEPT + 1, stats


CI_COMMITS = 240


def test_fetched_deltas_survive_the_merges_so_a_growing_file_costs_its_commits_not_its_size(
    tmp_path: Path, git_daemon: GitDaemon, env_remote: str
) -> None:
    # A CI writer appends a line to one file per commit, and the store fetches each: every
    # fetch brings a pack holding a delta of a few hundred bytes. Merged as whole objects,
    # those became whole copies of an ever-longer file, which set off a repack after a
    # few dozen commits and again ever sooner (3 in 240 commits).
    work = tmp_path / "ci"
    git("clone", "--quiet", git_daemon.path(env_remote), work)
    store = GitEnvStore.open(env_remote, tmp_path / "cache.git", author=AUTHOR)
    store.fetch()
    for n in range(CI_COMMITS):
        with (work / "ci.log").open("a") as log:
            log.write(_line(n))
        git("add", "ci.log", cwd=work)
        git("commit", "--quiet", "-m", f"ci {n}", cwd=work)
        git("push", "--quiet", "origin", "HEAD:main", cwd=work)
        store.fetch()
    store.wait_upkeep()
    stats = store.cache_stats()
    store.close()

    assert stats.merges >= CI_COMMITS // PACKS_KEPT // 2  # the merges did run
    # Whole copies passed REPACK_FROM three times over; deltas and the (at most
    # PACKS_KEPT) whole bases libgit2 adds to complete each thin pack stay under it.
    assert stats.repacks == 0
    assert stats.bytes < REPACK_FROM, stats
    reopened = GitEnvStore.open(env_remote, tmp_path / "cache.git", author=AUTHOR)
    heads = reopened.fetch()
    assert heads.main is not None
    assert reopened.read_file(heads.main, "ci.log") == (work / "ci.log").read_bytes()
    reopened.close()
    git("fsck", "--connectivity-only", cwd=tmp_path / "cache.git")
