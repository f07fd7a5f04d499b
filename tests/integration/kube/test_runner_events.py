"""`reconciler run`'s event sources in-process: a ref change in a local repo, a config reload.

The Runner runs in a thread with a real watchdog observer on real files. What must happen
is waited for with a deadline. What must NOT happen (a reload on a read, a tick on a fetch)
has no event to wait for: those tests wait SETTLE, longer than the watches' debounce plus
the observer's latency, so a wrongly triggered reload or tick has had the time to happen,
then compare the counts.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.demo import scenario
from reconciler.gitstore.admin import init_bare_repository
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import CommitSpec
from reconciler.runner import Runner
from reconciler.watch import SETTLE_SECONDS
from tests.configmap import configmap_volume
from tests.fixtures.kube import KubeServer
from tests.integration.kube.runner_thread import run_in_thread, wait_for

pytestmark = pytest.mark.integration

SETTLE = 3 * SETTLE_SECONDS + 0.5
"""How long to watch a count stay put: several debounce periods and the observer's delay."""


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
    with run_in_thread(config) as runner:
        yield runner, config


@pytest.fixture
def running_on_configmap(
    tmp_path: Path, env: Path, kube_server: KubeServer
) -> Iterator[tuple[Runner, Path]]:
    """The config file mounted from a ConfigMap: ``config.yaml -> ..data/config.yaml``."""
    volume = tmp_path / "config"
    content = settings_text(env, kube_server, interval=3600)
    configmap_volume(volume, "..2026_12_04_16_00_00.1", {"config.yaml": content})
    with run_in_thread(volume / "config.yaml") as runner:
        yield runner, volume


def tick_and_wait(runner: Runner) -> None:
    """Ask for a tick as the webhook does and wait until it has run."""
    before = runner.ticks
    runner.request_tick()
    wait_for(lambda: runner.ticks > before, "the requested tick")


def first_tick_settled(runner: Runner) -> int:
    """Wait for the first tick and for the events it caused to settle; the tick count."""
    wait_for(lambda: runner.health.last_ok is not None, "the first tick")
    time.sleep(SETTLE)
    return runner.ticks


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
    assert runner.settings.repo.interval == 3600
    config.write_text(settings_text(env, kube_server, interval=1800))
    wait_for(lambda: runner.settings.repo.interval == 1800, "the new config to be applied")


def test_a_reload_that_names_another_repo_serves_it_and_stops_serving_the_old_one(
    running: tuple[Runner, Path], env: Path, kube_server: KubeServer, tmp_path: Path
) -> None:
    # The repos served are data, not wiring made once: a new config file moves the
    # process to the repo it names, without a restart, and the old one is let go.
    runner, config = running
    wait_for(lambda: runner.health.last_ok is not None, "the first tick")
    other = init_bare_repository(tmp_path / "other.git")
    text = settings_text(env, kube_server, interval=1800).replace(f"repo: {env}", f"repo: {other}")
    config.write_text(text)
    wait_for(lambda: runner.repo == str(other), "the new repo to be served")
    assert list(runner.workers) == [str(other)]
    assert runner.config_rejected == 0
    wait_for(lambda: runner.workers[str(other)].ticks >= 1, "a tick of the new repo")
    assert set(runner.health.report(runner.clock())[1]["repos"]) == {str(other)}


def test_reading_the_config_file_a_hundred_times_reloads_nothing_and_ticks_no_more(
    running: tuple[Runner, Path],
) -> None:
    runner, config = running
    ticks = first_tick_settled(runner)
    for _ in range(100):
        config.read_bytes()
    time.sleep(SETTLE)
    assert runner.config_watch is not None
    assert (runner.config_watch.checks, runner.reloads, runner.ticks) == (0, 0, ticks)


def test_writing_another_file_in_the_config_folder_reloads_nothing_and_ticks_no_more(
    running: tuple[Runner, Path],
) -> None:
    runner, config = running
    ticks = first_tick_settled(runner)
    notes = config.parent / "notes.txt"
    notes.write_text("not the config\n")
    notes.replace(config.parent / "notes.old")
    (config.parent / "notes.old").unlink()
    time.sleep(SETTLE)
    assert runner.config_watch is not None
    assert (runner.config_watch.checks, runner.reloads, runner.ticks) == (0, 0, ticks)


def test_one_change_of_the_config_content_reloads_once_and_ticks_once(
    running: tuple[Runner, Path], env: Path, kube_server: KubeServer
) -> None:
    runner, config = running
    ticks = first_tick_settled(runner)
    config.write_text(settings_text(env, kube_server, interval=1800))
    wait_for(lambda: runner.settings.repo.interval == 1800, "the new config to be applied")
    wait_for(lambda: runner.ticks == ticks + 1, "the tick after the reload")
    time.sleep(SETTLE)
    assert (runner.reloads, runner.config_rejected, runner.ticks) == (1, 0, ticks + 1)


def test_a_configmap_swap_to_new_content_reloads_once(
    running_on_configmap: tuple[Runner, Path], env: Path, kube_server: KubeServer
) -> None:
    runner, volume = running_on_configmap
    ticks = first_tick_settled(runner)
    content = settings_text(env, kube_server, interval=1800)
    configmap_volume(volume, "..2026_12_04_16_05_00.2", {"config.yaml": content})
    wait_for(lambda: runner.settings.repo.interval == 1800, "the swapped-in config to be applied")
    time.sleep(SETTLE)
    assert (runner.reloads, runner.config_rejected, runner.ticks) == (1, 0, ticks + 1)


def test_a_configmap_swap_to_identical_content_reloads_nothing(
    running_on_configmap: tuple[Runner, Path], env: Path, kube_server: KubeServer
) -> None:
    runner, volume = running_on_configmap
    ticks = first_tick_settled(runner)
    content = settings_text(env, kube_server, interval=3600)  # the same bytes again
    configmap_volume(volume, "..2026_12_04_16_05_00.2", {"config.yaml": content})
    assert runner.config_watch is not None
    watch = runner.config_watch
    wait_for(lambda: watch.checks >= 1, "the swap to be noticed and compared")
    time.sleep(SETTLE)
    assert (watch.changes, runner.reloads, runner.ticks) == (0, 0, ticks)


def test_fetching_the_local_repo_ticks_no_more_and_a_push_by_another_writer_ticks_once(
    running: tuple[Runner, Path], env: Path, tmp_path: Path
) -> None:
    runner, _ = running
    assert first_tick_settled(runner) == 1  # the first tick's own fetch started no other
    for _ in range(3):  # three more ticks, each of them fetching the repo
        tick_and_wait(runner)
    reader = GitEnvStore.open(str(env), tmp_path / "reader.git", author=("r", "r@example.invalid"))
    for _ in range(5):
        reader.fetch()  # someone else reading the repo
    time.sleep(SETTLE)
    assert runner.ticks == 4
    writer = GitEnvStore.open(str(env), tmp_path / "ci.git", author=("ci", "ci@example.invalid"))
    writer.fetch()
    writer.update_branch(
        "main", lambda _tip: [CommitSpec("docs: a note", {"NOTES.md": b"no experiment\n"})]
    )
    # The timer is an hour away: only the watch on the refs can make this tick.
    wait_for(lambda: runner.ticks == 5, "the tick for the push", timeout=5.0)
    time.sleep(SETTLE)
    assert runner.ticks == 5, f"the push ticked {runner.ticks - 4} times"
    assert runner.refs_watch is not None
    assert runner.refs_watch.changes == 1


def test_the_reconcilers_own_push_costs_at_most_one_extra_tick_then_ticks_stop(
    running: tuple[Runner, Path], env: Path, tmp_path: Path
) -> None:
    runner, _ = running
    ticks = first_tick_settled(runner)
    store = GitEnvStore.open(str(env), tmp_path / "ci.git", author=("ci", "ci@example.invalid"))
    store.fetch()
    message, files = scenario.app_commits()[1]  # CI adds the candidate and its experiment
    store.update_branch("main", lambda _tip: [CommitSpec(message, files)])
    wait_for(lambda: any("started" in s for s in state_log(env)), "the experiment to start")
    # One tick for CI's push; the state commit that tick pushed is a ref write in the same
    # repo, worth one more tick, which only reads and finds nothing new to record.
    wait_for(lambda: runner.ticks == ticks + 2, "the tick for the reconciler's own push")
    time.sleep(SETTLE)
    assert runner.ticks == ticks + 2
    assert len(state_log(env)) == 1
