"""`reconciler run` serving several Env repos in-process: isolation, wake-ups, reloads.

The Runner runs in a thread against real repos behind the session's ``git daemon``, a
real API server, and, for the hanging Git server, a TCP server that accepts connections
and never answers (as a wedged Git host or a black-holing proxy does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.runner import Runner
from tests.fixtures.git import GitDaemon
from tests.fixtures.kube import KubeServer
from tests.gitutil import make_bare_repo
from tests.integration.kube.runner_thread import run_in_thread, wait_for

pytestmark = pytest.mark.integration

SECRET = b"fleet-webhook-secret"
SETTLE = 2.0
"""How long to watch a tick count stay put after a wake-up that must not reach a repo."""
WAIT, POLL = 20.0, 0.05
"""How long each wait may take, and how often it looks."""


class SilentGitServer:
    """Accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentGitServer]:
    server = SilentGitServer()
    yield server
    server.close()


_counter = iter(range(10**6))


@pytest.fixture
def new_repo(git_daemon: GitDaemon) -> Callable[[], str]:
    """A fresh Env repo behind the session's git daemon (its git:// URL)."""

    def make() -> str:
        name = f"fleet-{next(_counter)}-{time.monotonic_ns()}.git"
        make_bare_repo(git_daemon.base_path / name, {"README.md": "Env repo\n"})
        return git_daemon.url(name)

    return make


def config_text(
    tmp: Path, kube_server: KubeServer, repos: list[str], *, interval: float, workers: int = 2
) -> str:
    secret = tmp / "webhook-secret"
    secret.write_bytes(SECRET)
    entries = "".join(f"- repo: {url}\n" for url in repos)
    return (
        f"repos:\n{entries}cacheDir: {tmp / 'cache'}\ninterval: {interval}\n"
        f"gitTimeout: 1\nfleet:\n  workers: {workers}\n"
        f"listen: 127.0.0.1:0\nwebhook:\n  secretFile: {secret}\n"
        "prometheus:\n  url: http://127.0.0.1:9\n  timeout: 0.2\n"
        f"kubernetes:\n  kubeconfig: {kube_server.kubeconfig}\n  events: false\n"
        "log:\n  json: false\n  level: warning\n"
    )


@contextmanager
def running(config: Path) -> Iterator[Runner]:
    with run_in_thread(config, stop_within=15.0) as runner:
        wait_for(lambda: runner.http is not None, "the HTTP server", WAIT, POLL)
        yield runner


def ticks(runner: Runner, url: str) -> int:
    worker = runner.workers.get(url)
    return 0 if worker is None else worker.ticks


def push(runner: Runner, clone_url: str) -> tuple[int, str]:
    """A signed GitHub push event naming ``clone_url``, as GitHub sends it."""
    body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": clone_url}})
    digest = hmac.new(SECRET, body.encode(), hashlib.sha256).hexdigest()
    assert runner.http is not None
    request = urllib.request.Request(
        f"http://127.0.0.1:{runner.http.port}/webhook",
        data=body.encode(),
        headers={"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read().decode()


def readyz(runner: Runner) -> tuple[int, dict[str, object]]:
    assert runner.http is not None
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{runner.http.port}/readyz", timeout=5
        ) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_a_hanging_git_server_holds_one_worker_and_the_other_repos_keep_ticking(
    tmp_path: Path,
    kube_server: KubeServer,
    new_repo: Callable[[], str],
    silent_server: SilentGitServer,
) -> None:
    good = [new_repo(), new_repo()]
    hanging = f"git://127.0.0.1:{silent_server.port}/env.git"
    config = tmp_path / "config.yaml"
    config.write_text(config_text(tmp_path, kube_server, [hanging, *good], interval=0.3))
    with running(config) as runner:
        started = {url: ticks(runner, url) for url in good}
        # three attempts that each wait out gitTimeout (1 s) open the hanging repo's circuit
        wait_for(
            lambda: runner._schedule.circuit_open(hanging),  # noqa: SLF001 - what /readyz shows
            "the hanging repo's circuit to open",
            WAIT,
            POLL,
        )
        status, body = readyz(runner)
        ticked = {url: ticks(runner, url) - started[url] for url in good}
    assert silent_server.accepted >= 3, "the hanging server was never asked"
    # ~3 s spent on the hanging repo, 0.3 s interval: the others kept their pace meanwhile
    assert all(count >= 5 for count in ticked.values()), ticked
    assert status == 200, body  # one bad repo never takes the pod out of service
    repos = body["repos"]
    assert isinstance(repos, dict)
    assert repos[hanging]["circuit"] == "open"
    assert repos[hanging]["failuresInARow"] >= 3
    assert "timed out" in str(repos[hanging]["lastError"])
    for url in good:
        assert repos[url]["lastError"] is None
        assert repos[url]["circuit"] == "closed"


def test_a_push_webhook_wakes_only_the_repo_it_names(
    tmp_path: Path, kube_server: KubeServer, new_repo: Callable[[], str]
) -> None:
    named, other = new_repo(), new_repo()
    config = tmp_path / "config.yaml"
    config.write_text(config_text(tmp_path, kube_server, [named, other], interval=3600))
    with running(config) as runner:
        wait_for(
            lambda: ticks(runner, named) >= 1 and ticks(runner, other) >= 1,
            "the first ticks",
            WAIT,
            POLL,
        )
        before = {url: ticks(runner, url) for url in (named, other)}
        # GitHub names the repository by its https clone URL: the same repo as git://...
        status, text = push(runner, f"https://127.0.0.1/{named.rsplit('/', 1)[1]}")
        assert status == 202, text
        wait_for(lambda: ticks(runner, named) > before[named], "the named repo's tick", WAIT, POLL)
        time.sleep(SETTLE)
        after = {url: ticks(runner, url) for url in (named, other)}
    assert after[named] == before[named] + 1
    assert after[other] == before[other], "a push to one repo ticked another"


def test_a_config_change_adds_and_drops_repos_and_keeps_the_others_running(
    tmp_path: Path, kube_server: KubeServer, new_repo: Callable[[], str]
) -> None:
    kept, dropped, added = new_repo(), new_repo(), new_repo()
    config = tmp_path / "config.yaml"
    config.write_text(config_text(tmp_path, kube_server, [kept, dropped], interval=3600))
    with running(config) as runner:
        wait_for(
            lambda: ticks(runner, kept) >= 1 and ticks(runner, dropped) >= 1,
            "first ticks",
            WAIT,
            POLL,
        )
        worker = runner.workers[kept]
        config.write_text(config_text(tmp_path, kube_server, [kept, added], interval=3600))
        wait_for(lambda: ticks(runner, added) >= 1, "the added repo's first tick", WAIT, POLL)
        served = set(runner.workers)
        same_worker = runner.workers[kept] is worker
        _, body = readyz(runner)
    assert served == {kept, added}
    assert same_worker, "an unchanged repo was rebuilt by a reload"
    repos = body["repos"]
    assert isinstance(repos, dict)
    assert set(repos) == {kept, added}, "a dropped repo is still reported"
    assert runner.reloads >= 1
    assert runner.config_rejected == 0
