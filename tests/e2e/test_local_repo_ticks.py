"""`reconciler run` on a local Env repo path ticks on pushes, never on its own reads.

The process reads the bare repository at every tick (a fetch) and its config file at start
and at each reload; a watch that woke on those reads ticked ~1,000 times in 3 s with
``--interval 3600``. Here the real process runs on a local bare repository with a live
experiment, configured by a watched ``--config`` file, and its ticks are counted on
``/metrics`` (``reconciler_ticks_total``). What must not happen (more ticks) has no event
to wait for: the test watches the count stay put for ``QUIET`` seconds, several times the
watches' debounce plus the observer's delay.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.cluster.client import Kube
from reconciler.watch import SETTLE_SECONDS
from tests.e2e.envrepo import APP, STATE, EnvRepo, ExperimentFile
from tests.e2e.world import PROCESS_START, ProcessUnreachableError, ReconcilerProcess
from tests.fixtures.kube import KubeServer, apply, load_yaml_text
from tests.fixtures.net import free_port

pytestmark = pytest.mark.e2e

QUIET = 6 * SETTLE_SECONDS + 1.0
"""Seconds a count must stay put to show nothing more was caused (2.8 s)."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Poll ``condition`` until it holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def settings(repo: Path, tmp: Path, port: int, kube: KubeServer, interval: int) -> str:
    return (
        f"repo: {repo}\ncacheDir: {tmp / 'cache'}\ninterval: {interval}\n"
        f"listen: 127.0.0.1:{port}\n"
        # An unreachable Prometheus: no iteration can be judged, so nothing but the
        # reconciler's own reads happens in the repo unless the test pushes.
        "prometheus:\n  url: http://127.0.0.1:9\n  timeout: 0.2\n"
        f"kubernetes:\n  kubeconfig: {kube.kubeconfig}\n  events: false\n"
        "log:\n  json: true\n  level: info\n"
    )


@pytest.fixture
def live_repo(tmp_path: Path, admin: Kube, namespace: str) -> EnvRepo:
    """A bare Env repo whose main holds the app (applied to the cluster) and an experiment."""
    repo = EnvRepo.create(tmp_path / "env.git", str(tmp_path / "env.git"))
    for path in repo.files("main"):
        if path.startswith(f"{APP}/") and path.endswith(".yaml"):
            for doc in load_yaml_text(repo.show("main", path) or ""):
                doc["metadata"]["namespace"] = namespace
                apply(admin, doc)
    experiment = ExperimentFile()
    # Due again in an hour: after it starts, the experiment writes nothing by itself.
    text = experiment.render(namespace).replace("intervalSeconds: 1\n", "intervalSeconds: 3600\n")
    repo.commit({experiment.path: text}, "ci: a canary experiment for productpage")
    return repo


@pytest.fixture
def process(
    tmp_path: Path, live_repo: EnvRepo, kube_server: KubeServer
) -> Iterator[tuple[ReconcilerProcess, Path]]:
    config = tmp_path / "config" / "config.yaml"
    config.parent.mkdir()
    port = free_port()
    config.write_text(settings(live_repo.path, tmp_path, port, kube_server, interval=3600))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["HOME"] = str(tmp_path)
    started = ReconcilerProcess(["--config", str(config)], env, tmp_path / "run.log", port)

    def healthy() -> bool:
        try:
            return started.request("/healthz")[0] == 200
        except ProcessUnreachableError:
            assert started.exit_code is None, started.log_tail()
            return False

    try:
        wait_until(healthy, "reconciler run to answer /healthz", PROCESS_START)
        yield started, config
    finally:
        started.stop()


def ticks(process: ReconcilerProcess) -> int:
    return int(process.metric("reconciler_ticks_total"))


def test_a_local_repo_with_a_live_experiment_ticks_only_for_pushes_and_config_changes(
    process: tuple[ReconcilerProcess, Path], live_repo: EnvRepo, kube_server: KubeServer
) -> None:
    reconciler, config = process
    # The experiment starts at the first tick: it is live from then on.
    wait_until(
        lambda: any("started" in c.subject for c in live_repo.log(STATE)),
        "the experiment to start",
        timeout=30,
    )
    # The state commit the first tick pushed is a ref write: at most one tick more, then
    # nothing, as long as nobody writes (each tick fetches the repo: reads only).
    time.sleep(QUIET)
    settled = ticks(reconciler)
    assert 1 <= settled <= 3, f"{settled} ticks with nothing changing:\n{reconciler.log_tail()}"
    time.sleep(QUIET)
    assert ticks(reconciler) == settled

    # Another writer pushes to main: exactly one tick follows, within a couple of seconds.
    live_repo.commit({"NOTES.md": "a note, no experiment\n"}, "docs: a note")
    took = wait_until(lambda: ticks(reconciler) > settled, "the tick for the push", timeout=3)
    time.sleep(QUIET)
    assert ticks(reconciler) == settled + 1, reconciler.log_tail()
    assert took < 2.0, f"the push ticked after {took:.1f} s"

    # Reading the config file (as the process does at each reload) wakes nothing.
    for _ in range(200):
        config.read_bytes()
    time.sleep(QUIET)
    assert ticks(reconciler) == settled + 1

    # A change of its content is one reload and one tick.
    config.write_text(
        settings(live_repo.path, config.parent.parent, reconciler.port, kube_server, interval=1800)
    )
    wait_until(lambda: ticks(reconciler) > settled + 1, "the tick after the reload", timeout=5)
    time.sleep(QUIET)
    assert ticks(reconciler) == settled + 2
    assert reconciler.log.read_text().count('"config_reloaded"') == 1
