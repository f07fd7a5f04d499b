"""Credentials against real servers: ``git http-backend`` behind HTTPS, and ``sshd``."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2
import pytest
from structlog.testing import capture_logs

from reconciler.errors import GitPermanentError
from reconciler.gitstore import Credentials, GitEnvStore
from reconciler.ports import CommitSpec
from tests.fixtures.net import free_port, self_signed_certificate, stop, wait_for_port
from tests.gitutil import git, git_env, make_bare_repo, require_binary, require_git, rev_parse
from tests.httpgit import GitHTTPHandler, GitHTTPServer

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")
TOKEN = "s3cret-token-value"  # noqa: S105 - a test token
USERNAME = "x-access-token"


# -- HTTPS: git http-backend (tests.httpgit) behind TLS, with Basic auth ----------------


@dataclass
class Counters:
    connections: int = 0
    requests: int = 0
    auth_attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CountingServer(GitHTTPServer):
    """``tests.httpgit``'s server on a free port, counting connections, requests and logins."""

    def __init__(self, root: Path, git_path: str) -> None:
        super().__init__(("127.0.0.1", 0), root, git_path, BasicAuthHandler)
        self.counters = Counters()
        basic = base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode()
        self.expected_auth = f"Basic {basic}"

    def get_request(self) -> tuple[socket.socket, Any]:
        with self.counters.lock:
            self.counters.connections += 1
        return super().get_request()


class BasicAuthHandler(GitHTTPHandler):
    """Serves a request only with ``TOKEN`` as Basic auth, in ``git_env()``."""

    remote_user = USERNAME
    server: CountingServer

    def authorized(self) -> bool:
        counters = self.server.counters
        auth = self.headers.get("Authorization")
        with counters.lock:
            counters.requests += 1
            counters.auth_attempts += auth is not None
        return auth == self.server.expected_auth

    def base_env(self) -> Mapping[str, str]:
        return git_env()


@dataclass(frozen=True)
class HTTPSRemote:
    url: str
    ca_file: Path
    repo: Path
    counters: Counters


@pytest.fixture
def https_remote(tmp_path: Path) -> Iterator[HTTPSRemote]:
    """An Env repo served by ``git http-backend`` over HTTPS with Basic auth (``TOKEN``).

    Each test gets a new certificate: trusting a CA is process-wide in libgit2, so a test
    that expects an untrusted certificate must see one that no other test trusted.
    """
    git_path = require_git()
    cert, key = self_signed_certificate(tmp_path)
    root = tmp_path / "served"
    repo = root / "env.git"
    make_bare_repo(repo, {"README.md": "Env repo\n"})
    git("--git-dir", repo, "config", "http.receivepack", "true")
    server = CountingServer(root, git_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = server.server_address[1]
        yield HTTPSRemote(f"https://127.0.0.1:{port}/env.git", cert, repo, server.counters)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def token_file(directory: Path, token: str) -> Path:
    path = directory / "token"
    path.write_text(f"{token}\n")  # as a Kubernetes Secret often holds it
    return path


def test_https_fetch_and_push_with_the_token_and_the_ca_file(
    https_remote: HTTPSRemote, tmp_path: Path
) -> None:
    credentials = Credentials(token_file=token_file(tmp_path, TOKEN), ca_file=https_remote.ca_file)
    store = GitEnvStore.open(
        https_remote.url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    assert store.fetch().main == rev_parse(https_remote.repo, "main")
    result = store.update_branch("main", lambda _tip: [CommitSpec("over https", {"f": b"1"})])
    assert result.tip == rev_parse(https_remote.repo, "main")


def test_wrong_token_fails_once_as_authentication_failed_and_is_never_shown(
    https_remote: HTTPSRemote, tmp_path: Path
) -> None:
    wrong = "wrong-token-do-not-print"
    credentials = Credentials(token_file=token_file(tmp_path, wrong), ca_file=https_remote.ca_file)
    store = GitEnvStore.open(
        https_remote.url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    with capture_logs() as logs, pytest.raises(GitPermanentError) as caught:
        store.fetch()

    assert "authentication failed" in str(caught.value)
    assert https_remote.counters.auth_attempts <= 2  # libgit2 alone would try 15 times
    assert https_remote.counters.requests <= 3
    shown = [str(caught.value), repr(caught.value), repr(logs)]
    shown += [str(e) for e in (caught.value.__cause__, caught.value.__context__) if e]
    assert not any(wrong in text for text in shown)


def test_token_file_is_read_at_each_use_so_a_rotated_secret_works(
    https_remote: HTTPSRemote, tmp_path: Path
) -> None:
    path = token_file(tmp_path, "old-token")
    credentials = Credentials(token_file=path, ca_file=https_remote.ca_file)
    store = GitEnvStore.open(
        https_remote.url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    with pytest.raises(GitPermanentError, match="authentication failed"):
        store.fetch()
    token_file(tmp_path, TOKEN)
    assert store.fetch().main is not None


def test_untrusted_certificate_is_refused_permanently_without_retry(
    https_remote: HTTPSRemote, tmp_path: Path
) -> None:
    credentials = Credentials(token_file=token_file(tmp_path, TOKEN))
    store = GitEnvStore.open(
        https_remote.url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    with pytest.raises(GitPermanentError, match="TLS certificate") as caught:
        store.fetch()
    assert "ca_file" in str(caught.value)
    assert https_remote.counters.connections == 1
    assert https_remote.counters.requests == 0


def test_userinfo_in_the_url_never_appears_in_errors_or_logs(
    https_remote: HTTPSRemote, tmp_path: Path
) -> None:
    url = https_remote.url.replace("https://", "https://someone:pa55-in-url@")
    credentials = Credentials(ca_file=https_remote.ca_file)
    store = GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials)
    assert store.url == https_remote.url
    with capture_logs() as logs, pytest.raises(GitPermanentError) as caught:
        store.fetch()
    assert "pa55-in-url" not in f"{caught.value} {caught.value!r} {logs!r}"


@pytest.mark.parametrize(
    ("credentials", "url", "message"),
    [
        (Credentials(token_file=Path("t")), "http://example.test/env.git", "never plain http"),
        (Credentials(token_file=Path("t")), "ssh://git@example.test/env.git", "unusable with ssh"),
        (Credentials(token_file=Path("t")), "git@example.test:org/env.git", "unusable with ssh"),
        (
            Credentials(ssh_key_file=Path("k")),
            "https://example.test/env.git",
            "unusable with https",
        ),
        (Credentials(token_file=Path("/absent")), "https://example.test/e.git", "does not exist"),
    ],
)
def test_credentials_unusable_for_the_url_are_refused_at_open(
    credentials: Credentials, url: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(GitPermanentError, match=message):
        GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials)


# -- SSH: sshd on loopback, running as the current user ---------------------------------


@dataclass(frozen=True)
class SSHServer:
    port: int
    directory: Path
    client_key: Path
    known_hosts: Path
    user: str

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo}"

    def known_hosts_with(self, public_key: Path, name: str) -> Path:
        path = self.directory / name
        path.write_text(f"[127.0.0.1]:{self.port} {public_key.read_text()}")
        return path


def keygen(path: Path) -> Path:
    ssh_keygen = require_binary("ssh-keygen", "openssh-client")
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    """``sshd`` on a free loopback port accepting one generated client key."""
    binary = require_binary("sshd", "openssh-server", extra_dirs=("/usr/sbin", "/usr/local/sbin"))
    require_binary("ssh-keygen", "openssh-client")
    if os.geteuid() == 0:
        # As root sshd insists on its privilege separation directory, which the Debian
        # service creates at start; nothing else uses it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sshd-") as tmp:
        directory = Path(tmp)
        host_key = keygen(directory / "host_key")
        client_key = keygen(directory / "client_key")
        (directory / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
        port = free_port()
        config = directory / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {directory / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nLogLevel VERBOSE\n"
        )
        log = directory / "sshd.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [binary, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            wait_for_port(port, process, log, "sshd")
            server = SSHServer(
                port=port,
                directory=directory,
                client_key=client_key,
                known_hosts=directory / "known_hosts",
                user=os.environ.get("USER")
                or subprocess.run(
                    ["id", "-un"], capture_output=True, text=True, check=True
                ).stdout.strip(),
            )
            server.known_hosts_with(host_key.with_suffix(".pub"), "known_hosts")
            yield server
        finally:
            stop(process)


@pytest.fixture
def ssh_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "env.git"
    make_bare_repo(repo, {"README.md": "Env repo over ssh\n"})
    return repo


def test_ssh_fetch_and_push_with_key_and_known_hosts(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    home_before = pygit2.settings.homedir
    credentials = Credentials(ssh_key_file=sshd.client_key, ssh_known_hosts_file=sshd.known_hosts)
    store = GitEnvStore.open(
        sshd.url(ssh_repo), tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    assert store.fetch().main == rev_parse(ssh_repo, "main")
    result = store.update_branch("main", lambda _tip: [CommitSpec("over ssh", {"f": b"1"})])
    assert result.tip == rev_parse(ssh_repo, "main")
    assert pygit2.settings.homedir == home_before


@pytest.mark.parametrize("known_hosts", ["other host key", "empty"])
def test_ssh_host_key_not_in_known_hosts_is_refused_permanently(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path, known_hosts: str
) -> None:
    if known_hosts == "empty":
        path = tmp_path / "known_hosts"
        path.write_text("")
    else:
        path = sshd.known_hosts_with(keygen(tmp_path / "impostor").with_suffix(".pub"), "other")
    credentials = Credentials(ssh_key_file=sshd.client_key, ssh_known_hosts_file=path)
    store = GitEnvStore.open(
        sshd.url(ssh_repo), tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    with pytest.raises(GitPermanentError, match=r"SSH host key of 127\.0\.0\.1 is not trusted"):
        store.fetch()


def test_ssh_key_not_authorized_fails_as_authentication_failed(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    credentials = Credentials(
        ssh_key_file=keygen(tmp_path / "stranger"), ssh_known_hosts_file=sshd.known_hosts
    )
    store = GitEnvStore.open(
        sshd.url(ssh_repo), tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )
    with pytest.raises(GitPermanentError, match="authentication failed"):
        store.fetch()
