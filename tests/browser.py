"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for page tests.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on the browser's fd 3,
answers and events on its fd 4, each message a JSON text ended by NUL), so no port is
opened and no websocket client is needed. ``render`` loads one page, waits for its load
event, evaluates an expression in it, takes a PNG screenshot of the whole page and
returns them with every console error, exception and error log entry the page produced.
``png_colours`` decodes a screenshot enough to tell a blank page from a drawn one.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_ON_FDS_3_AND_4 = """
import fcntl, os, sys
ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
os.dup2(ends[0], 3)
os.dup2(ends[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""
"""Runs the browser with the pipe's ends as its fds 3 and 4, wherever they were opened
(a shell's ``3<&N`` takes one digit in dash, and the two ends may be 3 or 4 already)."""
SETUP = "run `make system-deps` (or `hack/system-deps test` as root) to install it"


def chromium() -> str:
    """The browser's path; fails the test (never skips it) when it is not installed."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(f"Debian's chromium is not installed: {SETUP}")
    return found


@dataclass
class Rendered:
    """What the browser made of a page."""

    value: Any
    """The evaluated expression's value (returned by value: JSON types)."""
    screenshot: bytes
    """The whole page as PNG (scaled)."""
    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions and error log entries, in order."""


class _Pipe:
    """One DevTools session over the browser's pipe."""

    def __init__(self, process: subprocess.Popen[bytes], send: int, receive: int) -> None:
        self.process = process
        self._send = send
        self._receive = receive
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise AssertionError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, event: str, *, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while True:
            message = self._read(deadline, event)
            self.events.append(message)
            if message.get("method") == event:
                return message

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._receive], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"chromium did not answer {waiting_for} in time")
            chunk = os.read(self._receive, 1 << 20)
            if not chunk:
                raise AssertionError(f"chromium exited while waiting for {waiting_for}")
            self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\0")
        loaded: dict[str, Any] = json.loads(text)
        return loaded


def render(
    page: Path,
    expression: str,
    workdir: Path,
    *,
    width: int = 1200,
    height: int = 900,
    scale: float = 0.5,
) -> Rendered:
    """Load ``page`` (a file) in headless Chromium and report what it rendered.

    The screenshot is of the whole page, at ``scale`` (smaller is quicker to check).
    """
    binary = chromium()
    commands_read, commands_write = os.pipe()
    answers_read, answers_write = os.pipe()
    log = workdir / "chromium.log"
    args = [
        binary,
        "--headless",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--remote-debugging-pipe",
        f"--user-data-dir={workdir / 'profile'}",
        "about:blank",
    ]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", _ON_FDS_3_AND_4, str(commands_read), str(answers_write), *args],
            pass_fds=(commands_read, answers_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    os.close(commands_read)
    os.close(answers_write)
    pipe = _Pipe(process, commands_write, answers_read)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired")
        value = _evaluate(pipe, session, expression)
        content = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": content["width"], "height": content["height"]}
        shot = pipe.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": scale}},
            session=session,
        )
        return Rendered(value, base64.b64decode(shot["data"]), _errors(pipe.events))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nchromium's log: {log}") from None
    finally:
        try:
            os.write(commands_write, json.dumps({"id": 0, "method": "Browser.close"}).encode())
            os.write(commands_write, b"\0")
        except OSError:
            pass  # it exited already
        os.close(commands_write)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(answers_read)


def _evaluate(pipe: _Pipe, session: str, expression: str) -> Any:
    evaluated = pipe.call(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
    )
    if "exceptionDetails" in evaluated:
        raise AssertionError(f"the test's expression failed: {evaluated['exceptionDetails']}")
    return evaluated["result"].get("value")


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            errors.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            errors.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url')}")
    return errors


def png_colours(png: bytes, *, limit: int = 1000) -> int:
    """How many different colours a PNG (8-bit RGB or RGBA, as Chromium writes) holds.

    Counting stops at ``limit``: the point is to tell a drawn page from a uniform one.
    """
    width, height, size, raw = _png_pixels(png)
    stride = width * size
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, size)
        colours.update(bytes(line[i : i + size]) for i in range(0, stride, size * 7))
        if len(colours) >= limit:
            break
        previous = line
    return len(colours)


def _png_pixels(png: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, the filtered rows) of an 8-bit RGB(A) PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    offset, data, header = 8, b"", b""
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        body = png[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
        offset += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    if depth != 8 or colour_type not in {2, 6}:
        raise AssertionError(f"unexpected PNG format: depth {depth}, colour type {colour_type}")
    return width, height, 3 if colour_type == 2 else 4, zlib.decompress(data)


def _unfilter(kind: int, line: bytearray, previous: bytearray, size: int) -> bytearray:
    """One row with its PNG filter (0 none, 1 sub, 2 up, 3 average, 4 Paeth) undone."""
    if kind == 0:
        return line
    for i in range(len(line)):
        left = line[i - size] if i >= size else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        else:
            corner = previous[i - size] if i >= size else 0
            line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
    return line


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c
