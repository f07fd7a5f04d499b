"""One run's load on the generator's event loop: a paced, bounded sender per version.

``Run`` holds a ``Sender`` per version and whether they may send (``active``). A
``Sender``'s pacer task sends on the absolute schedule of ``pacing.Pacing``: request ``k``
is due at a fixed time, so a late send does not push the others back; more than
``CATCH_UP_SECONDS`` behind, the missed sends are skipped rather than burst; each sender
starts at its own phase within one gap between sends, so runs started in the same tick do
not all send in the same instant. At most ``connections`` requests are in flight (a
semaphore), through one ``httpx.AsyncHTTPTransport`` whose pool keeps as many HTTP/1.1
keep-alive connections. The transport is used without an ``httpx.AsyncClient`` on purpose:
a client keeps cookies between requests (Iter8's fortio sent none), can follow redirects
and reads proxies from the environment, and costs about a third more CPU per request (550
against 410 microseconds, measured here); the transport does none of that. A redirect is
recorded as its 3xx status. Every request is bounded as a whole by the plan's timeout
(resolving, connecting, writing, reading the body); the body is read and dropped chunk by
chunk, never held. Requests go to the IP address the target's name resolved to, once
``targets.address_problem`` passed it, with the Service name in ``Host`` and as the TLS
server name, so DNS cannot change between the check and the connection; the name is
resolved again every ``RESOLVE_TTL_SECONDS``. An address refused after resolution refuses
the whole run (``Shared.refuse``). All connections share one TLS context (httpx's default
trust: certifi's CAs).

What it must never do: run outside the generator's loop thread, follow a redirect, send to
an address it has not checked, or hold more than ``connections`` requests to a version.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from reconciler import __version__
from reconciler.load.admission import payload_of
from reconciler.load.pacing import Pacing
from reconciler.load.payload import PayloadError, fetch
from reconciler.load.resolver import Address, Resolver
from reconciler.load.stats import VersionStats
from reconciler.ports import LoadPlan
from reconciler.spec.model import VersionLoad
from reconciler.spec.targets import Target, address_problem, parse_target

log = structlog.get_logger("reconciler.load")

__all__ = [
    "CATCH_UP_SECONDS",
    "CLOSE_SECONDS",
    "RESOLVE_RETRY_SECONDS",
    "RESOLVE_TTL_SECONDS",
    "Run",
    "Sender",
    "Shared",
]

CATCH_UP_SECONDS = 1.0
"""A pacer further behind its schedule than this skips the missed sends instead of bursting."""
RESOLVE_TTL_SECONDS = 30.0
"""How long a target's checked address is used before it is resolved (and checked) again."""
RESOLVE_RETRY_SECONDS = 1.0
"""After a name failed to resolve, its sends fail at once for this long before a new try."""
CLOSE_SECONDS = 5.0
"""How long ``close`` waits for the loop to stop the load and close its connections."""
USER_AGENT = f"gitops-reconciler/{__version__} (built-in load)"


class _RefusedError(Exception):
    """A target resolved to an address the load may not send to."""


class _NoAddressError(Exception):
    """A target's name did not resolve (counted as a request that got no answer)."""


@dataclass
class Shared:
    """What every run's senders share: resolver, refused addresses, TLS trust, reporting.

    ``refuse`` and ``record`` are the generator's callbacks (they take its lock).
    """

    resolver: Resolver
    api_servers: frozenset[str]
    refuse: Callable[[str, LoadPlan, str], None]
    """``(run_id, plan, why)``: an address check refused a running plan."""
    record: Callable[[VersionStats, int | None, int], None]
    """``(stats, status, microseconds)``: one finished request (status None: no answer)."""
    tls_context: ssl.SSLContext | None = None
    payload_limit: int = 1 << 20
    """Bytes of a payload fetched from a ``payloadURL`` (``load.maxPayloadBytes``)."""

    def tls(self) -> ssl.SSLContext:
        """The one TLS context of every connection (made once: loading the CAs takes 20 ms)."""
        if self.tls_context is None:
            self.tls_context = httpx.create_ssl_context()
        return self.tls_context


class Run:
    """One run's load on the loop: a sender per version and whether they may send."""

    def __init__(
        self, run_id: str, plan: LoadPlan, stats: Mapping[str, VersionStats], shared: Shared
    ) -> None:
        self.shared = shared
        self.run_id = run_id
        self.plan = plan
        self.active = asyncio.Event()
        if plan.active:
            self.active.set()
        self.senders: list[Sender] = []
        self._payload: asyncio.Task[bytes] | None = None
        try:
            for version in plan.load.versions:
                kept = None if plan.load.load_only else stats.get(version.version)
                self.senders.append(Sender(self, version, kept))
        except Exception:
            for sender in self.senders:  # not started yet: this runs inside one loop callback
                sender.pacer.cancel()
            raise

    def set_active(self, *, active: bool) -> None:
        """Send (True) or hold (False) from now on; requests in flight finish either way."""
        self.plan = LoadPlan(
            self.plan.run_id,
            self.plan.namespace,
            self.plan.load,
            self.plan.interval_seconds,
            self.plan.payload,
            active,
        )
        if active:
            self.active.set()
        else:
            self.active.clear()

    def refuse(self, why: str) -> None:
        """Stop the whole run: one of its targets resolved to a refused address."""
        self.shared.refuse(self.run_id, self.plan, why)

    def record(self, stats: VersionStats, status: int | None, micros: int) -> None:
        """Count one finished request (the generator takes its lock)."""
        self.shared.record(stats, status, micros)

    async def body(self) -> bytes | None:
        """What each request carries; a ``payloadURL`` is fetched once, for every version.

        Raises:
            PayloadError: the payload could not be fetched (the run is then refused).
        """
        url = self.plan.load.payload_url
        if url is None:
            return payload_of(self.plan)
        if self._payload is None:
            self._payload = asyncio.get_running_loop().create_task(
                fetch(
                    url,
                    resolver=self.shared.resolver,
                    api_servers=self.shared.api_servers,
                    tls=self.shared.tls(),
                    limit=self.shared.payload_limit,
                    seconds=self.plan.load.timeout_seconds,
                )
            )
        return await asyncio.shield(self._payload)

    async def stop(self) -> None:
        """Cancel every send and close every connection, within ``CLOSE_SECONDS``."""
        if self._payload is not None:
            self._payload.cancel()
        await asyncio.gather(*(s.stop() for s in self.senders), return_exceptions=True)


class Sender:
    """One version's paced requests through its own bounded pool of connections."""

    def __init__(self, run: Run, version: VersionLoad, stats: VersionStats | None) -> None:
        load = run.plan.load
        self.run = run
        self.version = version.version
        self.stats = stats
        self.target: Target = parse_target(version.url)
        self.timeout = load.timeout_seconds
        self.pacing = Pacing(
            version.qps or load.qps, run.plan.interval_seconds, load.duration_seconds, load.requests
        )
        body = payload_of(run.plan)
        method = load.method.upper()
        if method == "GET" and (body is not None or load.content_type is not None):
            method = "POST"  # Iter8: a payload or a content type makes the requests POSTs
        self.method = method
        self.body = body
        headers = [("Host", self.target.authority), ("User-Agent", USER_AGENT)]
        headers += [
            (name, value) for name, value in version.headers if name.lower() != "content-type"
        ]
        content_type = load.content_type or next(
            (value for name, value in version.headers if name.lower() == "content-type"), None
        )
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        self.headers = headers
        seconds = self.timeout
        self.extensions: dict[str, Any] = {
            "timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        }
        if self.target.scheme == "https":
            self.extensions["sni_hostname"] = self.target.host
        self.transport = httpx.AsyncHTTPTransport(
            verify=run.shared.tls(),
            limits=httpx.Limits(
                max_connections=load.connections, max_keepalive_connections=load.connections
            ),
            http1=True,
            http2=False,
            trust_env=False,
            retries=0,
        )
        self.slots = asyncio.Semaphore(load.connections)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.address: Address | None = None
        self.url: httpx.URL | None = None
        self.fresh_until = 0.0
        self.retry_at = 0.0
        self.resolving: asyncio.Task[Address | None] | None = None
        self.failing = False
        self.refused = False
        self.pacer = asyncio.get_running_loop().create_task(self._pace())

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        if self.run.plan.load.payload_url is not None:
            try:
                self.body = await self.run.body()
            except PayloadError as exc:
                self.refused = True
                self.run.refuse(f"payloadURL: {exc}")
                return
        # Each sender starts at its own phase within one send's gap, fixed by its name, so
        # that runs started together (a restart) do not all send in the same instant.
        spread = zlib.crc32(f"{self.run.run_id}/{self.version}".encode()) / 2**32
        start = loop.time() + spread * min(1 / self.pacing.qps, self.pacing.interval)
        k = 0
        while True:
            if not self.run.active.is_set():
                await self.run.active.wait()
                k = max(k, self.pacing.index_at(loop.time() - start))
            due = start + self.pacing.send_time(k)
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if now - due > CATCH_UP_SECONDS:
                k = self.pacing.index_at(now - start)
                continue
            await self.slots.acquire()
            if not self.run.active.is_set():
                self.slots.release()
                continue
            k += 1
            task = loop.create_task(self._send())
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _send(self) -> None:
        started = time.perf_counter_ns()
        status: int | None = None
        try:
            async with asyncio.timeout(self.timeout):
                url = await self._url()
                request = httpx.Request(
                    self.method,
                    url,
                    headers=self.headers,
                    content=self.body,
                    extensions=self.extensions,
                )
                response = await self.transport.handle_async_request(request)
                try:
                    async for _chunk in response.aiter_raw():
                        pass
                finally:
                    await response.aclose()
                status = response.status_code
        except _RefusedError:
            return
        except (httpx.HTTPError, OSError, TimeoutError, _NoAddressError) as exc:
            self._failed(exc)
        except Exception as exc:  # a bug: counted as no answer, never the pacer's end
            if not self.failing:
                log.exception("load_request_error", run=self.run.run_id, version=self.version)
            self._failed(exc)
        finally:
            self.slots.release()
        if status is not None and self.failing:
            self.failing = False
            log.info("load_answering", run=self.run.run_id, version=self.version)
        if self.stats is not None:
            elapsed = (time.perf_counter_ns() - started) // 1000
            self.run.record(self.stats, status, elapsed)

    def _failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            log.info(
                "load_request_failed",
                run=self.run.run_id,
                version=self.version,
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )

    async def _url(self) -> httpx.URL:
        """The URL to send to: the checked address of the target's name, resolved when due."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.url is not None and now < self.fresh_until:
            return self.url
        if self.url is not None:
            if self.resolving is None:  # refresh beside the sends; use the old one meanwhile
                self.resolving = loop.create_task(self._resolve())
            return self.url
        if now < self.retry_at:
            raise _NoAddressError(f"{self.target.host} did not resolve")
        if self.resolving is None:
            self.resolving = loop.create_task(self._resolve())
        await asyncio.shield(self.resolving)
        return self._resolved_url()

    def _resolved_url(self) -> httpx.URL:
        if self.refused:
            raise _RefusedError
        if self.url is None:
            raise _NoAddressError(f"{self.target.host} did not resolve")
        return self.url

    async def _resolve(self) -> Address | None:
        loop = asyncio.get_running_loop()
        shared = self.run.shared
        try:
            async with asyncio.timeout(self.timeout):
                found = await shared.resolver.resolve(self.target.host, self.target.port)
        except (OSError, TimeoutError) as exc:
            self.retry_at = loop.time() + RESOLVE_RETRY_SECONDS
            self.fresh_until = self.retry_at  # a known address serves until the next try
            self._failed(exc)
            return None
        finally:
            self.resolving = None
        if not found:
            self.retry_at = self.fresh_until = loop.time() + RESOLVE_RETRY_SECONDS
            self._failed(OSError(f"{self.target.host}: no address"))
            return None
        for address in found:
            why = address_problem(
                address.ip, api_servers=shared.api_servers, from_hook=address.from_hook
            )
            if why:
                self.refused = True
                self.run.refuse(f"version {self.version}: {self.target.host} resolves to {why}")
                return None
        first = found[0]
        host = f"[{first.ip}]" if ":" in first.ip else first.ip
        self.url = httpx.URL(f"{self.target.scheme}://{host}:{first.port}{self.target.target}")
        self.address = first
        self.fresh_until = loop.time() + RESOLVE_TTL_SECONDS
        return first

    async def stop(self) -> None:
        """Cancel the pacer and the requests in flight, then close the connections."""
        self.pacer.cancel()
        tasks: list[asyncio.Future[Any]] = [self.pacer, *self.in_flight]
        if self.resolving is not None:
            tasks.append(self.resolving)
        for task in tasks:
            task.cancel()
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.transport.aclose()
        except TimeoutError:
            log.warning("load_close_timeout", run=self.run.run_id, version=self.version)
