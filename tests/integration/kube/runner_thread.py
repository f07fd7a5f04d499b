"""`reconciler run` in a thread of the test process, and waiting on what it does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from reconciler.runner import Runner, Sources


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 15.0, poll: float = 0.1
) -> None:
    """Poll ``condition`` every ``poll`` seconds until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def run_in_thread(config: Path, *, stop_within: float = 10.0) -> Iterator[Runner]:
    """A Runner on ``config`` running in a thread; stopped, within ``stop_within`` s, after."""
    runner = Runner(Sources({}, {}, config))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop.set()
        runner.request_tick()
        thread.join(timeout=stop_within)
        structlog.reset_defaults()  # the runner configured logging for the whole process
        assert not thread.is_alive(), "the runner did not stop"
