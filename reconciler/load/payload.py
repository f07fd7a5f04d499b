"""Fetching a run's payload from Iter8's ``payloadURL``: once, from an in-cluster Service only.

The URL is checked as a target is (``spec.targets``: an in-cluster Service name, never an
IP literal), its name resolved and each address checked (``address_problem``: no
loopback, link-local or metadata, no API server) before anything is sent; one ``GET``, no
redirect followed, a 2xx answer only, at most ``limit`` bytes read, within ``timeout``.
It must never send the experiment's load (that is ``sender``) nor retry: a run whose
payload cannot be had is refused with the reason, and its metrics have no data.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

from reconciler.load.resolver import Resolver
from reconciler.spec.targets import Target, TargetError, address_problem, parse_target

__all__ = ["PayloadError", "fetch"]


class PayloadError(Exception):
    """The payload could not be fetched; the message says why."""


async def fetch(
    url: str,
    *,
    resolver: Resolver,
    api_servers: frozenset[str],
    tls: ssl.SSLContext,
    limit: int,
    seconds: float,
) -> bytes:
    """The body at ``url``, fetched as the module's doc says, within ``seconds``.

    Raises:
        PayloadError: the URL, an address, the answer or its size is refused, or no answer.
    """
    try:
        target = parse_target(url)
    except TargetError as exc:
        raise PayloadError(str(exc)) from None
    try:
        async with asyncio.timeout(seconds):
            return await _get(target, resolver, api_servers, tls, limit)
    except TimeoutError:
        raise PayloadError(f"{url}: no answer within {seconds:g} s") from None
    except (httpx.HTTPError, OSError) as exc:
        raise PayloadError(f"{url}: {type(exc).__name__}: {exc}") from None


async def _get(
    target: Target, resolver: Resolver, api_servers: frozenset[str], tls: ssl.SSLContext, limit: int
) -> bytes:
    found = await resolver.resolve(target.host, target.port)
    if not found:
        raise PayloadError(f"{target.host}: no address")
    for address in found:
        why = address_problem(address.ip, api_servers=api_servers, from_hook=address.from_hook)
        if why:
            raise PayloadError(f"{target.host} resolves to {why}")
    first = found[0]
    host = f"[{first.ip}]" if ":" in first.ip else first.ip
    extensions: dict[str, object] = {}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    transport = httpx.AsyncHTTPTransport(
        verify=tls,
        trust_env=False,
        retries=0,
        http1=True,
        http2=False,
    )
    try:
        request = httpx.Request(
            "GET",
            httpx.URL(f"{target.scheme}://{host}:{first.port}{target.target}"),
            headers=[("Host", target.authority)],
            extensions=extensions,
        )
        response = await transport.handle_async_request(request)
        try:
            if not 200 <= response.status_code < 300:  # noqa: PLR2004 - the 2xx range
                raise PayloadError(f"{target.host}: answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > limit:
                    raise PayloadError(
                        f"{target.host}: the payload is over load.maxPayloadBytes ({limit})"
                    )
            return bytes(body)
        finally:
            await response.aclose()
    finally:
        await transport.aclose()
