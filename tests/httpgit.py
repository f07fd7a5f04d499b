"""Smart HTTP for tests and benchmarks: ``git http-backend`` behind a small threaded server.

``GitHTTPServer`` serves every repository under its root, one ``git http-backend`` process
per request (CGI), with HTTP/1.1 keep-alive; a repository accepts pushes when its config
says ``http.receivepack=true``. ``GitHTTPHandler`` reads the request (``Content-Length`` or
chunked), runs the backend and relays its answer; a subclass decides who may come in
(``authorized``, default: everyone) and the environment the backend starts from
(``base_env``, default: this process's). The credential tests subclass it for Basic auth
over TLS; the benchmarks run it as a process, from the repository root:

    python -m tests.httpgit ROOT PORT GIT [CERT KEY]

which serves ROOT on 127.0.0.1:PORT with ``TCP_NODELAY`` on every connection, as production
front ends (nginx, GitHub's) set it, without authentication (loopback only), over TLS with
CERT and KEY when given (``TLSGitHTTPServer``: the handshake in each connection's thread),
until it is terminated. This module imports nothing outside the standard library: the benchmarks'
server process stays small and quick to start.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

_FORWARDED_HEADERS = (
    ("Git-Protocol", "GIT_PROTOCOL"),
    ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
)
"""Request headers ``git http-backend`` reads from CGI variables, when present."""


class GitHTTPHandler(BaseHTTPRequestHandler):
    """One connection: every request is answered by a ``git http-backend`` process."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = False
    """True sets ``TCP_NODELAY`` on the connection (see ``NoDelayHandler``)."""
    remote_user = "git"
    """CGI's ``REMOTE_USER`` for a request ``authorized`` lets in."""
    server: GitHTTPServer

    def authorized(self) -> bool:
        """Whether to serve this request (its body is read); False answers 401. Allows all."""
        return True

    def base_env(self) -> Mapping[str, str]:
        """The environment ``git http-backend`` starts from; the CGI variables go on top."""
        return os.environ

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi_env(self, body: bytes) -> dict[str, str]:
        path, _, query = self.path.partition("?")
        env = {
            **self.base_env(),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": self.remote_user,
            "REMOTE_ADDR": "127.0.0.1",
        }
        for header, variable in _FORWARDED_HEADERS:
            if self.headers.get(header):
                env[variable] = self.headers[header]
        return env

    def _serve(self) -> None:
        # The body is read first, even for a refusal: the connection is kept alive.
        body = self._body()
        if not self.authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        done = subprocess.run(
            [self.server.git, "http-backend"],
            input=body,
            env=self._cgi_env(body),
            capture_output=True,
            check=False,
        )
        separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, payload = done.stdout.partition(separator)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class NoDelayHandler(GitHTTPHandler):
    """``TCP_NODELAY`` on every connection, as production front ends set it."""

    disable_nagle_algorithm = True


class GitHTTPServer(ThreadingHTTPServer):
    """Smart HTTP for every repository under ``root``, with the ``git`` program at ``git``."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        git: str,
        handler: type[GitHTTPHandler] = GitHTTPHandler,
    ) -> None:
        super().__init__(address, handler)
        self.root = root
        self.git = git


class TLSGitHTTPServer(GitHTTPServer):
    """``GitHTTPServer`` over TLS; each handshake runs in its connection's thread.

    Wrapping the listening socket instead would run every handshake in the accepting
    thread, one after the other: a slow client would hold up the others.
    """

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        git: str,
        handler: type[GitHTTPHandler],
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(address, root, git, handler)
        self.context = context

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        """Handshake, then serve the connection."""
        assert isinstance(request, socket.socket)  # a stream server's request
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client gave up or does not trust us: nothing to serve
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def main() -> None:
    """``python -m tests.httpgit ROOT PORT GIT [CERT KEY]``: serve until terminated."""
    root, port, git = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    address = ("127.0.0.1", port)
    if len(sys.argv) > 5:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        server: GitHTTPServer = TLSGitHTTPServer(address, root, git, NoDelayHandler, context)
    else:
        server = GitHTTPServer(address, root, git, NoDelayHandler)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
