"""`reconciler run`'s event sources in-process: a ref change in a local repo, a config reload."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from reconciler.demo import scenario
from reconciler.gitstore.admin import init_bare_repository
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import CommitSpec
from reconciler.runner import Runner, Sources
from tests.fixtures.kube import KubeServer

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def state_log(remote: Path) -> list[str]:
    done = subprocess.run(
        ["git", "--git-dir", str(remote), "log", "--format=%s", "reconciler-state"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.splitlines() if done.returncode == 0 else []


@pytest.fixture
def env(tmp_path: Path) -> Path:
    remote = init_bare_repository(tmp_path / "env.git")
    store = GitEnvStore.open(
        str(remote), tmp_path / "seed.git", author=("ci", "ci@example.invalid")
    )
    store.fetch()
    message, files = scenario.app_commits()[0]  # the app, no experiment yet
    store.update_branch("main", lambda _tip: [CommitSpec(message, files)])
    return remote


@pytest.fixture
def running(tmp_path: Path, env: Path, kube_server: KubeServer) -> Iterator[tuple[Runner, Path]]:
    config = tmp_path / "config" / "config.yaml"
    config.parent.mkdir()
    config.write_text(settings_text(env, kube_server, interval=3600))
    runner = Runner(Sources({}, {}, config))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner, config
    finally:
        runner.stop.set()
        runner.request_tick()
        thread.join(timeout=10)
        structlog.reset_defaults()  # the runner configured logging for the whole process
        assert not thread.is_alive(), "the runner did not stop"


def settings_text(env: Path, kube_server: KubeServer, *, interval: float) -> str:
    return (
        f"repo: {env}\ncacheDir: {env.parent / 'cache'}\ninterval: {interval}\n"
        "listen: 127.0.0.1:0\nprometheus:\n  url: http://127.0.0.1:9\n  timeout: 0.2\n"
        f"kubernetes:\n  kubeconfig: {kube_server.kubeconfig}\n  events: false\n"
        "log:\n  json: false\n  level: warning\n"
    )


def test_a_commit_to_a_local_repo_triggers_a_tick_at_once(
    running: tuple[Runner, Path], env: Path, tmp_path: Path
) -> None:
    runner, _ = running
    wait_for(lambda: runner.health.last_ok is not None, "the first tick")
    assert state_log(env) == []  # no experiment on main yet, nothing recorded
    store = GitEnvStore.open(str(env), tmp_path / "ci.git", author=("ci", "ci@example.invalid"))
    store.fetch()
    message, files = scenario.app_commits()[1]  # CI adds the candidate and its experiment
    store.update_branch("main", lambda _tip: [CommitSpec(message, files)])
    # The timer is an hour away: only the watch on the repo's refs can make this tick.
    wait_for(lambda: any("started" in s for s in state_log(env)), "the experiment to start")


def test_a_changed_config_file_is_applied_and_an_invalid_one_is_kept_out(
    running: tuple[Runner, Path], env: Path, kube_server: KubeServer
) -> None:
    runner, config = running
    wait_for(lambda: runner.health.last_ok is not None, "the first tick")
    config.write_text(settings_text(env, kube_server, interval=3600) + "prometheus:\n  uri: x\n")
    wait_for(lambda: runner.config_rejected >= 1, "the invalid config to be refused")
    assert runner.settings.interval == 3600
    config.write_text(settings_text(env, kube_server, interval=1800))
    wait_for(lambda: runner.settings.interval == 1800, "the new config to be applied")
