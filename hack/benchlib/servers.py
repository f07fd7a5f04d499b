"""Git servers on loopback for the benchmarks, as child processes stopped on exit.

``git_daemon`` serves ``git://`` with receive-pack enabled, as the integration tests do;
``http_backend`` serves smart HTTP through ``git http-backend`` behind the tests' small
server (``python -m tests.httpgit``), and ``https_backend`` the same over TLS with a fresh
self-signed certificate for 127.0.0.1 (``Server.ca_file``: what clients must trust). Each
yields a ``Server`` whose ``url(name)`` addresses a repository under its root; leaving the
``with`` block stops the process (and nothing else).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlib.common import REPO, git_binary, git_env
from tests.fixtures.net import self_signed_certificate

_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Server:
    """A running Git server for every repository under ``root``."""

    kind: str
    """``git``, ``http`` or ``https``: the URL scheme."""
    root: Path
    port: int
    ca_file: Path | None = None
    """The certificate clients must trust (``https``)."""

    def url(self, name: str) -> str:
        """The address of the repository ``root/name``."""
        return f"{self.kind}://127.0.0.1:{self.port}/{name}"

    def git_env(self, home: Path) -> dict[str, str]:
        """The git program's environment for this server (its CA, for ``https``)."""
        env = git_env(home)
        if self.ca_file is not None:
            env["GIT_SSL_CAINFO"] = str(self.ca_file)
        return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    _stop(process)
    raise SystemExit(f"bench: {what} did not start: {log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _running(
    server: Server, command: list[str], home: Path, *, log: Path, what: str, cwd: Path | None = None
) -> Iterator[Server]:
    """``server``, as the process ``command`` (stderr to ``log``) that stops with the block."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=git_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_for_port(server.port, process, log, what)
        yield server
    finally:
        _stop(process)


def git_daemon(root: Path, home: Path) -> contextlib.AbstractContextManager[Server]:
    """``git daemon --enable=receive-pack`` on a free 127.0.0.1 port, serving ``root``."""
    port = _free_port()
    command = [
        git_binary(),
        "daemon",
        "--reuseaddr",
        f"--base-path={root}",
        "--export-all",
        "--enable=receive-pack",
        "--informative-errors",
        "--listen=127.0.0.1",
        f"--port={port}",
        str(root),
    ]
    log = root.parent / "git-daemon.log"
    return _running(Server("git", root, port), command, home, log=log, what="git daemon")


def http_backend(root: Path, home: Path) -> contextlib.AbstractContextManager[Server]:
    """``git http-backend`` behind ``tests.httpgit`` on a free 127.0.0.1 port, serving ``root``.

    Repositories under ``root`` need ``http.receivepack=true`` to accept pushes.
    """
    port = _free_port()
    command = [sys.executable, "-m", "tests.httpgit", str(root), str(port), git_binary()]
    log = root.parent / "http-backend.log"
    what = "git http-backend server"
    return _running(Server("http", root, port), command, home, log=log, what=what, cwd=REPO)


def https_backend(root: Path, home: Path) -> contextlib.AbstractContextManager[Server]:
    """``http_backend`` over TLS, with a new self-signed certificate for 127.0.0.1."""
    cert, key = self_signed_certificate(root.parent)
    port = _free_port()
    command = [
        sys.executable, "-m", "tests.httpgit", str(root), str(port), git_binary(), str(cert),
        str(key),
    ]  # fmt: skip
    log = root.parent / "https-backend.log"
    server = Server("https", root, port, ca_file=cert)
    return _running(server, command, home, log=log, what="git https server", cwd=REPO)
