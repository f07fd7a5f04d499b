"""``TCP_NODELAY`` on libgit2's connections to the Env repo's server, which libgit2 never sets.

libgit2 writes a request in several small writes (an HTTP request's headers, then its
body; a push's commands, then its pack) on a socket without ``TCP_NODELAY``. Nagle's
algorithm then holds each later write until the earlier one is acknowledged, and a
server that delays its acknowledgements (Linux delays them up to 40 ms) stalls every such
request: measured on loopback while a CI job pushed 5 commits/s, a fetch over HTTPS took
132 ms instead of 39, and a single outcome push landed 1 time in 30 instead of 17 (the
stall sits between reading main's tip and the server updating it, where CI wins the
race). pygit2 offers no socket option, so ``set_nodelay`` sets it on this process's TCP
sockets connected to the server's port, from the first callback libgit2 makes on a new
connection: the certificate check (HTTPS, SSH) and the push negotiation (before a push's
commands are written). It reads ``/proc/self/fd`` (Linux, as in the image); elsewhere it
does nothing. It changes that one option only, and only on sockets whose peer has the
server's port (and its address, when the URL names an IP): a socket to another server on
the same port gets it too, which costs that socket nothing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.gitstore.credentials import ssh_address, url_scheme

__all__ = ["server_address", "set_nodelay"]

_DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}
_FDS = Path("/proc/self/fd")


def server_address(url: str) -> tuple[str, int] | None:
    """The host and TCP port ``url`` connects to (None for a local path)."""
    scheme = url_scheme(url)
    if scheme == "ssh":
        return ssh_address(url)
    if scheme not in _DEFAULT_PORTS:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname or "", port or _DEFAULT_PORTS[scheme]


def set_nodelay(host: str, port: int) -> int:
    """Set ``TCP_NODELAY`` on this process's TCP sockets connected to ``host``:``port``.

    Returns how many sockets were set (0 where ``/proc/self/fd`` does not exist).
    """
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    try:
        names = [entry.name for entry in _FDS.iterdir()]
    except OSError:
        return 0
    changed = 0
    for name in names:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            copy = os.dup(fd)
        except (OSError, ValueError):
            continue  # the listing's own descriptor, or one closed meanwhile
        try:
            sock = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)  # reused meanwhile for something that is not a socket
            continue
        try:
            if _to_server(sock, literal, port):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                changed += 1
        except OSError:
            continue  # not connected, or closed meanwhile
        finally:
            sock.close()  # the duplicate only: libgit2's descriptor stays open
    return changed


def _to_server(
    sock: socket.socket, literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int
) -> bool:
    """Whether ``sock`` is a TCP connection to ``port`` (at ``literal``, when given)."""
    if sock.type != socket.SOCK_STREAM or sock.family not in {socket.AF_INET, socket.AF_INET6}:
        return False
    peer_host, peer_port = sock.getpeername()[:2]
    if peer_port != port:
        return False
    peer = ipaddress.ip_address(peer_host)
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return literal is None or peer == literal
