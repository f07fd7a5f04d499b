"""Credentials and trust against real servers: ``git http-backend`` behind HTTPS, and ``sshd``.

libgit2's CA store is process-wide and only grows, and the store refuses to work with a CA
other than the one this process loaded (``TrustChangedError``). So every HTTPS server here
has a certificate from one session CA, ``trusted_ca``, configured everywhere; the tests
that need an untrusted certificate use a CA that is never configured, and the tests that
change the configured CA expect that refusal. (A fresh process, as after a restart, is
proven by ``tests/integration/kube/test_trust_restart.py``.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2
import pytest
from structlog.testing import capture_logs

from reconciler.errors import GitPermanentError, TrustChangedError
from reconciler.gitstore import Credentials, GitEnvStore
from reconciler.ports import CommitSpec
from tests.fixtures.https_git import TOKEN, HTTPSRemote, serve_https
from tests.fixtures.net import CertificateAuthority, free_port, stop, wait_for_port
from tests.gitutil import make_bare_repo, require_binary, rev_parse

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")
CA_SETTING = "--ca-file / credentials.caFile"
KNOWN_HOSTS_SETTING = "--known-hosts-file / credentials.knownHostsFile"


# -- HTTPS: git http-backend (tests.httpgit) behind TLS, with Basic auth ----------------


@pytest.fixture(scope="session")
def trusted_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """The CA every test of this process configures (see the module's docstring)."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("trusted-ca"), "trusted-ca")


@pytest.fixture
def https_remote(tmp_path: Path, trusted_ca: CertificateAuthority) -> Iterator[HTTPSRemote]:
    """An Env repo over HTTPS with a certificate for 127.0.0.1 from ``trusted_ca``."""
    cert, key = trusted_ca.issue(tmp_path, "server")
    with serve_https(tmp_path, cert, key) as remote:
        yield remote


def token_file(directory: Path, token: str) -> Path:
    path = directory / "token"
    path.write_text(f"{token}\n")  # as a Kubernetes Secret often holds it
    return path


def open_store(url: str, tmp_path: Path, credentials: Credentials) -> GitEnvStore:
    return GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials)


def test_https_fetch_and_push_with_the_token_and_the_ca_file(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    credentials = Credentials(token_file=token_file(tmp_path, TOKEN), ca_file=trusted_ca.cert)
    store = open_store(https_remote.url, tmp_path, credentials)
    assert store.fetch().main == rev_parse(https_remote.repo, "main")
    result = store.update_branch("main", lambda _tip: [CommitSpec("over https", {"f": b"1"})])
    assert result.tip == rev_parse(https_remote.repo, "main")


def test_wrong_token_fails_once_as_authentication_failed_and_is_never_shown(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    wrong = "wrong-token-do-not-print"
    credentials = Credentials(token_file=token_file(tmp_path, wrong), ca_file=trusted_ca.cert)
    store = open_store(https_remote.url, tmp_path, credentials)
    with capture_logs() as logs, pytest.raises(GitPermanentError) as caught:
        store.fetch()

    assert "authentication failed" in str(caught.value)
    assert https_remote.counters.auth_attempts <= 2  # libgit2 alone would try 15 times
    assert https_remote.counters.requests <= 3
    shown = [str(caught.value), repr(caught.value), repr(logs)]
    shown += [str(e) for e in (caught.value.__cause__, caught.value.__context__) if e]
    assert not any(wrong in text for text in shown)


def test_token_file_is_read_at_each_use_so_a_rotated_secret_works(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    path = token_file(tmp_path, "old-token")
    credentials = Credentials(token_file=path, ca_file=trusted_ca.cert)
    store = open_store(https_remote.url, tmp_path, credentials)
    with pytest.raises(GitPermanentError, match="authentication failed"):
        store.fetch()
    token_file(tmp_path, TOKEN)
    assert store.fetch().main is not None


def test_server_asking_for_a_token_when_none_is_configured_names_the_token_setting(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    store = open_store(https_remote.url, tmp_path, Credentials(ca_file=trusted_ca.cert))
    with pytest.raises(GitPermanentError) as caught:
        store.fetch()
    assert "--token-file / credentials.tokenFile" in str(caught.value)
    assert "USERPASS" not in str(caught.value)
    assert https_remote.counters.auth_attempts == 0


def test_certificate_from_a_ca_that_is_not_configured_is_refused_as_untrusted_once(
    tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    stranger = CertificateAuthority.create(tmp_path, "stranger-ca")
    cert, key = stranger.issue(tmp_path, "server")
    credentials = Credentials(token_file=token_file(tmp_path, TOKEN), ca_file=trusted_ca.cert)
    with serve_https(tmp_path, cert, key) as remote:
        store = open_store(remote.url, tmp_path, credentials)
        with pytest.raises(GitPermanentError) as caught:
            store.fetch()
    message = str(caught.value)
    assert "is not trusted: it is not signed by any of" in message
    assert CA_SETTING in message
    assert "user rejected" not in message
    assert type(caught.value) is GitPermanentError  # not a TrustChangedError
    # libgit2's connection, then the one that asks why: no retry, no request, no token.
    assert remote.counters.connections == 2
    assert remote.counters.requests == 0


def test_certificate_for_another_host_name_is_refused_as_such_once(
    tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    # libgit2 1.9 says "SSL error: received early EOF" for a certificate whose names are
    # all DNS names when the URL's host is an IP address: it is no network fault.
    cert, key = trusted_ca.issue(tmp_path, "elsewhere", names="DNS:git.elsewhere.example")
    credentials = Credentials(token_file=token_file(tmp_path, TOKEN), ca_file=trusted_ca.cert)
    with serve_https(tmp_path, cert, key) as remote:
        store = open_store(remote.url, tmp_path, credentials)
        with pytest.raises(GitPermanentError) as caught:
            store.fetch()
    message = str(caught.value)
    assert "is for another host name" in message
    assert "127.0.0.1" in message
    assert CA_SETTING in message
    assert "early EOF" not in message
    assert remote.counters.connections == 2
    assert remote.counters.requests == 0


@pytest.mark.parametrize("change", ["another CA file", "no CA file"])
def test_a_changed_ca_setting_refuses_the_next_fetch_of_this_process(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority, change: str
) -> None:
    token = token_file(tmp_path, TOKEN)
    store = open_store(
        https_remote.url, tmp_path, Credentials(token_file=token, ca_file=trusted_ca.cert)
    )
    store.fetch()
    connections = https_remote.counters.connections
    other = None
    if change == "another CA file":
        other = CertificateAuthority.create(tmp_path, "other-ca").cert
    changed = open_store(https_remote.url, tmp_path, Credentials(token_file=token, ca_file=other))

    with pytest.raises(TrustChangedError) as caught:
        changed.fetch()
    assert CA_SETTING in str(caught.value)
    assert "never remove" in str(caught.value)
    assert https_remote.counters.connections == connections  # refused before connecting


def test_new_content_in_the_same_ca_file_refuses_the_next_fetch_of_this_process(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    mounted = tmp_path / "secret" / "ca.crt"  # as a Secret volume holds it
    mounted.parent.mkdir()
    shutil.copyfile(trusted_ca.cert, mounted)
    credentials = Credentials(token_file=token_file(tmp_path, TOKEN), ca_file=mounted)
    store = open_store(https_remote.url, tmp_path, credentials)
    assert store.fetch().main is not None  # same content as the CA loaded: no change
    shutil.copyfile(CertificateAuthority.create(tmp_path, "rotated-ca").cert, mounted)

    with pytest.raises(TrustChangedError, match=r"credentials\.caFile"):
        store.fetch()
    shutil.copyfile(trusted_ca.cert, mounted)  # rotated back: trusted as before
    assert store.fetch().main is not None


def test_token_in_the_url_is_used_from_memory_and_never_written_to_disk(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    url = https_remote.url.replace("https://", f"https://x-access-token:{TOKEN}@")
    store = open_store(url, tmp_path, Credentials(ca_file=trusted_ca.cert))
    assert store.fetch().main == rev_parse(https_remote.repo, "main")
    store.update_branch("main", lambda _tip: [CommitSpec("token from the url", {"u": b"1"})])

    cache = tmp_path / "cache.git"
    assert f"url = {https_remote.url}\n" in (cache / "config").read_text()
    written = [p for p in cache.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert written == []


def test_userinfo_in_the_url_never_appears_in_errors_or_logs(
    https_remote: HTTPSRemote, tmp_path: Path, trusted_ca: CertificateAuthority
) -> None:
    url = https_remote.url.replace("https://", "https://someone:pa55-in-url@")
    store = open_store(url, tmp_path, Credentials(ca_file=trusted_ca.cert))
    assert store.url == https_remote.url
    with capture_logs() as logs, pytest.raises(GitPermanentError) as caught:
        store.fetch()
    assert "authentication failed" in str(caught.value)
    assert "pa55-in-url" not in f"{caught.value} {caught.value!r} {logs!r}"


@pytest.mark.parametrize(
    ("credentials", "url", "message"),
    [
        (Credentials(token_file=Path("t")), "http://example.test/env.git", "never plain http"),
        (None, "http://u:token@example.test/env.git", "never plain http"),
        (Credentials(token_file=Path("t")), "ssh://git@example.test/env.git", "unusable with ssh"),
        (Credentials(token_file=Path("t")), "git@example.test:org/env.git", "unusable with ssh"),
        (
            Credentials(ssh_key_file=Path("k")),
            "https://example.test/env.git",
            "unusable with https",
        ),
        (
            Credentials(token_file=Path("/absent")),
            "https://example.test/e.git",
            "--token-file / credentials.tokenFile names /absent: no such file",
        ),
        (
            Credentials(ssh_key_file=Path("k")),
            "ssh://git@example.test/env.git",
            f"give a known_hosts file with {KNOWN_HOSTS_SETTING}",
        ),
        (None, "git@example.test:org/env.git", "~/.ssh/known_hosts is never used"),
    ],
)
def test_credentials_unusable_for_the_url_are_refused_at_open(
    credentials: Credentials | None, url: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(GitPermanentError, match=message):
        GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR, credentials=credentials)


# -- SSH: sshd on loopback, running as the current user ---------------------------------


@dataclass(frozen=True)
class SSHServer:
    port: int
    directory: Path
    client_key: Path
    host_key: Path
    known_hosts: Path
    log: Path
    user: str

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo}"

    def known_hosts_with(self, public_key: Path, name: str, *, host: str | None = None) -> Path:
        """A known_hosts file naming ``public_key`` for ``host`` (default: ``[127.0.0.1]:port``)."""
        path = self.directory / name
        path.write_text(f"{host or f'[127.0.0.1]:{self.port}'} {public_key.read_text()}")
        return path

    def connections(self) -> int:
        """Connections sshd has accepted so far (its log at LogLevel VERBOSE)."""
        return self.log.read_text(errors="replace").count("Connection from 127.0.0.1")


def keygen(path: Path, kind: str = "ed25519") -> Path:
    ssh_keygen = require_binary("ssh-keygen", "openssh-client")
    subprocess.run(
        [ssh_keygen, "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
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
                host_key=host_key,
                known_hosts=directory / "known_hosts",
                log=log,
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


def ssh_store(sshd: SSHServer, repo: Path, tmp_path: Path, known_hosts: Path) -> GitEnvStore:
    credentials = Credentials(ssh_key_file=sshd.client_key, ssh_known_hosts_file=known_hosts)
    return GitEnvStore.open(
        sshd.url(repo), tmp_path / "cache.git", author=AUTHOR, credentials=credentials
    )


def test_ssh_fetch_and_push_with_key_and_known_hosts(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    home_before = pygit2.settings.homedir
    store = ssh_store(sshd, ssh_repo, tmp_path, sshd.known_hosts)
    assert store.fetch().main == rev_parse(ssh_repo, "main")
    result = store.update_branch("main", lambda _tip: [CommitSpec("over ssh", {"f": b"1"})])
    assert result.tip == rev_parse(ssh_repo, "main")
    assert pygit2.settings.homedir == home_before


def test_known_hosts_file_is_read_at_each_use_so_a_removed_host_key_is_refused_at_once(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    mounted = tmp_path / "known_hosts"  # as a Secret volume holds it
    shutil.copyfile(sshd.known_hosts, mounted)
    store = ssh_store(sshd, ssh_repo, tmp_path, mounted)
    assert store.fetch().main is not None
    shutil.copyfile(
        sshd.known_hosts_with(keygen(tmp_path / "new").with_suffix(".pub"), "new"), mounted
    )
    with pytest.raises(GitPermanentError, match="is not trusted"):
        store.fetch()
    shutil.copyfile(sshd.known_hosts, mounted)
    assert store.fetch().main is not None


def test_ssh_hashed_known_hosts_entry_for_the_port_is_accepted(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    hashed = tmp_path / "known_hosts"
    shutil.copyfile(sshd.known_hosts, hashed)
    subprocess.run(
        [require_binary("ssh-keygen", "openssh-client"), "-q", "-H", "-f", str(hashed)],
        check=True,
        capture_output=True,
    )
    assert hashed.read_text().startswith("|1|")
    assert ssh_store(sshd, ssh_repo, tmp_path, hashed).fetch().main is not None


def test_ssh_known_hosts_entry_for_port_22_does_not_vouch_for_another_port(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    plain = sshd.known_hosts_with(sshd.host_key.with_suffix(".pub"), "plain", host="127.0.0.1")
    store = ssh_store(sshd, ssh_repo, tmp_path, plain)
    before = sshd.connections()
    with pytest.raises(GitPermanentError) as caught:
        store.fetch()
    message = str(caught.value)
    assert f"holds no usable host key for [127.0.0.1]:{sshd.port}" in message
    assert "vouches for port 22 only" in message
    assert KNOWN_HOSTS_SETTING in message
    assert sshd.connections() == before  # refused before connecting


@pytest.mark.parametrize("known_hosts", ["another ed25519 key", "empty"])
def test_ssh_host_key_not_in_known_hosts_is_refused_permanently(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path, known_hosts: str
) -> None:
    if known_hosts == "empty":
        path = tmp_path / "known_hosts"
        path.write_text("")
        expected = "holds no usable host key"
    else:
        path = sshd.known_hosts_with(keygen(tmp_path / "impostor").with_suffix(".pub"), "other")
        expected = rf"SSH host key of \[127\.0\.0\.1\]:{sshd.port} is not trusted"
    with pytest.raises(GitPermanentError, match=expected) as caught:
        ssh_store(sshd, ssh_repo, tmp_path, path).fetch()
    assert KNOWN_HOSTS_SETTING in str(caught.value)


def test_ssh_host_key_of_another_type_is_a_permanent_error_naming_both_types(
    sshd: SSHServer, ssh_repo: Path, tmp_path: Path
) -> None:
    ecdsa = keygen(tmp_path / "ecdsa", "ecdsa").with_suffix(".pub")
    store = ssh_store(sshd, ssh_repo, tmp_path, sshd.known_hosts_with(ecdsa, "ecdsa-only"))
    before = sshd.connections()
    with pytest.raises(GitPermanentError) as caught:
        store.fetch()
    message = str(caught.value)
    assert "offers no host key of the type(s)" in message
    assert "it holds ecdsa-sha2-nistp256, the server offers ssh-ed25519" in message
    assert KNOWN_HOSTS_SETTING in message
    assert sshd.connections() - before == 2  # libgit2's, then the one that asks: no retry


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
