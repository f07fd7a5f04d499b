"""Why the Env repo's server was refused, asked again outside libgit2 after a failure.

libgit2 does not always say why a connection failed: a TLS certificate it refuses reaches
Python as "user rejected certificate" (pygit2 passes no certificate to the callback, and
libgit2 drops its own reason once a callback has answered), a certificate whose names are
all of the other kind (DNS names for an IP address) as "SSL error: received early EOF"
(libgit2 1.9 reads past the certificate's names), and an SSH server without a host key of
the types known_hosts holds as "Unable to exchange encryption keys", the same words as a
connection cut during the key exchange. After such a failure, and only then, one more
connection asks the server directly: ``tls_refusal`` verifies its certificate with
Python's ``ssl`` and the same trust libgit2 has (the system's CAs and the configured
bundle); ``ssh_host_key_algorithms`` reads the host key algorithms from the server's first,
clear-text key exchange message. Neither sends a credential or accepts anything: they
diagnose, the refusal stands.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["TIMEOUT", "TlsRefusal", "ssh_host_key_algorithms", "tls_refusal"]

TIMEOUT = 5.0
"""Seconds a diagnosis may take to connect and complete its exchange."""

# OpenSSL's X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code carries them.
_NAME_MISMATCH = frozenset({62, 63, 64})  # host name, e-mail, IP address
_VALIDITY = frozenset({9, 10})  # not yet valid, expired
_MSG_KEXINIT = 20
_MAX_PACKET = 35000  # RFC 4253 6.1: the largest packet an implementation must accept
_VERSION_LINES = 20  # RFC 4253 4.2: a server may send lines before its version line


@dataclass(frozen=True)
class TlsRefusal:
    """Why a certificate is refused: ``kind`` is ``name``, ``untrusted`` or ``validity``."""

    kind: str
    detail: str
    """OpenSSL's words (``IP address mismatch, certificate is not valid for ...``)."""


def tls_refusal(
    host: str, port: int, ca_file: Path | None, *, timeout: float = TIMEOUT
) -> TlsRefusal | None:
    """Why a TLS client trusting the system's CAs and ``ca_file`` refuses ``host``'s certificate.

    Returns None when the certificate is accepted.

    Raises:
        OSError: the server could not be reached, the handshake failed for another reason
            (``ssl.SSLError``), or ``ca_file`` cannot be loaded.
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        detail = str(exc.verify_message or exc.reason or exc).rstrip(".")
        if exc.verify_code in _NAME_MISMATCH:
            return TlsRefusal("name", detail)
        if exc.verify_code in _VALIDITY:
            return TlsRefusal("validity", detail)
        return TlsRefusal("untrusted", detail)


def ssh_host_key_algorithms(host: str, port: int, *, timeout: float = TIMEOUT) -> tuple[str, ...]:
    """The host key algorithms the SSH server at ``host``:``port`` offers, in its order.

    Reads the server's version line and its first key exchange message (SSH_MSG_KEXINIT,
    sent in clear text before any key is exchanged), then hangs up.

    Raises:
        OSError: the server could not be reached or did not speak SSH as expected.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"SSH-2.0-reconciler-probe\r\n")
        stream = sock.makefile("rb")
        for _ in range(_VERSION_LINES):
            if stream.readline(256).startswith(b"SSH-"):
                break
        else:
            raise OSError(f"{host}:{port} sent no SSH version line")
        payload = _packet(stream)
    if not payload or payload[0] != _MSG_KEXINIT:
        raise OSError(f"{host}:{port} did not start a key exchange")
    offset = 1 + 16  # message number, cookie
    names: list[str] = []
    for _ in range(2):  # kex_algorithms, server_host_key_algorithms
        if offset + 4 > len(payload):
            raise OSError(f"{host}:{port} sent a truncated key exchange message")
        (size,) = struct.unpack_from(">I", payload, offset)
        offset += 4
        names.append(payload[offset : offset + size].decode("ascii", "replace"))
        offset += size
    return tuple(name for name in names[1].split(",") if name)


def _packet(stream: BinaryIO) -> bytes:
    header = stream.read(5)
    if len(header) != 5:  # noqa: PLR2004 - packet length and padding length
        raise OSError("the SSH server closed the connection")
    length, padding = struct.unpack(">IB", header)
    if not padding < length <= _MAX_PACKET:
        raise OSError("the SSH server sent a malformed packet")
    body = stream.read(length - 1)
    if len(body) != length - 1:
        raise OSError("the SSH server closed the connection")
    return body[: length - 1 - padding]
