"""How the store proves who it is to the Env repo's server.

``Credentials`` names files (a token for HTTPS, a key for SSH, a known_hosts file, a CA
bundle), never their content: secrets are read at each use, so a rotated Kubernetes Secret
is picked up without a restart. A user name and token written in the URL itself
(``https://user:token@host/repo.git``) are split off by ``split_login``: the URL without
them is what the cache stores on disk, and ``CredentialCallbacks`` answers libgit2 from
memory. ``CredentialCallbacks`` answers libgit2's credentials request once per operation
(a second request for the same URL means the server refused, and is reported as
"authentication failed" instead of being retried 15 times) and returns libgit2's own
certificate verdict. Messages name the settings a person changes (``--token-file /
credentials.tokenFile``), never libgit2's names. This module must never accept an invalid
certificate or unknown host key, and never put a token, key content or a URL with
userinfo in a message or a log. (What the process trusts, the CA and the known hosts, is
``trust``'s job.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pygit2
from pygit2.enums import CredentialType
from pygit2.remotes import PushUpdate

from reconciler.config import CredentialSettings, describe
from reconciler.errors import GitPermanentError
from reconciler.gitstore.known_hosts import DEFAULT_PORT

__all__ = [
    "DEFAULT_USERNAME",
    "CredentialCallbacks",
    "Credentials",
    "Login",
    "check_usable",
    "no_known_hosts",
    "redact_url",
    "scrub",
    "setting",
    "split_login",
    "ssh_address",
    "url_scheme",
]

DEFAULT_USERNAME = "x-access-token"
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?[^/:]+:(?!//)")
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_SETTINGS = {
    "token_file": "token_file",
    "username": "username",
    "ssh_key_file": "ssh_key_file",
    "ssh_known_hosts_file": "known_hosts_file",
    "ca_file": "ca_file",
}
"""``Credentials`` fields that are settings of ``reconciler run`` (and flags of every
command that opens the Env repo), by the setting's name."""
_NOT_SETTINGS = {
    "ssh_public_key_file": "the SSH public key file",
    "ssh_passphrase_file": "the SSH key passphrase file",
}


@dataclass(frozen=True)
class Credentials:
    """Where the secrets and trust anchors for one Env repo live (paths, never content).

    ``token_file`` is for HTTPS (sent as the password of ``username``, or of the user named
    in the URL); ``ssh_key_file`` (with an optional public key and passphrase file) for
    SSH; ``ssh_known_hosts_file`` holds the server's host key; ``ca_file`` a CA bundle
    trusted in addition to the system's.
    """

    token_file: Path | None = None
    username: str = DEFAULT_USERNAME
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

    @classmethod
    def from_settings(cls, settings: CredentialSettings) -> Credentials | None:
        """The credentials the ``credentials`` settings name (None: none are)."""
        if not settings.configured:
            return None
        return cls(
            token_file=settings.token_file,
            username=settings.username,
            ssh_key_file=settings.ssh_key_file,
            ssh_known_hosts_file=settings.known_hosts_file,
            ca_file=settings.ca_file,
        )


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
    SSH the user is a login name (``git``): only a password goes, and the URL is shortened.
    """
    if "://" not in url:
        return text
    parts = urlsplit(url)
    text = text.replace(url, redact_url(url))
    userinfo = parts.netloc.rpartition("@")[0]
    secrets = [parts.query]
    secrets.append(userinfo.partition(":")[2] if url_scheme(url) == "ssh" else userinfo)
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def setting(name: str) -> str:
    """How messages name the ``Credentials`` field ``name``: ``--ca-file / credentials.caFile``."""
    return describe(_SETTINGS[name]) if name in _SETTINGS else _NOT_SETTINGS.get(name, name)


@dataclass(frozen=True)
class Login:
    """A user name and password (a token) written in the URL; kept in memory only."""

    user: str | None
    password: str | None = field(default=None, repr=False)


def split_login(url: str) -> tuple[str, Login | None]:
    """``url`` without the secrets of its userinfo, and those secrets (None: there are none).

    Over HTTP(S) all of the userinfo goes (the user part may itself be a token); over SSH
    the login name stays in the URL (libgit2 needs it, it is no secret) and only a password
    goes. Percent-escapes in the userinfo are decoded, as libgit2 would.
    """
    if "://" not in url:
        return url, None
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, colon, password = userinfo.partition(":")
    login = Login(unquote(user) or None, unquote(password) if colon else None)
    if url_scheme(url) == "ssh":
        if login.password is None:
            return url, None
        netloc = f"{user}@{host}" if user else host
    else:
        netloc = host
    return urlunsplit(parts._replace(netloc=netloc)), login


def ssh_address(url: str) -> tuple[str, int]:
    """The host (as written, without brackets) and port an SSH URL connects to."""
    if "://" in url:
        netloc = urlsplit(url).netloc.rpartition("@")[2]
        if netloc.startswith("["):
            host, _, rest = netloc[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = netloc.partition(":")
        return host, int(port) if port.isdigit() else DEFAULT_PORT
    match = _SCP_LIKE.match(url)
    address = match.group(0)[:-1] if match else url
    return address.rpartition("@")[2], DEFAULT_PORT


def check_usable(credentials: Credentials | None, url: str) -> None:
    """Fail early when ``credentials`` cannot serve ``url``'s transport.

    Raises:
        GitPermanentError: a token for a non-HTTPS URL (a token never travels in clear
            text), an SSH key for a non-SSH URL, an SSH URL without known_hosts (the
            server could not be checked), or a configured file that is missing.
    """
    scheme, shown = url_scheme(url), redact_url(url)
    _, login = split_login(url)
    if scheme == "http" and (
        (login is not None and login.password is not None)
        or (credentials is not None and credentials.token_file is not None)
    ):
        raise GitPermanentError(
            f"{shown}: a token ({setting('token_file')}, or in the URL) is only sent over "
            "https://, never plain http://"
        )
    if credentials is not None:
        _check_transport(credentials, scheme, shown)
    if scheme == "ssh" and (credentials is None or credentials.ssh_known_hosts_file is None):
        raise no_known_hosts(shown)
    if credentials is None:
        return
    for name in ("token_file", "ssh_key_file", "ssh_known_hosts_file", "ca_file"):
        path = getattr(credentials, name)
        if path is not None and not Path(path).is_file():
            raise GitPermanentError(f"{shown}: {setting(name)} names {path}: no such file")


def no_known_hosts(shown: str) -> GitPermanentError:
    """The refusal of an SSH URL (``shown``, without userinfo) with no known_hosts file."""
    return GitPermanentError(
        f"{shown}: an SSH server is only trusted by its host key: give a known_hosts file "
        f"with {setting('ssh_known_hosts_file')} (~/.ssh/known_hosts is never used)"
    )


def _check_transport(credentials: Credentials, scheme: str, shown: str) -> None:
    usable = credentials.token_file is None and credentials.ssh_key_file is None
    if credentials.token_file is not None:
        usable = usable or scheme == "https"
    if credentials.ssh_key_file is not None:
        usable = usable or scheme == "ssh"
    if not usable:
        given = " and ".join(
            f"{what} ({setting(name)})"
            for what, name, path in (
                ("a token", "token_file", credentials.token_file),
                ("an SSH key", "ssh_key_file", credentials.ssh_key_file),
            )
            if path is not None
        )
        raise GitPermanentError(f"{shown}: credentials give {given}, unusable with {scheme}")


def _read_secret(path: Path, name: str, url: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise GitPermanentError(
            f"{url}: cannot read {setting(name)} ({path}): {exc.strerror}"
        ) from None
    if not value:
        raise GitPermanentError(f"{url}: {setting(name)} ({path}) is empty")
    return value


class CredentialCallbacks(pygit2.RemoteCallbacks):
    """libgit2 callbacks for one fetch or push: answer credentials once, trust libgit2."""

    def __init__(
        self,
        credentials: Credentials | None,
        login: Login | None = None,
        *,
        on_connect: Callable[[], object] | None = None,
    ) -> None:
        """Callbacks for one network operation; make a new one for each operation.

        ``login`` is the user and token split off the URL (``split_login``): its token is
        offered before ``credentials.token_file``. ``on_connect`` runs at the first
        callbacks libgit2 makes on a connection (the certificate check, a push's
        negotiation): ``Remote`` sets ``TCP_NODELAY`` there (``sockets``).
        """
        super().__init__()
        self._secrets = credentials
        self._login = login
        self._on_connect = on_connect
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
        if self._on_connect is not None:  # plain HTTP has no certificate check before this
            self._on_connect()
        shown = redact_url(url)
        login = self._login or Login(None)
        creds = self._secrets
        secret_types = CredentialType.USERPASS_PLAINTEXT | CredentialType.SSH_KEY
        if allowed_types & CredentialType.USERNAME and not allowed_types & secret_types:
            # SSH asks for the user name first; that is no secret and no refusal.
            return pygit2.Username(username_from_url or login.user or "git")
        if url in self._answered:
            raise GitPermanentError(f"authentication failed for {shown}")
        if allowed_types & CredentialType.USERPASS_PLAINTEXT:
            user = username_from_url or login.user
            user = user or (creds.username if creds is not None else DEFAULT_USERNAME)
            if login.password is not None:
                self._answered.add(url)
                return pygit2.UserPass(user, login.password)
            if creds is not None and creds.token_file is not None:
                token = _read_secret(creds.token_file, "token_file", shown)
                self._answered.add(url)
                return pygit2.UserPass(user, token)
        if (
            allowed_types & CredentialType.SSH_KEY
            and creds is not None
            and creds.ssh_key_file is not None
        ):
            return self._keypair(creds, creds.ssh_key_file, username_from_url, url, shown)
        raise GitPermanentError(f"{shown} asks for {_wanted(allowed_types)}")

    def _keypair(
        self,
        creds: Credentials,
        key_file: Path,
        username_from_url: str | None,
        url: str,
        shown: str,
    ) -> pygit2.Keypair:
        passphrase = None
        if creds.ssh_passphrase_file is not None:
            passphrase = _read_secret(creds.ssh_passphrase_file, "ssh_passphrase_file", shown)
        public = creds.ssh_public_key_file
        beside = key_file.with_name(key_file.name + ".pub")
        if public is None and beside.is_file():
            public = beside
        self._answered.add(url)
        return pygit2.Keypair(
            username_from_url or "git",
            str(public) if public is not None else None,
            str(key_file),
            passphrase,
        )

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:  # noqa: ARG002
        """Return libgit2's verdict unchanged: an invalid certificate or host key is refused.

        pygit2's default accepts any SSH host key; libgit2 computes ``valid`` from the CA
        store (TLS) or from ``~/.ssh/known_hosts`` (SSH), which ``trust.libgit2_settings``
        points at the entries of the configured file that vouch for this server.
        """
        if not valid:
            self.refused_host = host.decode("utf-8", "replace")
        elif self._on_connect is not None:
            self._on_connect()
        return valid

    def push_negotiation(self, updates: list[PushUpdate]) -> None:  # noqa: ARG002
        """Before a push writes its commands: the connection is open (``on_connect``)."""
        if self._on_connect is not None:
            self._on_connect()


def _wanted(allowed: CredentialType) -> str:
    """What a server asking for ``allowed`` wants, in settings, never libgit2's names."""
    offers = []
    if allowed & CredentialType.USERPASS_PLAINTEXT:
        offers.append(f"a user name and token: give {setting('token_file')}")
    if allowed & CredentialType.SSH_KEY:
        offers.append(f"an SSH key: give {setting('ssh_key_file')}")
    if not offers:
        return (
            "a kind of login the reconciler does not offer (only a token over HTTPS or an "
            "SSH key are supported)"
        )
    return " or ".join(offers)
