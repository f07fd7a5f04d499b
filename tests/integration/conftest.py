"""Fixtures for tests against a real Git server: ``git daemon`` on loopback, fresh remotes."""

from __future__ import annotations

import itertools
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.gitutil import git_env, make_bare_repo, require_git

if TYPE_CHECKING:
    from collections.abc import Iterator

_START_TIMEOUT = 10.0
_names = itertools.count()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    process: subprocess.Popen[bytes],
    log: Path,
    what: str,
    timeout: float = _START_TIMEOUT,
) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; fail with ``log`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    process.kill()
    process.wait()
    pytest.fail(
        f"{what} did not accept connections on 127.0.0.1:{port} within {timeout} s "
        f"(exit code {process.returncode}); its stderr:\n{log.read_text(errors='replace')}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` and wait for it, killing it if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class GitDaemon:
    """A running ``git daemon`` serving every repository under ``base_path``."""

    base_path: Path
    port: int

    def url(self, name: str) -> str:
        """``git://`` URL of the repository ``base_path/name``."""
        return f"git://127.0.0.1:{self.port}/{name}"

    def path(self, url: str) -> Path:
        """The directory behind one of this daemon's URLs."""
        return self.base_path / url.rsplit("/", 1)[1]


@pytest.fixture(scope="session")
def git_daemon() -> Iterator[GitDaemon]:
    """A ``git daemon`` with receive-pack enabled on a free loopback port, for the session."""
    git = require_git()
    with tempfile.TemporaryDirectory(prefix="git-daemon-") as tmp:
        base = Path(tmp, "repos")
        base.mkdir()
        log = Path(tmp, "daemon.log")
        port = free_port()
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [
                    git,
                    "daemon",
                    "--reuseaddr",
                    f"--base-path={base}",
                    "--export-all",
                    "--enable=receive-pack",
                    "--informative-errors",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    str(base),
                ],
                env=git_env(Path(tmp)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            wait_for_port(port, process, log, "git daemon")
            yield GitDaemon(base_path=base, port=port)
        finally:
            stop(process)


@pytest.fixture
def env_remote(git_daemon: GitDaemon) -> str:
    """A fresh bare Env repo served by ``git_daemon`` whose main has one commit.

    Returns its ``git://`` URL; ``git_daemon.path(url)`` is its directory.
    """
    name = f"env-{next(_names)}.git"
    make_bare_repo(
        git_daemon.base_path / name,
        {"README.md": "Env repo\n", "apps/productpage/deployment.yaml": "kind: Deployment\n"},
    )
    return git_daemon.url(name)
