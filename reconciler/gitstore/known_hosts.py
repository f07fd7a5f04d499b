"""Which known_hosts entries vouch for one SSH server, by OpenSSH's rules.

libssh2 (through libgit2) looks a server up as ``[host]:port`` and, when that finds
nothing, as the plain ``host``: an entry written for port 22 would vouch for every port of
the host. OpenSSH matches one name only: ``host`` for port 22, ``[host]:port`` for any
other. ``select`` applies OpenSSH's rule to a known_hosts file and returns the entries
that vouch for exactly this host and port, rewritten under the one name libssh2 looks up
first, so nothing else in the file can match. Pure: no I/O, no pygit2.

What OpenSSH's format (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT) holds, and what is done:

- ``host1,host2,...``: comma-separated patterns with ``*`` and ``?`` wildcards, compared
  without regard to case; a matching ``!pattern`` excludes the line.
- ``|1|salt|hash`` (hashed names, ``ssh-keygen -H``): matched by HMAC-SHA1 of the name,
  keyed by the salt.
- ``@revoked``: the key on the line must never be accepted for the hosts it names. Its key
  is removed from the selection, so a server presenting it matches nothing and is refused;
  the name of the revoked key types is kept for messages.
- ``@cert-authority``: trusts host *certificates* signed by the key. libgit2 does not
  verify host certificates, so such lines are dropped (they can vouch for nothing here).
- key types libgit2 cannot check (security keys, certificates, RSA1 lines) are dropped.
- comments, blank and malformed lines are dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PORT",
    "KEY_TYPE_OF_ALGORITHM",
    "SUPPORTED_KEY_TYPES",
    "Selection",
    "lookup_name",
    "select",
]

DEFAULT_PORT = 22
SUPPORTED_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "ssh-dss",
    }
)
"""The host key types libssh2 reads from known_hosts and libgit2 can check."""
KEY_TYPE_OF_ALGORITHM = {
    **{kind: kind for kind in SUPPORTED_KEY_TYPES},
    "rsa-sha2-256": "ssh-rsa",
    "rsa-sha2-512": "ssh-rsa",
}
"""The known_hosts key type that a host key algorithm a server offers signs with."""
_MARKERS = frozenset({"@revoked", "@cert-authority"})
_HASHED = "|1|"


def lookup_name(host: str, port: int) -> str:
    """The one name OpenSSH looks ``host``:``port`` up under."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


@dataclass(frozen=True)
class Selection:
    """The entries of a known_hosts file that vouch for one host and port."""

    name: str
    """The name looked up: ``host`` or ``[host]:port``."""
    keys: tuple[tuple[str, str], ...] = ()
    """(key type, base64 key) of each key accepted for the server, in file order."""
    revoked: tuple[str, ...] = ()
    """Key types of the ``@revoked`` keys that matched the name."""
    dropped: tuple[str, ...] = field(default=())
    """Why lines naming the server were not kept (``@cert-authority``, an unusable type)."""

    @property
    def key_types(self) -> tuple[str, ...]:
        """The distinct key types accepted for the server, in file order."""
        return tuple(dict.fromkeys(kind for kind, _ in self.keys))

    def render(self) -> str:
        """The selected keys as a known_hosts file, each under ``name`` alone.

        ``name`` keeps the host as written in the URL: libgit2 hands libssh2 that spelling.
        """
        return "".join(f"{self.name} {kind} {key}\n" for kind, key in self.keys)


def select(text: str, host: str, port: int) -> Selection:
    """The entries of the known_hosts ``text`` that OpenSSH would use for ``host``:``port``."""
    name = lookup_name(host, port)
    wanted = name.lower()
    kept: list[tuple[str, str]] = []
    revoked: dict[str, str] = {}
    dropped: list[str] = []
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if (marker is not None and marker not in _MARKERS) or len(fields) < 3:  # noqa: PLR2004
            continue
        patterns, kind, key = fields[0], fields[1], fields[2]
        if not _matches(wanted, patterns):
            continue
        if marker == "@revoked":
            revoked[key] = kind
        elif marker == "@cert-authority":
            dropped.append(f"@cert-authority {kind} (host certificates are not supported)")
        elif kind not in SUPPORTED_KEY_TYPES:
            dropped.append(f"{kind} (a key type libgit2 cannot check)")
        else:
            kept.append((kind, key))
    return Selection(
        name=name,
        keys=tuple(dict.fromkeys(k for k in kept if k[1] not in revoked)),
        revoked=tuple(revoked.values()),
        dropped=tuple(dropped),
    )


def _matches(name: str, patterns: str) -> bool:
    """Whether the lower-case ``name`` matches a line's host field (OpenSSH's match_hostname)."""
    if patterns.startswith(_HASHED):
        return _hash_matches(name, patterns)
    positive = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _glob(pattern[1:] if negated else pattern).fullmatch(name):
            if negated:
                return False
            positive = True
    return positive


def _glob(pattern: str) -> re.Pattern[str]:
    # OpenSSH's wildcards are * and ? only: brackets ([host]:port) are literal.
    parts = ("." if ch == "?" else ".*" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _hash_matches(name: str, field_text: str) -> bool:
    parts = field_text[len(_HASHED) :].split("|")
    if len(parts) != 2:  # noqa: PLR2004 - salt and hash
        return False
    try:
        salt, digest = (base64.b64decode(part, validate=True) for part in parts)
    except (binascii.Error, ValueError):
        return False
    mine = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(mine, digest)
