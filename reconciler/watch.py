"""File-system events in, at most one call per real change out: the runner's two watches.

``ContentWatcher`` watches the config file's folder and calls back once, after the events
settle, when the bytes of the file itself (symlinks followed, so a Kubernetes ConfigMap's
``..data`` swap counts) differ from the bytes last seen. ``RefsWatcher`` watches a local
Env repo and calls back once, after the events settle, when a ref was written (a push).
Neither may ever call back because a file was only read (opened, closed without writing,
accessed): the reconciler reads both the config file and the repo itself, so a callback
on a read would feed itself, a tick storm. Nor for files that are not theirs: another file
in the config folder, objects or lock files in the repo. The decisions (what counts as a
write, which path is a ref, whether content changed) are plain functions; the timers that
debounce are passed in, so a test fires them instead of waiting for them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Protocol

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

__all__ = [
    "SETTLE_SECONDS",
    "WATCHDOG_FILTER",
    "WRITE_EVENTS",
    "ContentWatcher",
    "Debouncer",
    "RefsWatcher",
    "Timer",
    "TimerFactory",
    "changed_digest",
    "git_dir",
    "is_ref_path",
    "is_write",
    "thread_timer",
]

log = structlog.get_logger("reconciler.watch")

SETTLE_SECONDS = 0.3
"""Quiet time after the last event before acting: a save, a push or a ConfigMap swap is a
burst of events (lock file, write, rename, delete), and it must count once."""

WRITE_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})
"""watchdog's event types that can change what a path holds. ``closed`` is a close after
writing; ``opened``, ``closed_no_write`` and ``attrib`` (a ``touch``, a chmod) change no
byte and are never acted on."""

WATCHDOG_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
"""The event classes to ask the observer for: with inotify, reads are then not even
reported by the kernel (the handlers check again: other observers may not filter)."""

_REF_FILES = frozenset({"packed-refs", "reftable/tables.list"})


# -- the decisions (pure) ---------------------------------------------------------------


def is_write(event_type: str) -> bool:
    """Whether an event of this watchdog type can have changed a file's content."""
    return event_type in WRITE_EVENTS


def is_ref_path(relative: PurePosixPath) -> bool:
    """Whether a path inside a git directory holds ref values.

    Loose refs under ``refs/`` and the ``packed-refs`` file (or a reftable's table list)
    do; objects, logs, ``FETCH_HEAD`` and ``*.lock`` files (taken, then renamed over the
    ref or deleted) do not.
    """
    if relative.name.endswith(".lock"):
        return False
    if relative.as_posix() in _REF_FILES:
        return True
    return len(relative.parts) > 1 and relative.parts[0] == "refs"


def changed_digest(last: str | None, content: bytes) -> str | None:
    """The digest of ``content`` when it differs from ``last`` (the one last seen), else None."""
    digest = hashlib.sha256(content).hexdigest()
    return None if digest == last else digest


# -- debouncing ------------------------------------------------------------------------


class Timer(Protocol):
    """A one-shot timer, as ``threading.Timer`` is one."""

    def start(self) -> None:
        """Arm it."""

    def cancel(self) -> None:
        """Disarm it, if it has not fired yet."""


TimerFactory = Callable[[float, Callable[[], None]], Timer]
"""Makes an unstarted timer that calls the function after the delay."""


def thread_timer(delay: float, action: Callable[[], None]) -> Timer:
    """A daemon ``threading.Timer``: a pending one never holds the process up."""
    timer = threading.Timer(delay, action)
    timer.daemon = True
    return timer


class Debouncer:
    """Calls ``action`` once, ``settle`` seconds after the last of a burst of pokes."""

    def __init__(
        self, action: Callable[[], None], *, settle: float, timer: TimerFactory = thread_timer
    ) -> None:
        """Call ``action`` after ``settle`` quiet seconds, timed by ``timer``."""
        self._action = action
        self._settle = settle
        self._timer_factory = timer
        self._lock = threading.Lock()
        self._pending: Timer | None = None
        self._generation = 0

    def poke(self) -> None:
        """Something happened: (re)start the quiet period."""
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
            self._generation += 1
            self._pending = self._timer_factory(
                self._settle, functools.partial(self._fire, self._generation)
            )
            self._pending.start()

    def cancel(self) -> None:
        """Forget a pending call (the watch is stopping)."""
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
            self._pending = None
            self._generation += 1

    def _fire(self, generation: int) -> None:
        with self._lock:
            # A timer that had already started firing when a poke replaced it is stale:
            # the newer one will act, so a burst still acts once.
            if generation != self._generation:
                return
            self._pending = None
        self._action()


# -- the watches (the shell: events in, reads, callbacks out) ------------------------------


def _event_paths(event: FileSystemEvent) -> list[Path]:
    paths = [Path(os.fsdecode(event.src_path))]
    if event.dest_path:
        paths.append(Path(os.fsdecode(event.dest_path)))
    return paths


class ContentWatcher(FileSystemEventHandler):
    """Calls ``on_change`` when the watched file's content changed; schedule on its folder.

    Only events that write the file itself, or an entry of the folder that the file's
    path resolves through (a ConfigMap's ``..data`` symlink and the timestamped folder it
    points to), start the quiet period; then the file is read (symlinks followed) and
    ``on_change`` is called only if its digest differs from the one last seen. The content
    present when the watcher is made counts as seen: make it before the file is loaded,
    so a change in between is reloaded rather than missed.
    """

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None],
        *,
        settle: float = SETTLE_SECONDS,
        timer: TimerFactory = thread_timer,
    ) -> None:
        """Watch ``path``; ``on_change`` runs on a timer thread and must be quick."""
        # The folder resolved, the file's own name kept: the file is often a symlink.
        self.path = path.parent.resolve() / path.name
        self._on_change = on_change
        self._debounce = Debouncer(self.check, settle=settle, timer=timer)
        content = self._read(quiet=True)
        self._digest = None if content is None else changed_digest(None, content)
        self.checks = 0
        """Times the content was read and compared (after a quiet period)."""
        self.changes = 0
        """Times the content differed and ``on_change`` was called."""

    @property
    def folder(self) -> Path:
        """The folder to schedule this handler on (not recursively)."""
        return self.path.parent

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Start the quiet period if the event wrote the file or an entry it resolves through."""
        if is_write(event.event_type) and any(map(self._concerns_file, _event_paths(event))):
            self._debounce.poke()

    def check(self) -> None:
        """Read the file; call ``on_change`` if its content is not the content last seen."""
        self.checks += 1
        content = self._read()
        if content is None:
            return
        digest = changed_digest(self._digest, content)
        if digest is None:
            log.debug("config_file_unchanged", file=str(self.path))
            return
        self._digest = digest
        self.changes += 1
        log.info("config_file_changed", file=str(self.path), sha256=digest[:12])
        self._on_change()

    def cancel(self) -> None:
        """Drop a pending check."""
        self._debounce.cancel()

    def _concerns_file(self, path: Path) -> bool:
        if path.parent != self.folder:
            return False  # the folder itself (its entries changed), or deeper (not watched)
        if path == self.path:
            return True
        # An entry of the folder that the file resolves through: a ConfigMap's ``..data``
        # (renamed over atomically) or the timestamped folder it points to. Resolved now,
        # after the write, so an old target that is being deleted is not one of them.
        real_file = Path(os.path.realpath(self.path))
        return real_file.is_relative_to(os.path.realpath(path))

    def _read(self, *, quiet: bool = False) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            # Half-way through a replacement, or removed: the settings in use stay, and
            # the write that brings the file back is another event.
            if not quiet:
                log.warning("config_file_unreadable", file=str(self.path), error=str(exc))
            return None


def git_dir(repo: Path) -> Path:
    """The git directory of a local repository: ``repo/.git``, or ``repo`` when bare."""
    dot_git = repo / ".git"
    return dot_git if dot_git.is_dir() else repo


class RefsWatcher(FileSystemEventHandler):
    """Calls ``on_change`` once a burst of ref writes settles; schedule on ``git_dir``, recursively.

    Only writes to refs count (a push, a commit, a branch deleted): fetching from the
    repository reads it and never calls back. A push by the reconciler itself is such a
    write, so it costs at most one extra tick, which fetches (reads) and finds nothing new
    unless there is a new decision to record.
    """

    def __init__(
        self,
        directory: Path,
        on_change: Callable[[], None],
        *,
        settle: float = SETTLE_SECONDS,
        timer: TimerFactory = thread_timer,
    ) -> None:
        """Watch the git directory ``directory``; ``on_change`` runs on a timer thread."""
        self.git_dir = directory.resolve()
        self._on_change = on_change
        self._debounce = Debouncer(self._fire, settle=settle, timer=timer)
        self.changes = 0
        """Times a burst of ref writes settled and ``on_change`` was called."""

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Start the quiet period if the event wrote a ref."""
        if is_write(event.event_type) and any(map(self._is_ref, _event_paths(event))):
            self._debounce.poke()

    def cancel(self) -> None:
        """Drop a pending call."""
        self._debounce.cancel()

    def _is_ref(self, path: Path) -> bool:
        if not path.is_relative_to(self.git_dir):
            return False
        return is_ref_path(PurePosixPath(path.relative_to(self.git_dir).as_posix()))

    def _fire(self) -> None:
        self.changes += 1
        log.debug("refs_changed", git_dir=str(self.git_dir))
        self._on_change()
