"""``reconciler run`` as its own process: a changed CA makes it re-execute itself.

libgit2 never forgets a CA, so the old one stops being trusted only in a new process. The
process is started with a config file it watches and a CA file as a mounted Secret would
hold it; the HTTPS git server keeps a certificate from the first CA throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.https_git import TOKEN, HTTPSRemote, serve_https
from tests.fixtures.kube import ROOT, KubeServer
from tests.fixtures.net import CertificateAuthority, stop

pytestmark = pytest.mark.integration

TIMEOUT = 60.0  # a start of the process imports the kubernetes client: seconds on a busy machine


def config_text(remote: HTTPSRemote, tmp_path: Path, kube_server: KubeServer, ca: Path) -> str:
    return (
        f"repo: {remote.url}\ncacheDir: {tmp_path / 'cache'}\ninterval: 0.3\n"
        "listen: 127.0.0.1:0\nprometheus:\n  url: http://127.0.0.1:9\n  timeout: 0.2\n"
        f"kubernetes:\n  kubeconfig: {kube_server.kubeconfig}\n  events: false\n"
        f"credentials:\n  tokenFile: {tmp_path / 'token'}\n  caFile: {ca}\n"
        "log:\n  json: true\n  level: debug\n"
    )


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def wait_for(
    log: Path, process: subprocess.Popen[bytes], what: str, done: Callable[[list[Any]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        seen = events(log)
        if done(seen):
            return seen
        if process.poll() is not None:
            break
        time.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    pytest.fail(f"no {what} within {TIMEOUT} s (exit code {process.poll()}); log:\n{tail}")


def after(seen: list[dict[str, Any]], event: str, nth: int) -> list[dict[str, Any]]:
    """The events after the ``nth`` (1-based) ``event``; empty when there is no such one."""
    indexes = [i for i, e in enumerate(seen) if e.get("event") == event]
    return seen[indexes[nth - 1] + 1 :] if len(indexes) >= nth else []


def named(seen: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in seen if e.get("event") == event]


def untrusted(seen: list[dict[str, Any]]) -> bool:
    return any("is not trusted" in e.get("error", "") for e in named(seen, "tick_failed"))


@pytest.fixture
def https_remote(tmp_path: Path) -> Iterator[tuple[HTTPSRemote, CertificateAuthority]]:
    ca = CertificateAuthority.create(tmp_path, "first-ca")
    cert, key = ca.issue(tmp_path, "server")
    with serve_https(tmp_path, cert, key) as remote:
        yield remote, ca


def test_a_changed_ca_restarts_reconciler_run_which_then_trusts_only_the_configured_ca(
    https_remote: tuple[HTTPSRemote, CertificateAuthority],
    kube_server: KubeServer,
    tmp_path: Path,
) -> None:
    remote, first_ca = https_remote
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    mounted = tmp_path / "secret" / "ca.crt"  # as a Secret volume holds it
    mounted.parent.mkdir()
    shutil.copyfile(first_ca.cert, mounted)
    config = tmp_path / "config" / "config.yaml"
    config.parent.mkdir()
    config.write_text(config_text(remote, tmp_path, kube_server, mounted))
    log = tmp_path / "reconciler.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(config)],
            cwd=ROOT,
            env=dict(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(log, process, "fetch", lambda seen: bool(named(seen, "git_fetched")))

        # 1. The Secret is rotated to another CA (same path, new content): the process
        # restarts before its next fetch, and the new one refuses the server's certificate.
        shutil.copyfile(CertificateAuthority.create(tmp_path, "second-ca").cert, mounted)
        seen = wait_for(
            log,
            process,
            "refused fetch after a restart",
            lambda seen: untrusted(after(seen, "trust_changed_restarting", 1)),
        )
        restarted = named(seen, "trust_changed_restarting")
        assert len(restarted) == 1
        assert "--ca-file / credentials.caFile" in restarted[0]["reason"]
        assert named(after(seen, "trust_changed_restarting", 1), "git_fetched") == []
        served = remote.counters.served

        # 2. The setting names the first CA again (another path, same content as at the
        # start): the config reload alone changes nothing in libgit2, so the process
        # restarts once more, and the server is trusted again.
        again = tmp_path / "first-ca-again.pem"
        shutil.copyfile(first_ca.cert, again)
        config.write_text(config_text(remote, tmp_path, kube_server, again))
        seen = wait_for(
            log,
            process,
            "fetch after a second restart",
            lambda seen: bool(named(after(seen, "trust_changed_restarting", 2), "git_fetched")),
        )
        assert named(after(seen, "trust_changed_restarting", 1), "config_reloaded")
        assert len(named(seen, "trust_changed_restarting")) == 2
        assert remote.counters.served > served
        # One process (pid) throughout, started three times: each start opens the port.
        assert process.poll() is None
        assert len(named(seen, "http_listening")) == 3
    finally:
        stop(process, timeout=15)
