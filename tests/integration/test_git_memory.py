"""A process that reads the same files and refs every tick for months keeps no memory for it.

pygit2 1.21 keeps a reference to every name passed to its tree and reference lookups
(``gitstore.names``): a fresh string per call would never be freed. The store must hand
it each name's one interned string, so reading the same paths and tips over and over
grows nothing, whatever the number of reads.
"""

from __future__ import annotations

import ctypes
import gc
import random
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import reconciler
from reconciler.gitstore import GitEnvStore
from reconciler.gitstore.repo import CACHED_BYTES, object_cache
from reconciler.gitstore.staging import REPACK_DIR
from reconciler.ports import CommitSpec
from reconciler.testing import constant
from tests.gitutil import make_bare_repo

pytestmark = pytest.mark.integration

READS = 5_000
PACKAGE = str(Path(reconciler.__file__).parent)
AUTHOR = ("gitops-reconciler", "reconciler@example.test")


def _fresh(text: str) -> str:
    """``text`` as a new string object (not the literal the compiler shares)."""
    return "".join(list(text))


def test_reading_the_same_paths_and_tips_again_and_again_keeps_no_memory(tmp_path: Path) -> None:
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"experiments/shop/checkout.json": "{}\n", "README.md": "env\n"})
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    heads = store.fetch()
    assert heads.main is not None
    tip = heads.main

    def tick(n: int) -> None:
        for _ in range(n):
            assert store.read_file(tip, _fresh("experiments/shop/checkout.json")) == b"{}\n"
            assert store.read_file(tip, _fresh("experiments/shop/missing.json")) is None
            assert store.blob_id(tip, _fresh("README.md")) is not None
            assert store.tip(_fresh("main")) == tip

    tick(50)  # warm: each distinct name is kept once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tick(READS)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # only what the package allocated: a suite's worker process runs other tests' server
    # threads too, and they allocate meanwhile
    ours = tracemalloc.Filter(inclusive=True, filename_pattern=f"{PACKAGE}/*")
    grown = sum(
        s.size_diff
        for s in after.filter_traces([ours]).compare_to(before.filter_traces([ours]), "filename")
        if s.size_diff > 0
    )
    # four names a read, each kept once more, would be READS * 4 * ~70 bytes: ~1.4 MB
    assert grown < 64 * 1024, f"{grown} bytes kept by {READS} rounds of reads"
    store.close()


def test_writing_the_same_files_every_tick_keeps_no_memory(tmp_path: Path) -> None:
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    store.fetch()

    def ticks(start: int, n: int) -> None:
        for i in range(start, start + n):
            path = _fresh("experiments/shop/checkout.json")
            gone = _fresh("experiments/shop/old.json")
            spec = CommitSpec(f"tick {i}", {path: f"{i}\n".encode(), gone: None})
            store.update_branch(_fresh("main"), constant([spec]))

    ticks(0, 20)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        ticks(20, 300)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = tracemalloc.Filter(inclusive=True, filename_pattern=f"{PACKAGE}/*")
    kept = [
        s
        for s in after.filter_traces([ours]).compare_to(before.filter_traces([ours]), "lineno")
        if s.count_diff >= 300
    ]
    # nothing the store allocates once per tick is still there after 300 ticks (the log
    # lines pytest keeps are not the store's)
    assert kept == [], "\n".join(str(s) for s in kept[:5])
    store.close()


def test_the_object_cache_holds_what_a_tick_read_within_its_bound(tmp_path: Path) -> None:
    remote = tmp_path / "env.git"
    files = {f"experiments/shop/app-{i:03d}.json": "{}\n" * (i + 1) for i in range(50)}
    make_bare_repo(remote, files)
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    tip = store.fetch().main
    assert tip is not None
    assert len(list(store.list_files(tip, "experiments/"))) == len(files)
    held, limit = object_cache()
    # the trees just walked are parsed and kept: /metrics shows them, under the bound
    assert 0 < held <= limit
    assert limit == CACHED_BYTES


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        )
    ]


def _native_in_use() -> int:
    """Bytes malloc has handed out and not had back (glibc's mallinfo2), every thread."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def test_native_memory_does_not_grow_with_updates_fetches_and_reads(tmp_path: Path) -> None:
    # Outside Python's heap, libgit2's object cache kept every commit and tree parsed, up
    # to 16 MiB counted as raw bytes, 2.5 to 4.7 times that in memory: the soak's slope.
    # The store drops it at each fetch, so a tick's objects leave with the tick.
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)

    def cycle(k: int) -> None:
        for i in range(20):
            n = k * 20 + i
            files = {f"s/{j}.json": f"{n} {j}\n".encode() * 50 for j in range(0, 20, 3)}
            store.update_branch("main", constant([CommitSpec(f"c{n}", files)]))
            tip = store.fetch().main
            assert tip is not None
            for j in range(20):
                store.read_file(tip, f"s/{j}.json")
        store.wait_upkeep()

    try:
        for k in range(4):  # warm: the packs settle
            cycle(k)
        gc.collect()
        before = _native_in_use()
        for k in range(4, 16):
            cycle(k)
        gc.collect()
        grown = _native_in_use() - before
    finally:
        store.close()
    # with the cache kept across fetches, 0.05 MiB a cycle here (0.6 MiB over these 12)
    assert grown < 256 * 1024, f"native memory grew {grown / 2**20:.2f} MiB over 12 cycles"


def test_fetch_after_fetch_leaves_no_python_object_behind(tmp_path: Path) -> None:
    # pygit2 keeps for good every pack or loose-object backend made in Python and added to
    # a database; the store made two at each fetch (and merge), and those few bytes, spread
    # among the pools a merge's many small objects had taken, held whole arenas resident.
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    fetches = 2_000
    try:
        for _ in range(20):  # warm
            assert store.fetch().main is not None
        gc.collect()
        tracemalloc.start(8)
        try:
            before = tracemalloc.take_snapshot()
            for _ in range(fetches):
                store.fetch()
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    finally:
        store.close()
    ours = tracemalloc.Filter(inclusive=True, filename_pattern=f"{PACKAGE}/*")
    grew = [
        s
        for s in after.filter_traces([ours]).compare_to(before.filter_traces([ours]), "traceback")
        if s.size_diff > 0
    ]
    grown = sum(s.size_diff for s in grew)
    where = "; ".join(f"{s.traceback[-1]}: {s.size_diff} B" for s in grew[:3])
    # two backends a fetch, 24 bytes each, would be 96 KB. After some other tests in the
    # same process, 16 to 20 bytes a fetch stay allocated at the memory backend's making
    # (pygit2's code; its instances are freed), so the bound is not 0.
    assert grown < 64 * 1024, f"{grown} bytes kept by {fetches} fetches ({where})"


_HEAP_ALIGN = 64 * 1024 * 1024
"""glibc maps each heap of a thread's malloc arena at a multiple of this (64-bit)."""


def _thread_arenas_resident() -> int:
    """Resident bytes of glibc's thread arenas: anonymous mappings that start on 64 MiB."""
    resident, counting = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(\S*)$", line)
        if head:
            counting = not head[2] and int(head[1], 16) % _HEAP_ALIGN == 0
        elif counting and line.startswith("Rss:"):
            resident += int(line.split()[1]) * 1024
    return resident


def test_repacks_of_a_growing_cache_leave_nothing_resident_in_the_process(
    tmp_path: Path,
) -> None:
    # A repack allocates a whole repository's delta search and frees it all. In a thread of
    # this process glibc kept some of it (2.4 to 4.1 MiB over 50 repacks with its moving
    # thresholds, 0.5 to 1.1 with fixed ones); in a process of its own, none stays here.
    remote = tmp_path / "env.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    staging = store._staging  # noqa: SLF001 - a repack now, not when the ratio says

    def cycle(k: int) -> None:
        for i in range(10):
            files = {f"s/{j}.json": f"{k} {i} {j} {'x' * 300}\n".encode() * 8 for j in range(30)}
            store.update_branch("main", constant([CommitSpec(f"c{k}.{i}", files)]))
            store.fetch()
        store.wait_upkeep()
        staging.start_repack(store._reference_tips())  # noqa: SLF001
        store.wait_upkeep()

    try:
        for k in range(3):  # warm: the arenas exist, the packs settle
            cycle(k)
        before = _thread_arenas_resident()
        for k in range(3, 28):
            cycle(k)
        grown = _thread_arenas_resident() - before
        assert store.cache_stats().repacks >= 28
    finally:
        store.close()
    assert grown < 0.25 * 2**20, f"the thread arenas kept {grown / 2**20:.2f} MiB more"


KILLED_DURING_REPACK = """
import sys
from pathlib import Path
from reconciler import logs
from reconciler.gitstore import GitEnvStore

logs.configure(json=False, level="error")
store = GitEnvStore.open(sys.argv[1], Path(sys.argv[2]), author=("r", "r@example.test"))
store.fetch()
store._staging.start_repack(store._reference_tips())
print("repacking", flush=True)
sys.stdin.read()  # until killed
"""


def _repack_children(cache: Path) -> list[int]:
    """Processes repacking the cache at ``cache`` now."""
    found = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = status.read_bytes().split(b"\0")
        except OSError:
            continue
        ours = str(cache).encode() in argv
        if ours and any(b"reconciler.gitstore.repack" in arg for arg in argv):
            found.append(int(status.parent.name))
    return found


def test_a_reconciler_killed_during_a_repack_takes_the_repack_with_it(tmp_path: Path) -> None:
    # kill -9 while the cache is being repacked: the repack must not go on writing into a
    # cache that the restarted process (or another) is about to use.
    remote = tmp_path / "env.git"
    make_bare_repo(
        remote,
        {f"s/{j}.json": random.Random(j).randbytes(4096).hex() for j in range(3000)},  # noqa: S311
    )
    cache = tmp_path / "cache.git"
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_DURING_REPACK, str(remote), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"repacking\n"
            started = cache / REPACK_DIR / "pack"  # made once the child is packing
            deadline = time.monotonic() + 10
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _repack_children(cache), "no repack under way"
            process.kill()
            process.wait(timeout=10)
            # The repack has seconds of work left (4.4 s here in all); it must end at once.
            deadline = time.monotonic() + 1
            while _repack_children(cache) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _repack_children(cache) == [], "the repack outlived the reconciler"
        finally:
            process.kill()
