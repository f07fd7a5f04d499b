"""Where the built-in load may go: in-cluster Services only, checked before and after DNS.

An experiment file names its load's targets, so they are data from the repo (invariant 7)
and are checked like any other input. ``check_target`` is the check ``validate`` and the
loop run before anything is sent: ``http`` or ``https`` to ``NAME.NAMESPACE.svc`` or
``NAME.NAMESPACE.svc.cluster.local`` (an optional port and path), never an IP literal in
any spelling (``127.0.0.1``, ``[::1]``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
``127.1``), never user information (``user@``), never the API server's Service
(``kubernetes.default.svc``), and in the experiment's own namespace unless the
configuration allows others (``load.allowedNamespaces``; ``*``: any). ``check_headers`` and
``check_method`` keep the request itself plain: no header that changes where or how the
request is framed (``Host``, ``Content-Length``, hop-by-hop headers), no ``CONNECT`` or
``TRACE``. After the name is resolved, ``address_problem`` refuses an address that is
loopback, link-local (``169.254.0.0/16`` with the cloud metadata address, ``fe80::/10``),
unspecified, multicast, reserved, a known metadata address, or the API server's, unless the
address came from the configuration's ``load.resolve`` test hook (``parse_resolve``).

What it must never do: import an I/O library or resolve a name (it is imported by
``validate``, which must work without httpx and offline); let a URL through that another
parser could read as a different host (the request is rebuilt from what is checked here).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "ANY_NAMESPACE",
    "FORBIDDEN_HEADERS",
    "METADATA_ADDRESSES",
    "METHODS",
    "Target",
    "TargetError",
    "address_problem",
    "check_headers",
    "check_method",
    "check_target",
    "parse_resolve",
    "parse_target",
]

ANY_NAMESPACE = "*"
"""In ``load.allowedNamespaces``: targets may be Services of any namespace."""
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
FORBIDDEN_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "proxy-connection", "proxy-authorization", "expect",
    }
)  # fmt: skip
"""Headers the load never takes from an experiment: they change where the request goes
(``Host`` picks another virtual host behind the same address) or how it is framed."""
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
API_SERVER_SERVICE = ("kubernetes", "default")
"""The API server's own Service: never a target, whatever namespaces are allowed."""

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SERVICE_HOST = re.compile(
    rf"(?P<name>[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?)\.(?P<namespace>{_LABEL})"
    r"\.svc(?P<suffix>\.cluster\.local)?"
)
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_PORT = 65535


class TargetError(ValueError):
    """A load target is refused; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked load target: an in-cluster Service, a port and what to ask it for."""

    scheme: str
    host: str
    """``NAME.NAMESPACE.svc[.cluster.local]``, lower case."""
    port: int
    target: str
    """Path and query (``/`` at least), as the request line carries them."""
    service: str
    namespace: str
    explicit_port: bool = False

    @property
    def authority(self) -> str:
        """The ``Host`` header: the host, with the port when the URL named one."""
        return f"{self.host}:{self.port}" if self.explicit_port else self.host


def parse_target(url: str) -> Target:
    """``url`` as a ``Target`` (namespaces are not checked here: see ``check_target``).

    Raises:
        TargetError: why ``url`` is not an in-cluster Service URL.
    """
    if not isinstance(url, str) or not url:
        raise TargetError("no URL")
    if not url.isascii() or any(c <= " " or c in "\\\x7f" for c in url):
        raise TargetError(
            f"{url!r}: only printable ASCII without spaces or backslashes may be in a URL"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise TargetError(f"{url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetError(f"{url!r}: only http and https are sent to, not {scheme or 'no'} scheme")
    netloc = parts.netloc
    if "@" in netloc:
        raise TargetError(f"{url!r}: user information (user@) is not allowed in a load target")
    if not netloc:
        raise TargetError(f"{url!r}: no host")
    host, explicit, port = _host_and_port(url, netloc, scheme)
    _check_host(url, host)
    match = _SERVICE_HOST.fullmatch(host)
    if match is None:
        raise TargetError(
            f"{url!r}: {host!r} is not an in-cluster Service name (NAME.NAMESPACE.svc or "
            "NAME.NAMESPACE.svc.cluster.local)"
        )
    target = parts.path or "/"
    if not target.startswith("/"):
        raise TargetError(f"{url!r}: the path must start with /")
    if parts.query:
        target += "?" + parts.query
    return Target(
        scheme, host, port, target, match["name"], match["namespace"], explicit_port=explicit
    )


def check_target(url: str, namespace: str, allowed_namespaces: Collection[str] = ()) -> str | None:
    """Why the built-in load may not send to ``url`` for an experiment in ``namespace``.

    None: it may. ``allowed_namespaces`` are the configuration's ``load.allowedNamespaces``
    (the experiment's own namespace is always allowed; ``*`` allows any).
    """
    try:
        target = parse_target(url)
    except TargetError as exc:
        return str(exc)
    if (target.service, target.namespace) == API_SERVER_SERVICE:
        return f"{url!r}: the Kubernetes API server is never a load target"
    if (
        target.namespace != namespace
        and target.namespace not in allowed_namespaces
        and ANY_NAMESPACE not in allowed_namespaces
    ):
        return (
            f"{url!r}: namespace {target.namespace!r} is not the experiment's ({namespace!r}) "
            "and not in the reconciler's load.allowedNamespaces"
        )
    return None


def check_headers(headers: Iterable[tuple[str, str]]) -> str | None:
    """Why these request headers may not be sent (None: they may)."""
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            return f"header name {name!r} is not an HTTP token"
        if name.lower() in FORBIDDEN_HEADERS:
            return f"header {name!r} may not be set by an experiment"
        if any(c in value for c in "\r\n\x00"):
            return f"header {name!r}: a value may not hold a line break or NUL"
    return None


def check_method(method: str) -> str | None:
    """Why the load may not send ``method`` (None: it may)."""
    if method.upper() not in METHODS:
        return f"method {method!r} is not one of {', '.join(sorted(METHODS))}"
    return None


def address_problem(
    address: str, *, api_servers: Collection[str] = (), from_hook: bool = False
) -> str | None:
    """Why the load may not connect to ``address``, an IP a target resolved to (None: it may).

    ``api_servers`` are the API server's addresses (``KUBERNETES_SERVICE_HOST``); an address
    from the ``load.resolve`` test hook (``from_hook``) is trusted as configured.
    """
    if from_hook:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    checked: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if isinstance(ip, ipaddress.IPv6Address):  # the IPv4 address inside goes first: clearer
        if ip.ipv4_mapped is not None:
            checked.append(ip.ipv4_mapped)
        if ip in _NAT64:
            checked.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    checked.append(ip)
    for one in checked:
        why = _ip_problem(one, api_servers)
        if why:
            return f"{address} {why}"
    return None


def parse_resolve(entries: Iterable[str]) -> dict[str, tuple[str, int]]:
    """The ``load.resolve`` test hook: ``NAME=HOST:PORT`` entries as ``{NAME: (HOST, PORT)}``.

    HOST is an IP address (IPv6 in brackets); the load to NAME goes there, at PORT, whatever
    port its URL names, and the address checks do not apply to it.

    Raises:
        ValueError: an entry that is not NAME=HOST:PORT.
    """
    out: dict[str, tuple[str, int]] = {}
    for entry in entries:
        name, sep, address = entry.strip().partition("=")
        host, colon, port = address.strip().rpartition(":")
        name = name.strip().lower().rstrip(".")
        if not (sep and colon and name and port.isdigit() and 0 < int(port) <= _MAX_PORT):
            raise ValueError(f"load.resolve: {entry!r} is not NAME=HOST:PORT")
        host = host.removeprefix("[").removesuffix("]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"load.resolve: {entry!r}: HOST must be an IP address, not {host!r}"
            ) from None
        out[name] = (host, int(port))
    return out


def _host_and_port(url: str, netloc: str, scheme: str) -> tuple[str, bool, int]:
    if netloc.startswith("["):
        raise TargetError(f"{url!r}: an IP address is not a Service name")
    host, colon, port_text = netloc.rpartition(":")
    if not colon:
        return netloc.lower(), False, _DEFAULT_PORTS[scheme]
    if not (port_text.isdigit() and 0 < int(port_text) <= _MAX_PORT):
        raise TargetError(f"{url!r}: {port_text!r} is not a port")
    return host.lower(), True, int(port_text)


def _check_host(url: str, host: str) -> None:
    if not host:
        raise TargetError(f"{url!r}: no host")
    if "%" in host:
        raise TargetError(f"{url!r}: a host may not be percent-encoded")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise TargetError(f"{url!r}: an IP address is not a Service name")
    # inet_aton's spellings of an IPv4 address: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
    if all(_NUMERIC_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        raise TargetError(f"{url!r}: {host!r} is a numeric IP address, not a Service name")
    if host.endswith("."):
        raise TargetError(f"{url!r}: write the Service name without a trailing dot")


def _ip_problem(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, api_servers: Collection[str]
) -> str | None:
    reasons: Mapping[str, bool] = {
        "is a cloud metadata address": ip in METADATA_ADDRESSES,
        "is a loopback address": ip.is_loopback,
        "is link-local": ip.is_link_local,
        "is the unspecified address": ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK),
        "is a multicast address": ip.is_multicast,
        "is a reserved address": ip.is_reserved,
        "is the Kubernetes API server's address": str(ip) in _addresses(api_servers),
    }
    return next((why for why, hit in reasons.items() if hit), None)


def _addresses(hosts: Collection[str]) -> set[str]:
    out = set()
    for host in hosts:
        try:
            out.add(str(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            continue
    return out
