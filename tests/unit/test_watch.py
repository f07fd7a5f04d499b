"""The runner's watches decide alone: what counts as a write, a ref, a change; when to act.

Events are made by hand and the debounce timers are fired by the test, so nothing here
waits for time to pass (the real observer and Runner are in
tests/integration/kube/test_runner_events.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st
from watchdog.events import (
    DirDeletedEvent,
    DirModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from reconciler.watch import (
    ContentWatcher,
    Debouncer,
    RefsWatcher,
    changed_digest,
    git_dir,
    is_ref_path,
    is_write,
)
from tests.configmap import configmap_volume


class FakeTimer:
    def __init__(self, delay: float, action: Callable[[], None]) -> None:
        self.delay = delay
        self.action = action
        self.started = False
        self.cancelled = False
        self.fired = False

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        # As threading.Timer: a cancelled timer does not call back, and one fires once.
        if self.started and not self.cancelled and not self.fired:
            self.fired = True
            self.action()


class FakeTimers:
    def __init__(self) -> None:
        self.made: list[FakeTimer] = []

    def __call__(self, delay: float, action: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, action)
        self.made.append(timer)
        return timer

    @property
    def pending(self) -> list[FakeTimer]:
        return [t for t in self.made if t.started and not t.cancelled and not t.fired]

    def fire_pending(self) -> None:
        for timer in self.pending:
            timer.fire()


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


# -- the decisions ----------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["opened", "closed_no_write", "attrib", "events_lost"])
def test_reads_and_metadata_events_are_not_writes(event_type: str) -> None:
    assert not is_write(event_type)


@pytest.mark.parametrize("event_type", ["created", "modified", "moved", "deleted", "closed"])
def test_events_that_can_change_bytes_are_writes(event_type: str) -> None:
    assert is_write(event_type)


@pytest.mark.parametrize(
    "path",
    ["refs/heads/main", "refs/heads/team/feature", "refs/tags/v1", "packed-refs",
     "reftable/tables.list"],
)  # fmt: skip
def test_loose_refs_and_the_packed_refs_file_are_refs(path: str) -> None:
    assert is_ref_path(PurePosixPath(path))


@pytest.mark.parametrize(
    "path",
    ["refs/heads/main.lock", "packed-refs.lock", "refs", "objects/ab/cdef",
     "objects/pack/pack-1.pack", "FETCH_HEAD", "HEAD", "logs/refs/heads/main", "config",
     "reftable/tables.list.lock", "cache/x.git/refs/heads/main"],
)  # fmt: skip
def test_objects_logs_and_lock_files_are_not_refs(path: str) -> None:
    assert not is_ref_path(PurePosixPath(path))


@given(st.binary(), st.binary())
def test_a_digest_is_new_exactly_when_the_content_differs(first: bytes, second: bytes) -> None:
    seen = changed_digest(None, first)
    assert seen is not None  # nothing seen yet: any content is new
    assert changed_digest(seen, first) is None
    assert (changed_digest(seen, second) is None) == (first == second)


# -- debouncing -------------------------------------------------------------------------


def test_a_burst_of_pokes_acts_once_after_the_settle_time_of_the_last() -> None:
    timers, calls = FakeTimers(), Calls()
    debounce = Debouncer(calls, settle=0.3, timer=timers)
    for _ in range(5):
        debounce.poke()
    assert [t.delay for t in timers.made] == [0.3] * 5
    assert len(timers.pending) == 1  # each poke restarted the quiet period
    assert calls.count == 0
    timers.fire_pending()
    assert calls.count == 1
    timers.fire_pending()
    assert calls.count == 1


def test_a_timer_already_firing_when_a_poke_replaced_it_does_not_act() -> None:
    timers, calls = FakeTimers(), Calls()
    debounce = Debouncer(calls, settle=0.3, timer=timers)
    debounce.poke()
    stale = timers.made[0]
    debounce.poke()  # threading.Timer.cancel cannot stop one whose thread already runs:
    stale.action()  # ... so it calls back anyway
    assert calls.count == 0
    timers.fire_pending()
    assert calls.count == 1


def test_cancel_drops_a_pending_call() -> None:
    timers, calls = FakeTimers(), Calls()
    debounce = Debouncer(calls, settle=0.3, timer=timers)
    debounce.poke()
    debounce.cancel()
    timers.made[0].action()
    assert calls.count == 0


# -- the content watcher ------------------------------------------------------------------


def watch_file(path: Path) -> tuple[ContentWatcher, FakeTimers, Calls]:
    timers, calls = FakeTimers(), Calls()
    return ContentWatcher(path, calls, settle=0.3, timer=timers), timers, calls


def test_reading_the_config_file_never_starts_a_check(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("interval: 10\n")
    watcher, timers, _ = watch_file(config)
    for event in (FileOpenedEvent(str(config)), FileClosedNoWriteEvent(str(config))):
        watcher.dispatch(event)
    watcher.dispatch(FileAttribEvent(str(config)))  # a touch changes no byte
    assert timers.made == []


def test_writes_to_other_files_or_the_folder_never_start_a_check(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("interval: 10\n")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    watcher, timers, _ = watch_file(config)
    watcher.dispatch(FileCreatedEvent(str(other)))
    watcher.dispatch(FileModifiedEvent(str(other)))
    watcher.dispatch(FileClosedEvent(str(other)))
    watcher.dispatch(FileMovedEvent(str(other), str(tmp_path / "notes.old")))
    watcher.dispatch(DirModifiedEvent(str(tmp_path)))
    assert timers.made == []


def test_a_write_is_reloaded_once_and_only_if_the_content_differs(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("interval: 10\n")
    watcher, timers, calls = watch_file(config)
    config.write_text("interval: 10\n")  # rewritten, same bytes
    watcher.dispatch(FileModifiedEvent(str(config)))
    watcher.dispatch(FileClosedEvent(str(config)))
    timers.fire_pending()
    assert (watcher.checks, calls.count) == (1, 0)
    config.write_text("interval: 20\n")
    watcher.dispatch(FileModifiedEvent(str(config)))
    watcher.dispatch(FileClosedEvent(str(config)))
    timers.fire_pending()
    assert (watcher.checks, calls.count) == (2, 1)


def test_an_editor_saving_by_rename_counts_as_a_write_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("interval: 10\n")
    watcher, timers, calls = watch_file(config)
    swap = tmp_path / ".config.yaml.tmp"
    swap.write_text("interval: 20\n")
    swap.replace(config)
    watcher.dispatch(FileMovedEvent(str(swap), str(config)))
    timers.fire_pending()
    assert calls.count == 1


def test_a_configmap_swap_is_a_write_of_the_file_it_resolves_to(tmp_path: Path) -> None:
    configmap_volume(tmp_path, "..2026_12_04_16_00_00.1", {"config.yaml": "interval: 10\n"})
    watcher, timers, calls = watch_file(tmp_path / "config.yaml")
    configmap_volume(tmp_path, "..2026_12_04_16_00_00.2", {"config.yaml": "interval: 20\n"})
    watcher.dispatch(FileMovedEvent(str(tmp_path / "..data_tmp"), str(tmp_path / "..data")))
    timers.fire_pending()
    assert calls.count == 1
    # kubelet then deletes the old folder: no longer on the file's path, not a write of it
    watcher.dispatch(DirDeletedEvent(str(tmp_path / "..2026_12_04_16_00_00.1")))
    assert timers.pending == []


def test_a_missing_file_keeps_the_content_last_seen(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("interval: 10\n")
    watcher, timers, calls = watch_file(config)
    config.unlink()
    watcher.dispatch(FileCreatedEvent(str(config)))  # a check while it is away...
    timers.fire_pending()
    config.write_text("interval: 10\n")  # ... and back with the same bytes
    watcher.dispatch(FileCreatedEvent(str(config)))
    timers.fire_pending()
    assert (watcher.checks, calls.count) == (2, 0)


# -- the refs watcher ---------------------------------------------------------------------


def test_a_ref_renamed_into_place_is_a_change_and_object_or_lock_churn_is_not(
    tmp_path: Path,
) -> None:
    timers, calls = FakeTimers(), Calls()
    watcher = RefsWatcher(tmp_path, calls, settle=0.3, timer=timers)
    lock = str(tmp_path / "refs/heads/main.lock")
    for event in (
        FileOpenedEvent(str(tmp_path / "refs/heads/main")),
        FileClosedNoWriteEvent(str(tmp_path / "packed-refs")),
        FileCreatedEvent(str(tmp_path / "objects/pack/pack-1.pack")),
        FileCreatedEvent(lock),
        FileModifiedEvent(lock),
        FileClosedEvent(lock),
    ):
        watcher.dispatch(event)
    assert timers.made == []
    watcher.dispatch(FileMovedEvent(lock, str(tmp_path / "refs/heads/main")))
    watcher.dispatch(FileModifiedEvent(str(tmp_path / "packed-refs")))
    timers.fire_pending()
    assert (watcher.changes, calls.count) == (1, 1)


def test_the_git_directory_of_a_work_tree_is_its_dot_git(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    (tmp_path / "tree" / ".git").mkdir(parents=True)
    assert git_dir(tmp_path / "bare") == tmp_path / "bare"
    assert git_dir(tmp_path / "tree") == tmp_path / "tree" / ".git"
