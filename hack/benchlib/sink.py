"""A fast HTTP/1.1 keep-alive server for ``bench.py load``: answers ``ok`` at once, timed.

Run as a child process (``python hack/benchlib/sink.py CPU``): it pins itself to ``CPU``
(when the machine has more than one), listens on a free port of 127.0.0.1, prints the port
and serves until killed. For every request it keeps the server-side time, from the moment
the request's bytes were all read to the moment the answer was written, in nanoseconds.
``GET /__reset`` forgets them; ``GET /__stats`` answers their count and percentiles (JSON,
microseconds). Standard library only; asyncio's protocols keep it well above 10,000
requests a second on one core, so the generator, not this server, is what is measured.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sys
import time

TIMES: list[int] = []


def summary() -> dict[str, float]:
    ordered = sorted(TIMES)
    out: dict[str, float] = {"count": len(ordered)}
    for p in (50, 90, 99):
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p}_us"] = ordered[rank - 1] / 1000 if ordered else math.nan
    return out


class Sink(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("a stream transport is expected")
        self.transport = transport
        self.buffer = b""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        started = time.perf_counter_ns()
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            path = head.split(b" ", 2)[1]
            self.buffer = self.buffer[end + 4 + length :]
            body = b"ok"
            if path == b"/__stats":
                body = json.dumps(summary()).encode()
            elif path == b"/__reset":
                TIMES.clear()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            if not path.startswith(b"/__"):
                TIMES.append(time.perf_counter_ns() - started)
            started = time.perf_counter_ns()


async def main(cpu: int) -> None:
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
