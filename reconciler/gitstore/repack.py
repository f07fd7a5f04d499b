"""The cache's repack, in a process of its own: what the references reach, as one pack.

``Staging.start_repack`` runs ``run`` in its repack thread, which starts a Python process
that calls ``main`` and waits for it. The child reads the cache
through a repository of its own, packs every commit, tree and blob the given roots reach
with deltas (``PackBuilder``, each object named by its path, as ``git pack-objects`` sorts
them), writes the pack aside and moves it into the cache's ``objects/pack``, then prints
its name. In the reconciler's own process the repack had cost twice: its delta search
took the other core and libgit2's lock on pack windows while a tick pushed (a
10,000-transition push took 15.0 s beside it, 7.7 s alone: ``hack/bench.py tick``), and
glibc kept some of the pages it freed for good (3.7 MiB over 30 large repacks). A child
runs at a lower priority, ends with the parent (``PR_SET_PDEATHSIG``) and gives all its
memory back when it exits. This module never removes a pack: ``Staging.finish_repack``
removes those the new one replaces.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pygit2
from pygit2.enums import SortMode
from pygit2.errors import check_error
from pygit2.ffi import C, ffi

__all__ = ["REPACK_NICENESS", "REPACK_SECONDS", "main", "run"]

REPACK_SECONDS = 900.0
"""A repack still running after this long is killed (logged; the next upkeep tries again)."""
REPACK_NICENESS = 10
"""How much lower than the reconciler's the repack's scheduling priority is (``nice``)."""
_PR_SET_PDEATHSIG = 1
_CHILD = "import sys; from reconciler.gitstore.repack import main; sys.exit(main())"
"""The child's program (``-m`` would run this module twice: the package imports it)."""
_STDERR_SHOWN = 2000


def run(cache: Path, aside: Path, roots: Sequence[pygit2.Oid]) -> tuple[str | None, int, int]:
    """Repack the cache at ``cache`` in a child process, working in ``aside``; wait for it.

    Returns the new pack's name (None: nothing reachable), how many objects it holds, and
    the child's peak resident memory in bytes (its own ``VmHWM``).

    Raises:
        OSError: the child failed, was killed or ran past ``REPACK_SECONDS``; the cache
            is as it was, but perhaps for a complete new pack in ``objects/pack``.
    """
    command = [sys.executable, "-c", _CHILD, str(cache), str(aside), str(os.getpid())]
    try:
        done = subprocess.run(
            command,
            input="".join(f"{root}\n" for root in roots),
            capture_output=True,
            text=True,
            timeout=REPACK_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"the repack ran past {REPACK_SECONDS:.0f} s and was stopped") from None
    if done.returncode != 0:
        said = done.stderr.strip()[-_STDERR_SHOWN:] or f"exit status {done.returncode}"
        raise OSError(f"the repack failed: {said}")
    try:
        result = json.loads(done.stdout)
        return result["name"], int(result["written"]), int(result["peak"])
    except (ValueError, KeyError, TypeError):
        raise OSError(f"the repack printed no result: {done.stdout[-_STDERR_SHOWN:]!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """The child: repack ``CACHE`` in ``ASIDE`` for the roots on stdin; print the result."""
    cache, aside, parent = (argv if argv is not None else sys.argv[1:])[:3]
    _end_with(int(parent))
    os.nice(REPACK_NICENESS)
    from reconciler.gitstore.repo import bound_memory  # noqa: PLC0415 - repo imports this module

    bound_memory()
    roots = [pygit2.Oid(hex=line.strip()) for line in sys.stdin if line.strip()]
    try:
        name, written = _write_reachable(Path(cache), Path(aside), roots)
    except OSError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(json.dumps({"name": name, "written": written, "peak": _peak()}) + "\n")
    return 0


def _peak() -> int:
    """This process's peak resident memory, bytes (``VmHWM``: its own, since its exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _end_with(parent: int) -> None:
    """Be killed when ``parent`` ends (Linux); exit now if it has already."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise SystemExit(f"the process {parent} that started this repack is gone")


def _write_reachable(cache: Path, aside: Path, roots: list[pygit2.Oid]) -> tuple[str | None, int]:
    """Pack what ``roots`` reach in the cache at ``cache``, and move the pack into it.

    Runs in the repack's own process (``main``), with a repository of its own. libgit2
    names the pack after its content; written in
    ``aside`` first, it is found there by that name and moved into ``objects/pack``,
    the index last (readers find packs by their index). Returns the pack's name (None:
    nothing reachable) and the objects written.

    Raises:
        OSError: the pack could not be written or moved, or an object could not be read.
    """
    out = aside / "pack"
    shutil.rmtree(out, ignore_errors=True)  # what a killed repack left
    try:
        out.mkdir(parents=True)
        repo = _reader(cache, aside / "reader.git")
        try:
            written = _pack_reachable(repo, roots, out)
        finally:
            repo.free()
        if written == 0:
            return None, 0
        index = next(out.glob("pack-*.idx"))
        pack_dir = cache / "objects" / "pack"
        for suffix in (".pack", ".rev", ".idx"):
            part = index.with_suffix(suffix)
            if part.exists():
                part.replace(pack_dir / part.name)
    except (pygit2.GitError, KeyError, StopIteration) as exc:
        raise OSError(f"cannot write the repacked cache: {exc!r}") from None
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return index.stem, written


def _pack_reachable(repo: pygit2.Repository, roots: list[pygit2.Oid], out: Path) -> int:
    """Write what ``roots`` reach in ``repo`` as one pack in ``out``; return its objects."""
    builder = pygit2.PackBuilder(repo)
    for oid, path in _reachable(repo, roots):
        _add_named(builder, oid, path)
    if len(builder) == 0:
        return 0
    builder.write(str(out))
    return int(builder.written_objects_count)


def _reader(cache: Path, path: Path) -> pygit2.Repository:
    """A bare repository at ``path`` that reads the cache's objects (as an alternate).

    Its config is its own: the cache's bounds libgit2's delta window for the push
    (``repo.PACK_WINDOW_BYTES``), which would cost a repack its deltas (a cache of
    versions of 8 KiB files grew 8-fold); the repack searches as libgit2 does by default.
    It is made once and kept: each ``pygit2.init_repository`` keeps about 12 KiB for good.
    """
    alternates = path / "objects" / "info" / "alternates"
    try:
        repo = pygit2.Repository(str(path))
    except pygit2.GitError:  # absent, or left half made by a killed process
        shutil.rmtree(path, ignore_errors=True)
        pygit2.init_repository(str(path), bare=True).free()
        repo = None
    line = f"{(cache / 'objects').resolve()}\n"
    if repo is None or not alternates.exists() or alternates.read_text() != line:
        if repo is not None:
            repo.free()
        alternates.write_text(line)
        repo = pygit2.Repository(str(path))
    return repo


def _reachable(
    repo: pygit2.Repository, roots: Sequence[pygit2.Oid]
) -> Iterator[tuple[pygit2.Oid, str]]:
    """Every commit, tree and blob reachable from ``roots``, each once, with its path.

    A tree already seen is not read again: unchanged directories keep their id from one
    commit to the next, so the walk reads each distinct object once. The path (empty for
    commits and root trees) is what the pack builder sorts by to find delta bases, as
    ``git pack-objects`` does: the versions of one file are compared with each other.
    """
    seen: set[pygit2.Oid] = set()
    walker = None
    for root in roots:
        if walker is None:
            walker = repo.walk(root, SortMode.NONE)
        else:
            walker.push(root)
    if walker is None:
        return
    for commit in walker:
        yield commit.id, ""
        pending = [(commit.tree_id, "")]
        while pending:
            tree_id, path = pending.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            yield tree_id, path
            for entry in repo[tree_id].peel(pygit2.Tree):
                if entry.id in seen or entry.filemode == pygit2.enums.FileMode.COMMIT:
                    continue
                name = f"{path}/{entry.name}" if path else str(entry.name)
                if entry.type_str == "tree":
                    pending.append((entry.id, name))
                else:
                    seen.add(entry.id)
                    yield entry.id, name


def _add_named(builder: pygit2.PackBuilder, oid: pygit2.Oid, path: str) -> None:
    """Add ``oid`` to ``builder`` under ``path`` (pygit2's ``add`` gives no name).

    libgit2 sorts the objects by a hash of their path before it looks for delta bases,
    as Git does; without one, the versions of a file are compared only by size with
    whatever lies near them, and a repack of many same-sized documents finds few deltas
    (five versions of 120 files of 8 KB, one line changed each time: 2.8 MB unnamed,
    0.66 MB named, where one version alone packs to 0.56 MB). The call is pygit2's own binding.
    """
    raw = ffi.new("git_oid *")
    ffi.buffer(raw)[:] = oid.raw
    check_error(C.git_packbuilder_insert(builder._packbuilder, raw, path.encode() or ffi.NULL))  # noqa: SLF001


if __name__ == "__main__":  # ``python -m``, as a process of an earlier version starts it
    raise SystemExit(main())
