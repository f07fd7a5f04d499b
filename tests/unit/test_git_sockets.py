"""TCP_NODELAY on the connections to the Env repo's server (libgit2 leaves Nagle on)."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reconciler.gitstore.sockets import server_address, set_nodelay


@contextmanager
def connection() -> Iterator[tuple[socket.socket, int]]:
    """A connected loopback client socket, Nagle on, and the server's port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            yield client, port
        finally:
            client.close()
            accepted.close()


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_the_connection_to_the_server_gets_nodelay_and_others_keep_their_setting() -> None:
    with connection() as (to_server, port), connection() as (elsewhere, _other):
        assert set_nodelay("127.0.0.1", port) >= 1
        assert nodelay(to_server)
        assert not nodelay(elsewhere)
        # another address on the same port is not the server when the URL names an IP
        assert set_nodelay("127.0.0.2", port) == 0


def test_a_host_name_matches_by_port() -> None:
    with connection() as (to_server, port):
        assert set_nodelay("git.example.invalid", port) >= 1
        assert nodelay(to_server)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("https://git.example/org/env.git", ("git.example", 443)),
        ("https://x:tok@127.0.0.1:8443/env.git", ("127.0.0.1", 8443)),
        ("http://[::1]:8080/env.git", ("::1", 8080)),
        ("git://127.0.0.1/env.git", ("127.0.0.1", 9418)),
        ("ssh://git@git.example:2222/env.git", ("git.example", 2222)),
        ("git@git.example:org/env.git", ("git.example", 22)),
        ("/srv/env.git", None),
        ("file:///srv/env.git", None),
    ],
)
def test_the_server_address_of_every_url_form(url: str, address: tuple[str, int] | None) -> None:
    assert server_address(url) == address
