"""What libgit2 trusts for one operation: the configured CA bundle, the configured known hosts.

libgit2 keeps one CA store for the whole process, filled at pygit2's import with the
system's CAs; ``set_ssl_cert_locations`` *adds* to it and nothing removes from it. So the
process remembers the one bundle it added (by content: a path that moves without a change
of content changes no trust), adds the configured bundle when it has added none, and raises
``TrustChangedError`` when the configured bundle (the setting, or the file's content: a
rotated Secret) is no longer the one it added. Only a new process trusts the system's CAs
plus exactly the configured bundle; ``reconciler run`` re-executes itself on that error.

For SSH, libgit2 reads ``~/.ssh/known_hosts`` under its home directory setting, which is
process-wide too: each operation runs with the home pointed at a private temporary
directory whose ``.ssh/known_hosts`` holds only the entries of the configured file that
OpenSSH would use for this host and port (``known_hosts.select``), read afresh each time.
Without a configured file an SSH operation is refused: libgit2 would read the user's own
``~/.ssh/known_hosts`` otherwise. This module must never widen trust beyond the
configuration: no CA kept silently, no host key for another port.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from reconciler.errors import GitPermanentError, TrustChangedError
from reconciler.gitstore.credentials import (
    Credentials,
    no_known_hosts,
    redact_url,
    setting,
    ssh_address,
    url_scheme,
)
from reconciler.gitstore.known_hosts import DEFAULT_PORT, Selection, lookup_name, select

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["SSHTarget", "libgit2_settings", "trust_ca"]

_TLS_SCHEMES = frozenset({"https", "http"})
"""Schemes whose operations may use the CA store (http: a redirect may lead to https)."""
_SETTINGS_LOCK = threading.RLock()
"""Guards libgit2's process-wide settings (home directory, CA store)."""


@dataclass(frozen=True)
class _Bundle:
    """A CA bundle as it was read: where from, and a digest of its content."""

    path: str
    digest: str

    def __str__(self) -> str:
        return f"{self.path} (sha256 {self.digest[:12]})"


class _Loaded:
    """The bundle this process added to libgit2's CA store (None: only the system's CAs)."""

    bundle: _Bundle | None = None


_LOADED = _Loaded()


def trust_ca(ca_file: Path | None) -> None:
    """Make libgit2 trust the system's CAs plus ``ca_file``'s, as the configuration says.

    Raises:
        TrustChangedError: this process added another bundle (another file, or the same
            file with other content), or one while none is configured now: libgit2 cannot
            forget it, only a new process can.
        GitPermanentError: ``ca_file`` cannot be read or holds no certificate.
    """
    wanted: _Bundle | None = None
    content = b""
    if ca_file is not None:
        try:
            content = ca_file.read_bytes()
        except OSError as exc:
            raise GitPermanentError(
                f"cannot read {setting('ca_file')} ({ca_file}): {exc.strerror}"
            ) from None
        wanted = _Bundle(str(ca_file), hashlib.sha256(content).hexdigest())
    with _SETTINGS_LOCK:
        loaded = _LOADED.bundle
        if loaded is None:
            if wanted is not None:
                _load(wanted, content)
            return
        if wanted is None or wanted.digest != loaded.digest:
            raise TrustChangedError(
                f"{setting('ca_file')} is now {wanted or 'not set'}, but this process "
                f"already trusts {loaded}: libgit2 can add a CA but never remove one, so "
                "only a new process stops trusting the old one"
            )


def _load(bundle: _Bundle, content: bytes) -> None:
    # The bytes that were hashed are the bytes loaded: a Secret rotated in between is
    # seen by the next operation, never trusted unnoticed.
    with tempfile.NamedTemporaryFile(prefix="reconciler-ca-", suffix=".pem") as copy:
        copy.write(content)
        copy.flush()
        try:
            pygit2.settings.set_ssl_cert_locations(copy.name, None)
        except pygit2.GitError as exc:
            raise GitPermanentError(
                f"{setting('ca_file')} ({bundle.path}) holds no usable CA certificate: {exc}"
            ) from None
    _LOADED.bundle = bundle


@dataclass(frozen=True)
class SSHTarget:
    """The SSH server of one operation and the host keys the configuration accepts for it."""

    host: str
    port: int
    known_hosts: Path
    selection: Selection

    @property
    def name(self) -> str:
        """The server as known_hosts names it: ``host`` or ``[host]:port``."""
        return self.selection.name


@contextmanager
def libgit2_settings(credentials: Credentials | None, url: str) -> Iterator[SSHTarget | None]:
    """Apply the process-wide libgit2 settings one operation on ``url`` needs.

    Over HTTP(S) the configured CA bundle is checked against the one in libgit2
    (``trust_ca``). For SSH the operation runs with libgit2's home directory pointed at a
    private directory holding the known_hosts entries for this server; the home directory
    is process-wide, so SSH operations hold a lock and restore it afterwards. Yields the
    SSH server and its accepted keys (None for other transports).

    Raises:
        TrustChangedError: see ``trust_ca``.
        GitPermanentError: no usable CA bundle; for SSH no known_hosts file configured,
            unreadable, or without a usable key for this host and port.
    """
    scheme = url_scheme(url)
    if scheme in _TLS_SCHEMES:
        trust_ca(credentials.ca_file if credentials is not None else None)
    if scheme != "ssh":
        yield None
        return
    target = ssh_target(credentials, url)
    with _SETTINGS_LOCK, tempfile.TemporaryDirectory(prefix="reconciler-ssh-") as home:
        ssh_dir = Path(home, ".ssh")
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "known_hosts").write_text(target.selection.render(), encoding="utf-8")
        previous = pygit2.settings.homedir
        pygit2.settings.homedir = home
        try:
            yield target
        finally:
            pygit2.settings.homedir = previous if previous is not None else str(Path.home())


def ssh_target(credentials: Credentials | None, url: str) -> SSHTarget:
    """The SSH server ``url`` names and the keys the configured known_hosts holds for it.

    Raises:
        GitPermanentError: no known_hosts configured, unreadable, or no usable key in it
            for this host and port (the message says what the file holds instead).
    """
    shown, name = redact_url(url), setting("ssh_known_hosts_file")
    path = credentials.ssh_known_hosts_file if credentials is not None else None
    if path is None:
        raise no_known_hosts(shown)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise GitPermanentError(f"{shown}: cannot read {name} ({path}): {exc.strerror}") from None
    host, port = ssh_address(url)
    selection = select(text, host, port)
    if not selection.keys:
        raise GitPermanentError(f"{shown}: {_no_key(path, text, selection, host=host, port=port)}")
    return SSHTarget(host=host, port=port, known_hosts=path, selection=selection)


def _no_key(path: Path, text: str, found: Selection, *, host: str, port: int) -> str:
    name = setting("ssh_known_hosts_file")
    why = [f"{name} ({path}) holds no usable host key for {found.name}"]
    if found.revoked:
        why.append(f"its keys ({', '.join(found.revoked)}) are @revoked")
    if found.dropped:
        why.append(f"the lines naming it are unusable: {'; '.join(found.dropped)}")
    if port != DEFAULT_PORT and select(text, host, DEFAULT_PORT).keys:
        why.append(
            f"it has a key for {lookup_name(host, DEFAULT_PORT)}, which vouches for port "
            f"{DEFAULT_PORT} only (OpenSSH's rule: any other port is written [host]:port)"
        )
    scan = f"ssh-keyscan -p {port} {host}" if port != DEFAULT_PORT else f"ssh-keyscan {host}"
    why.append(f"add the server's key after checking it, as `{scan}` prints it")
    return "; ".join(why)
