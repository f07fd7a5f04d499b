"""Names of load targets to addresses: the system's resolver, the test hook, a fixed table.

The generator resolves a target's Service name itself and connects to the address it
checked (``targets.address_problem``), never to a name, so a DNS answer cannot change
between the check and the connection. ``SystemResolver`` asks the system (the cluster's DNS,
through ``getaddrinfo`` on the event loop's executor); ``HookResolver`` answers the names of
the configuration's ``load.resolve`` hook (``NAME=HOST:PORT``) itself, marked as coming from
the hook, and passes the others on; ``StaticResolver`` answers from a fixed table as a
cluster DNS would (not marked: its answers are checked like the system's), for tests and
the demo.

What it must never do: connect anywhere, or mark an answer as the hook's that the hook did
not give.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Address", "HookResolver", "Resolver", "StaticResolver", "SystemResolver"]


@dataclass(frozen=True)
class Address:
    """Where a name's requests go: an IP address and a port."""

    ip: str
    port: int
    from_hook: bool = False
    """Given by the ``load.resolve`` test hook: trusted as configured, never checked."""


class Resolver(Protocol):
    """Resolves a load target's host name, on the generator's event loop."""

    async def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses of ``host`` (``port``: the URL's); raises ``OSError`` when none."""
        ...


class SystemResolver:
    """The system's resolver (``getaddrinfo``, TCP addresses only)."""

    async def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses ``getaddrinfo`` gives for ``host``, in its order, without repeats."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        seen: dict[str, Address] = {}
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = str(sockaddr[0])
            seen.setdefault(ip, Address(ip, int(sockaddr[1])))
        if not seen:
            raise OSError(f"{host}: no address")
        return list(seen.values())


class HookResolver:
    """The ``load.resolve`` hook's names first (trusted), then ``fallback``'s answers."""

    def __init__(self, hook: Mapping[str, tuple[str, int]], fallback: Resolver) -> None:
        self._hook = {name.lower(): where for name, where in hook.items()}
        self._fallback = fallback

    async def resolve(self, host: str, port: int) -> list[Address]:
        """The hook's address for ``host`` if it names one, else the fallback's."""
        where = self._hook.get(host.lower())
        if where is not None:
            return [Address(where[0], where[1], from_hook=True)]
        return await self._fallback.resolve(host, port)


class StaticResolver:
    """Answers from a table of ``{name: "IP"}`` or ``{name: "IP:PORT"}``, as a DNS would."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = {name.lower(): value for name, value in table.items()}

    async def resolve(self, host: str, port: int) -> list[Address]:
        """The table's address for ``host`` (at the URL's port unless it names one)."""
        value = self._table.get(host.lower())
        if value is None:
            raise OSError(f"{host}: no address")
        if (value.startswith("[") and "]:" in value) or value.count(":") == 1:
            ip, _, port_text = value.rpartition(":")
            return [Address(ip.strip("[]"), int(port_text))]
        return [Address(value.strip("[]"), port)]
