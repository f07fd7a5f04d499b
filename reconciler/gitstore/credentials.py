"""How the store proves who it is to the Env repo's server, and checks who the server is.

``Credentials`` names files (a token for HTTPS, a key for SSH, a known_hosts file, a CA
bundle), never their content: secrets are read at each use, so a rotated Kubernetes Secret
is picked up without a restart. ``CredentialCallbacks`` answers libgit2's credentials
request once per operation (a second request for the same URL means the server refused,
and is reported as "authentication failed" instead of being retried 15 times) and returns
libgit2's own certificate verdict. ``libgit2_settings`` applies the process-wide libgit2
settings a connection needs (the CA bundle, a private home whose ``.ssh/known_hosts`` is
the configured file). This module must never accept an invalid certificate or unknown host
key, and never put a token, key content or a URL with userinfo in a message or a log.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pygit2
from pygit2.enums import CredentialType

from reconciler.errors import GitPermanentError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CredentialCallbacks",
    "Credentials",
    "check_usable",
    "libgit2_settings",
    "redact_url",
    "scrub",
    "url_scheme",
]

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?[^/:]+:(?!//)")
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_SETTINGS_LOCK = threading.RLock()
"""Guards libgit2's process-wide settings (home directory, CA locations)."""
_LOADED_CAS: set[tuple[str, bytes]] = set()


@dataclass(frozen=True)
class Credentials:
    """Where the secrets and trust anchors for one Env repo live (paths, never content).

    ``token_file`` is for HTTPS (sent as the password of ``username``, or of the user named
    in the URL); ``ssh_key_file`` (with an optional public key and passphrase file) for
    SSH; ``ssh_known_hosts_file`` holds the server's host key; ``ca_file`` a CA bundle
    trusted in addition to the system's.
    """

    token_file: Path | None = None
    username: str = "x-access-token"
    ssh_key_file: Path | None = None
    ssh_public_key_file: Path | None = None
    ssh_passphrase_file: Path | None = None
    ssh_known_hosts_file: Path | None = None
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        """Reject combinations that cannot work (a public key without its private key)."""
        if self.ssh_key_file is None and (
            self.ssh_public_key_file is not None or self.ssh_passphrase_file is not None
        ):
            raise ValueError("ssh_public_key_file and ssh_passphrase_file need ssh_key_file")
        if not self.username or any(ch in self.username for ch in ":@/\n"):
            raise ValueError(f"invalid HTTPS username {self.username!r}")


def url_scheme(url: str) -> str:
    """The transport ``url`` uses: ``https``, ``http``, ``ssh``, ``git`` or ``file``.

    scp-like addresses (``git@host:org/repo.git``) are ``ssh``; paths are ``file``.
    """
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        return "ssh" if scheme in _SSH_SCHEMES else scheme
    if _SCP_LIKE.match(url):
        return "ssh"
    return "file"


def redact_url(url: str) -> str:
    """``url`` without userinfo, query or fragment: safe to show in messages and logs."""
    if "://" in url:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    if _SCP_LIKE.match(url):
        return re.sub(r"^[^@/]+@", "", url)
    return url


def scrub(text: str, url: str) -> str:
    """``text`` (a libgit2 message, say) without ``url``'s userinfo and query.

    Over HTTP(S) the user part may itself be a token, so all of the userinfo goes; over
    SSH the user is a login name (``git``) and only the URL is shortened.
    """
    if "://" not in url:
        return text
    parts = urlsplit(url)
    text = text.replace(url, redact_url(url))
    secrets = [parts.query]
    if url_scheme(url) != "ssh":
        secrets.append(parts.netloc.rpartition("@")[0])
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def check_usable(credentials: Credentials | None, url: str) -> None:
    """Fail early when ``credentials`` cannot serve ``url``'s transport.

    Raises:
        GitPermanentError: a token for a non-HTTPS URL (a token never travels in clear
            text), an SSH key for a non-SSH URL, or a configured file that is missing.
    """
    if credentials is None:
        return
    scheme, shown = url_scheme(url), redact_url(url)
    usable = credentials.token_file is None and credentials.ssh_key_file is None
    if credentials.token_file is not None:
        usable = usable or scheme == "https"
        if scheme == "http":
            raise GitPermanentError(
                f"{shown}: a token is only sent over https://, never plain http://"
            )
    if credentials.ssh_key_file is not None:
        usable = usable or scheme == "ssh"
    if not usable:
        given = " and ".join(
            name
            for name, path in (
                ("a token (HTTPS)", credentials.token_file),
                ("an SSH key", credentials.ssh_key_file),
            )
            if path is not None
        )
        raise GitPermanentError(f"{shown}: credentials give {given}, unusable with {scheme}")
    for name in ("token_file", "ssh_key_file", "ssh_known_hosts_file", "ca_file"):
        path = getattr(credentials, name)
        if path is not None and not Path(path).is_file():
            raise GitPermanentError(f"{shown}: {name} {path} does not exist")


def _read_secret(path: Path, what: str, url: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise GitPermanentError(
            f"{url}: cannot read the {what} file {path}: {exc.strerror}"
        ) from None
    if not value:
        raise GitPermanentError(f"{url}: the {what} file {path} is empty")
    return value


class CredentialCallbacks(pygit2.RemoteCallbacks):
    """libgit2 callbacks for one fetch or push: answer credentials once, trust libgit2."""

    def __init__(self, credentials: Credentials | None) -> None:
        """Callbacks for one network operation; make a new one for each operation."""
        super().__init__()
        self._secrets = credentials
        self._answered: set[str] = set()
        self.refused_host: str | None = None
        """Host whose certificate or host key failed the check, if any."""

    def credentials(
        self,
        url: str,
        username_from_url: str | None,
        allowed_types: CredentialType,
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        """Answer libgit2's request; a second request for ``url`` means it was refused."""
        shown = redact_url(url)
        secret_types = CredentialType.USERPASS_PLAINTEXT | CredentialType.SSH_KEY
        if allowed_types & CredentialType.USERNAME and not allowed_types & secret_types:
            # SSH asks for the user name first; that is no secret and no refusal.
            return pygit2.Username(username_from_url or "git")
        if url in self._answered:
            raise GitPermanentError(f"authentication failed for {shown}")
        creds = self._secrets
        if creds is None:
            raise GitPermanentError(f"{shown} asks for credentials and none are configured")
        if allowed_types & CredentialType.USERPASS_PLAINTEXT and creds.token_file is not None:
            token = _read_secret(creds.token_file, "token", shown)
            self._answered.add(url)
            return pygit2.UserPass(username_from_url or creds.username, token)
        if allowed_types & CredentialType.SSH_KEY and creds.ssh_key_file is not None:
            passphrase = None
            if creds.ssh_passphrase_file is not None:
                passphrase = _read_secret(creds.ssh_passphrase_file, "passphrase", shown)
            public = creds.ssh_public_key_file
            beside = creds.ssh_key_file.with_name(creds.ssh_key_file.name + ".pub")
            if public is None and beside.is_file():
                public = beside
            self._answered.add(url)
            return pygit2.Keypair(
                username_from_url or "git",
                str(public) if public is not None else None,
                str(creds.ssh_key_file),
                passphrase,
            )
        wanted = ", ".join(t.name or "?" for t in CredentialType if t & allowed_types)
        raise GitPermanentError(
            f"{shown} accepts {wanted}; the configured credentials offer none of these"
        )

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:  # noqa: ARG002
        """Return libgit2's verdict unchanged: an invalid certificate or host key is refused.

        pygit2's default accepts any SSH host key; libgit2 computes ``valid`` from the CA
        store (TLS) or from ``~/.ssh/known_hosts`` (SSH), which ``libgit2_settings`` points
        at the configured file.
        """
        if not valid:
            self.refused_host = host.decode("utf-8", "replace")
        return valid


def _load_ca(ca_file: Path) -> None:
    try:
        digest = hashlib.sha256(ca_file.read_bytes()).digest()
    except OSError as exc:
        raise GitPermanentError(f"cannot read the CA file {ca_file}: {exc.strerror}") from None
    key = (str(ca_file), digest)
    with _SETTINGS_LOCK:
        if key in _LOADED_CAS:
            return
        # Adds to the CA store pygit2 filled from Python's defaults at import time.
        pygit2.settings.set_ssl_cert_locations(str(ca_file), None)
        _LOADED_CAS.add(key)


@contextmanager
def libgit2_settings(credentials: Credentials | None, url: str) -> Iterator[None]:
    """Apply the process-wide libgit2 settings one operation on ``url`` needs.

    A CA bundle is added to the trusted CAs (once per content). For SSH the operation runs
    with libgit2's home directory pointed at a private temporary directory whose
    ``.ssh/known_hosts`` is a fresh copy of the configured file; the home directory is
    process-wide, so SSH operations hold a lock and restore it afterwards.
    """
    if credentials is not None and credentials.ca_file is not None:
        _load_ca(credentials.ca_file)
    if url_scheme(url) != "ssh":
        yield
        return
    known_hosts = credentials.ssh_known_hosts_file if credentials is not None else None
    with _SETTINGS_LOCK:
        if known_hosts is None:
            yield
            return
        with tempfile.TemporaryDirectory(prefix="reconciler-ssh-") as home:
            ssh_dir = Path(home, ".ssh")
            ssh_dir.mkdir(mode=0o700)
            try:
                shutil.copyfile(known_hosts, ssh_dir / "known_hosts")
            except OSError as exc:
                raise GitPermanentError(
                    f"{redact_url(url)}: cannot read known_hosts {known_hosts}: {exc.strerror}"
                ) from None
            previous = pygit2.settings.homedir
            pygit2.settings.homedir = home
            try:
                yield
            finally:
                pygit2.settings.homedir = previous if previous is not None else str(Path.home())
