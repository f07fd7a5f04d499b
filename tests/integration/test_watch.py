"""``reconciler watch`` against a real bare Env repo while the real loop writes state commits.

The loop runs in the test's process on a driven clock (``Harness``); the watch runs as its
own process (stdout a pipe, so plain lines) or, where the test must break the network in
between polls, in-process on a clock the test drives too.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.cli.watch_cmd import follow
from reconciler.cli.watch_feed import Feed
from reconciler.cli.watch_render import PlainOutput
from reconciler.demo import scenario
from reconciler.engine.state import ExperimentState, Phase
from reconciler.gitstore.repo import GitEnvStore
from reconciler.metrics.profile import Profile
from reconciler.testing import DrivenClock
from tests.integration.bookinfo import APP, KEY, BookinfoWorld

DEADLINE = 30.0
"""Seconds any one awaited line or exit may take (a loaded machine; it takes well under 1)."""


def final_state(world: BookinfoWorld) -> ExperimentState:
    """Tick until the run ends: its last state."""
    last = world.run_until_final()[-1]
    return next(t.state for t, _ in last.recorded if t.state.key == KEY and t.state.phase.final)


class WatchProcess:
    """``python -m reconciler watch ...`` with its stdout read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            self._lines.put(text.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, wanted: Callable[[str], bool]) -> str:
        """The first line from now on that ``wanted`` accepts (within ``DEADLINE``)."""
        while True:
            try:
                text = self._lines.get(timeout=DEADLINE)
            except queue.Empty:
                pytest.fail(f"no such line within {DEADLINE}s; printed: {self.lines}")
            if text is None:
                pytest.fail(f"watch exited first; printed: {self.lines}")
            self.lines.append(text)
            if wanted(text):
                return text

    def finish(self) -> int:
        """Its exit code, once it exited by itself (within ``DEADLINE``); every line read."""
        code = self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        while (text := self._lines.get_nowait()) is not None:
            self.lines.append(text)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def watching(*args: str) -> Iterator[WatchProcess]:
    process = WatchProcess(*args)
    try:
        yield process
    finally:
        process.stop()


def run_watch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "watch", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE,
        env=environment(),
    )


def environment() -> dict[str, str]:
    """The test's environment without settings a developer's shell may hold."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}


def state_lines(lines: list[str]) -> list[str]:
    return [text for text in lines if not text.startswith("watch:")]


def field(text: str, name: str) -> str | None:
    for token in text.split(" -- ", 1)[0].split():
        if token.startswith(f"{name}="):
            return token.partition("=")[2]
    return None


def test_watch_prints_a_line_per_state_commit_and_exits_0_once_the_run_is_promoted(
    tmp_path: Path,
) -> None:
    world = BookinfoWorld(tmp_path)
    with watching(KEY, "--repo", world.harness.remote, "--interval", "0.2") as watch_:
        # Started before the reconciler ever ran: main names the run, nothing recorded yet.
        waiting = watch_.wait_for(lambda text: text.startswith("watch: waiting:"))
        assert waiting.endswith("has not started yet")
        world.tick()
        started = watch_.wait_for(lambda text: not text.startswith("watch:"))
        assert (
            " Progressing iteration=0/6 weights=productpage-stable=80,productpage-candidate=20"
            in (started)
        )
        final = final_state(world)
        code = watch_.finish()
    assert code == 0
    commits = world.git("log", "--reverse", "--format=%H", "reconciler-state").split()
    printed = state_lines(watch_.lines)
    assert [field(text, "state") for text in printed] == [c[:12] for c in commits]
    assert all(text.split()[1] == final.id for text in printed)
    judged = [text for text in printed if field(text, "verdicts")]
    assert len(judged) == final.iteration
    assert "productpage-candidate:error-rate=0.001(<=0.01)" in judged[-1]
    assert field(printed[-1], "winner") == "productpage-candidate"
    outcome = world.git("rev-parse", "main").strip()
    assert field(printed[-1], "outcome") == outcome[:12]
    assert watch_.lines[-1] == (
        f"watch: {final.id} ended Promoted, winner productpage-candidate, "
        f"outcome {outcome[:12]}; exit 0"
    )
    assert not any("\x1b" in text for text in watch_.lines)


def test_watch_exits_1_once_the_run_is_rolled_back(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile(error_rate=0.2))
    world.tick()  # already running when the watch starts
    with watching(KEY, "--repo", world.harness.remote, "--interval", "0.2") as watch_:
        first = watch_.wait_for(lambda text: not text.startswith("watch:"))
        assert " Progressing iteration=0/6 " in first
        final = final_state(world)
        code = watch_.finish()
    assert code == 1
    assert final.phase is Phase.ROLLED_BACK
    printed = state_lines(watch_.lines)
    assert "productpage-candidate=fail" in (field(printed[-2], "verdicts") or "")
    assert "productpage-candidate:error-rate=0.2!(<=0.01)" in printed[-2]
    assert " RolledBack " in printed[-1]
    assert watch_.lines[-1].endswith("; exit 1")


def test_a_run_that_already_ended_is_shown_once_with_its_exit_code(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, Profile(error_rate=0.2))
    final = final_state(world)
    result = run_watch(KEY, "--repo", world.harness.remote)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[1:3] == [final.id, "RolledBack"]
    assert lines[1].startswith(f"watch: {final.id} ended RolledBack")


def test_an_unreadable_repo_exits_2_not_1(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.git")
    result = run_watch(KEY, "--repo", missing)
    assert result.returncode == 2
    assert result.stderr == f"watch: {missing}: no repository at {missing}\n"


def test_a_failed_fetch_is_printed_once_retried_and_the_watch_goes_on(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    url = world.harness.remote
    remote = Path(url)
    away = remote.with_name("away.git")
    store = GitEnvStore.open(url, tmp_path / "watch-cache.git", author=("w", "w@x"))
    out = io.StringIO()
    clock = DrivenClock()
    polls = iter(range(100))

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        step = next(polls)
        if step == 1:
            remote.rename(away)  # the server is gone for two polls
        elif step == 3:
            away.rename(remote)
        elif step > 3:
            world.tick()

    code, _ = follow(
        Feed(store, key=KEY),
        PlainOutput(out, url=url, interval=1),
        interval=1,
        timeout=60,
        clock=clock,
        sleep=sleep,
    )
    assert code == 0
    lines = out.getvalue().splitlines()
    failures = [text for text in lines if text.startswith("watch: cannot fetch")]
    gone = f"{url}: no repository at {url}"
    assert failures == [f"watch: cannot fetch {url}: {gone}; retrying every 1s"]
    assert lines.index(failures[0]) + 1 == lines.index(f"watch: fetched {url} again")
    commits = world.git("log", "--reverse", "--format=%H", "reconciler-state").split()
    assert [field(text, "state") for text in state_lines(lines)[1:]] == [
        c[:12] for c in commits[1:]
    ]


def test_a_preempted_run_ends_the_watch_with_3(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    store = GitEnvStore.open(
        world.harness.remote, tmp_path / "watch-cache.git", author=("w", "w@x")
    )
    out = io.StringIO()
    clock = DrivenClock()

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        newer = scenario.demo_file("experiment.yaml").replace(
            b"productpage-canary", b"productpage-canary-2"
        )
        world.harness.push_main("ci: productpage v3 candidate", {f"{APP}/experiment-2.yaml": newer})
        world.tick()

    code, last = follow(
        Feed(store, key=KEY),
        PlainOutput(out, url="", interval=1),
        interval=1,
        clock=clock,
        sleep=sleep,
    )
    assert code == 3
    assert last.pick is not None
    assert last.pick.state is not None
    assert last.pick.state.phase is Phase.PREEMPTED
    assert " Preempted " in state_lines(out.getvalue().splitlines())[-1]


def test_ctrl_c_ends_a_watch_of_everything_with_0_and_of_one_run_with_130(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    for args, expected in (((), 0), ((KEY,), 130)):
        with watching(*args, "--repo", world.harness.remote, "--interval", "0.2") as watch_:
            watch_.wait_for(lambda text: " Progressing iteration=0/6 " in text)
            watch_.process.send_signal(signal.SIGINT)
            code = watch_.finish()
            assert watch_.process.stderr is not None
            errors = watch_.process.stderr.read()
        assert (code, errors) == (expected, "")
