"""Prometheus as the ``MetricsSource``: instant queries over HTTP (``transport``).

``PrometheusClient`` sends one PromQL query (bearer token file, CA file, custom headers,
a timeout; proxies and ``~/.netrc`` as requests reads them) and classifies what goes
wrong: no answer, a refused connection or a 5xx is temporary and retried by tenacity
within a bound; a 4xx (a bad query), a TLS failure or an answer that is not Prometheus'
is permanent and reported at once. After ``TRIP_AFTER`` queries in a row have failed
that way, the client stops asking for ``COOLDOWN_SECONDS`` (a circuit breaker): every
query in between is unavailable at once, so a Prometheus that hangs costs a tick two
queries' retries, not every metric's. ``PrometheusMetrics``
resolves an experiment's metric name in the ``Catalog``, renders its query for one
version (``reconciler.metrics.promql``), and returns a value with its sample size,
``no-data`` (no series, or NaN: distinct from 0), or ``unavailable`` (the source failed):
never a made-up number. It never logs a credential or a header value.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import structlog
import urllib3.exceptions
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from reconciler.breaker import CircuitBreaker
from reconciler.config import PrometheusSettings
from reconciler.errors import PermanentError, ReconcilerError, TemporaryError
from reconciler.metrics.catalog import Catalog, Resolved
from reconciler.metrics.promql import Bindings, render
from reconciler.metrics.transport import (
    AnswerTooLargeError,
    Transport,
    read_environment,
    without_userinfo,
)
from reconciler.ports import MetricValue
from reconciler.spec.metric import MetricDefinition

log = structlog.get_logger(__name__)

ATTEMPTS = 3
"""Tries per query before a temporary fault makes the metric ``unavailable``."""
TRIP_AFTER = 2
"""Queries in a row that fail (after their retries) before the client stops asking."""
COOLDOWN_SECONDS = 30.0
"""How long it then answers ``unavailable`` without asking; then one query tries again.
``reconciler run`` uses its tick interval: a failing Prometheus is asked again next tick."""
_HTTP_OK, _HTTP_BAD_REQUEST, _HTTP_SERVER_ERROR = 200, 400, 500
_TEMPORARY_STATUS = frozenset({408, 429})
OK, NO_DATA, UNAVAILABLE = "ok", "no-data", "unavailable"
_SSL_REASON = re.compile(r"\[SSL[^\]]*\][^'\")]*")


@dataclass(frozen=True)
class PrometheusConfig:
    """Where Prometheus is and how to talk to it (built once by the CLI)."""

    url: str
    """Base URL, e.g. ``http://prometheus.istio-system:9090`` (no ``/api/v1``)."""
    bearer_token_file: Path | None = None
    """Read before every query, so a rotated (projected) token is picked up."""
    ca_file: Path | None = None
    """CA bundle to verify an https URL against (default: the system's)."""
    headers: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 5.0
    """Per attempt; also sent to Prometheus as the query's evaluation timeout."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(
                f"Prometheus URL must be http(s)://host[:port][/path], not {self.url!r}"
            )
        if not (math.isfinite(self.timeout_seconds) and self.timeout_seconds > 0):
            raise ValueError("the Prometheus timeout must be a positive number of seconds")
        for name, _value in self.headers:
            if not name or any(c in name for c in ":\r\n ") or not name.isascii():
                raise ValueError(f"{name!r} is not a valid HTTP header name")

    @classmethod
    def from_settings(cls, settings: PrometheusSettings) -> PrometheusConfig:
        """The client's configuration from the ``prometheus`` settings.

        Raises:
            ValueError: no URL is set, or a value the client cannot use.
        """
        if settings.url is None:
            raise ValueError(
                "no Prometheus: give --prometheus-url, RECONCILER_PROMETHEUS_URL or "
                "prometheus.url in the config file"
            )
        return cls(
            url=settings.url,
            bearer_token_file=settings.token_file,
            ca_file=settings.ca_file,
            headers=tuple(settings.headers.items()),
            timeout_seconds=settings.timeout,
        )

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash."""
        return self.url.rstrip("/")

    @property
    def display_url(self) -> str:
        """``base_url`` without any ``user:password@``, for messages and logs."""
        return without_userinfo(self.base_url)


class PrometheusError(ReconcilerError):
    """A query failed; the message names the Prometheus URL and what happened."""


class PrometheusTemporaryError(PrometheusError, TemporaryError):
    """No answer, connection refused, or a 5xx: retried."""


class PrometheusPermanentError(PrometheusError, PermanentError):
    """A rejected query (4xx), a TLS failure, or an answer that is not Prometheus': not retried."""


class QueryClient(Protocol):
    """Sends one instant query; returns Prometheus' ``data.result``."""

    def query(self, promql: str) -> Any:  # noqa: ANN401 - JSON as Prometheus sends it
        """The ``data.result`` of ``/api/v1/query``; raises ``PrometheusError``."""
        ...


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    log.info("prometheus_retry", attempt=state.attempt_number, error=str(error))


class PrometheusClient:
    """Instant queries against one Prometheus, with bounded, classified retries."""

    def __init__(
        self,
        config: PrometheusConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        trip_after: int = TRIP_AFTER,
        cooldown_seconds: float = COOLDOWN_SECONDS,
    ) -> None:
        """Read the environment and build the pool; nothing is sent. ``clock`` times the breaker."""
        self.config = config
        self._breaker = CircuitBreaker(
            trip_after=trip_after, cooldown_seconds=cooldown_seconds, clock=clock
        )
        """Counts queries in a row that failed for a temporary reason."""
        environment = read_environment(
            config.base_url, ca_file=config.ca_file, token_file=config.bearer_token_file
        )
        self._transport = Transport(
            config.base_url,
            environment,
            headers=dict(config.headers),
            timeout_seconds=config.timeout_seconds,
        )

    def close(self) -> None:
        """Release the HTTP connections."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def query(self, promql: str) -> Any:  # noqa: ANN401 - JSON as Prometheus sends it
        """Evaluate ``promql`` now; return ``data.result``.

        Raises:
            PrometheusTemporaryError: still failing after ``ATTEMPTS`` tries, or not sent
                because the last ``TRIP_AFTER`` queries failed so (for ``COOLDOWN_SECONDS``).
            PrometheusPermanentError: at the first permanent fault.
        """
        breaker = self._breaker
        if wait := breaker.wait_left():
            raise PrometheusTemporaryError(
                f"{self.config.display_url} is not asked for {wait:.0f} s more: "
                f"{breaker.failures} queries in a row failed"
            )
        try:
            result = self._query(promql)
        except PrometheusTemporaryError as exc:
            if breaker.failed():
                log.warning(
                    "prometheus_circuit_open",
                    url=self.config.display_url,
                    failures=breaker.failures,
                    seconds=breaker.cooldown_seconds,
                    error=str(exc),
                )
            raise
        if breaker.answered():
            log.info("prometheus_circuit_closed", url=self.config.display_url)
        return result

    @retry(
        retry=retry_if_exception_type(TemporaryError),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.2, max=2.0) + wait_random(0, 0.2),
        before_sleep=_log_retry,
        reraise=True,
    )
    def _query(self, promql: str) -> Any:  # noqa: ANN401 - JSON as Prometheus sends it
        where = self.config.display_url
        form = {"query": promql, "timeout": f"{self.config.timeout_seconds:g}"}
        try:
            status, reason, body = self._transport.post(form, self._token())
        except AnswerTooLargeError as exc:
            raise PrometheusPermanentError(f"{where} answered {exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._classify(exc) from exc
        if status != _HTTP_OK:
            raise _classify_status(where, status, reason, body)
        try:
            return json.loads(body)["data"]["result"]
        except (ValueError, KeyError, TypeError):
            raise PrometheusPermanentError(
                f"{where} did not answer with Prometheus' JSON"
            ) from None

    def _token(self) -> dict[str, str] | None:
        """``Authorization: Bearer`` from the token file, read at each query (it rotates)."""
        path = self.config.bearer_token_file
        if path is None:
            return None
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PrometheusPermanentError(
                f"cannot read the bearer token file {path}: {exc.strerror}"
            ) from None
        return {"Authorization": f"Bearer {token}"}

    def _classify(self, exc: Exception) -> PrometheusError:
        where = self.config.display_url
        if isinstance(exc, urllib3.exceptions.SSLError):
            found = _SSL_REASON.search(str(exc))
            reason = f": {found.group()}" if found else ""
            return PrometheusPermanentError(f"{where}: TLS verification failed{reason}")
        if isinstance(exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProxyError):
            return PrometheusTemporaryError(f"cannot connect to {where}")
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return PrometheusTemporaryError(
                f"{where} did not answer within {self.config.timeout_seconds:g} s"
            )
        if isinstance(exc, urllib3.exceptions.LocationValueError):
            return PrometheusPermanentError(f"{where}: {exc}")
        # reset, closed mid-answer, a broken chunk: the connection failed, not the query
        return PrometheusTemporaryError(f"cannot connect to {where}: {type(exc).__name__}")


def _classify_status(where: str, status: int, reason: str, body: bytes) -> PrometheusError:
    detail = _error_detail(reason, body)
    if status >= _HTTP_SERVER_ERROR or status in _TEMPORARY_STATUS:
        return PrometheusTemporaryError(f"{where} answered {status}: {detail}")
    if status == _HTTP_BAD_REQUEST:
        return PrometheusPermanentError(f"{where} rejected the query: {detail}")
    return PrometheusPermanentError(f"{where} answered {status}: {detail}")


def _error_detail(reason: str, body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return reason or "no detail"
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return f"{answer.get('errorType', 'error')}: {answer['error']}"
    return reason or "no detail"


def first_value(result: Any) -> tuple[float | None, str | None]:  # noqa: ANN401 - JSON
    """Iter8's ``.data.result[0].value[1] | tonumber``: the value, or None and why not.

    An empty vector and a NaN (0/0: nothing in the window) are no data; so are the
    infinities, which no limit can judge and JSON cannot carry.

    Raises:
        PrometheusPermanentError: a range vector or a shape Prometheus never sends.
    """
    if isinstance(result, list) and not result:
        return None, "the query returned no series"
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):  # noqa: PLR2004 - [time, value]
        raw: Any = result[1]  # a scalar
    elif isinstance(result, list) and isinstance(result[0], dict) and "value" in result[0]:
        raw = result[0]["value"][1]
    elif isinstance(result, list) and isinstance(result[0], dict) and "values" in result[0]:
        raise PrometheusPermanentError(
            "the query returns a range vector; wrap it in a function such as increase()"
        )
    else:
        raise PrometheusPermanentError(f"unexpected query result {str(result)[:200]}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise PrometheusPermanentError(f"the query's value {raw!r} is not a number") from None
    if math.isnan(value):
        return None, "the value is NaN (no requests in the window?)"
    if math.isinf(value):
        return None, f"the value is {raw}"
    return value, None


@dataclass(frozen=True)
class Evaluation:
    """One metric evaluated for one version, with what was sent and why it is not ``ok``."""

    metric: str
    version: str
    result: MetricValue
    query: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The shape ``reconciler metrics query -o json`` prints."""
        return {
            "metric": self.metric,
            "version": self.version,
            "value": self.result.value,
            "sample_size": self.result.sample_size,
            "status": self.result.status,
            "query": self.query,
        }


REUSE_SECONDS = 1.0
"""An answer is reused for the same query asked again within this long (a scrape interval
is longer): a metric's sample size is usually the request count the experiment also asks
for, so each version's count was queried three times a tick (10 queries an experiment, 6
with reuse). Answers older than this are dropped at the next query."""
REUSED_MAX = 256
"""Answers kept at most (a tick asks a few per experiment, one after the other)."""


class PrometheusMetrics:
    """A ``MetricsSource`` answering from Prometheus and a ``Catalog`` of metrics."""

    def __init__(
        self,
        client: QueryClient,
        catalog: Catalog,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` is a ``PrometheusClient`` (or a test double); ``clock`` ages answers."""
        self._client = client
        self._catalog = catalog
        self._clock = clock
        self._recent: dict[str, tuple[float, Any]] = {}

    def _query(self, promql: str) -> Any:  # noqa: ANN401 - JSON as Prometheus sends it
        """``promql``'s answer, reused when the same query was answered just now."""
        now = self._clock()
        while self._recent:  # oldest first (insertion order): drop the stale, keep the bound
            oldest = next(iter(self._recent))
            if now - self._recent[oldest][0] < REUSE_SECONDS and len(self._recent) < REUSED_MAX:
                break
            del self._recent[oldest]
        hit = self._recent.get(promql)
        if hit is not None:
            return hit[1]
        result = self._client.query(promql)
        self._recent[promql] = (now, result)
        return result

    def use_definitions(self, definitions: Sequence[MetricDefinition]) -> list[str]:
        """Resolve names against the built-in library and these Metric documents from now on."""
        library = self._catalog.iter8_system_library
        self._catalog = Catalog(tuple(definitions), iter8_system_library=library)
        return [str(problem) for problem in self._catalog.problems]

    def observe(
        self,
        metric: str,
        *,
        version: str,
        namespace: str,
        elapsed_seconds: float,
        variables: Mapping[str, str],
    ) -> MetricValue:
        """Evaluate ``metric`` for one version over the ``elapsed_seconds`` the experiment ran.

        Never raises for a source fault: that is ``unavailable``, logged once with context.
        """
        return self.evaluate(
            metric,
            version=version,
            namespace=namespace,
            elapsed_seconds=elapsed_seconds,
            variables=variables,
        ).result

    def evaluate(
        self,
        metric: str,
        *,
        version: str,
        namespace: str,
        elapsed_seconds: float,
        variables: Mapping[str, str],
    ) -> Evaluation:
        """Like ``observe``, keeping the query sent and the reason for a non-``ok`` status."""
        bindings = Bindings.for_version(version, namespace, elapsed_seconds, variables)
        query: str | None = None
        try:
            resolved = self._catalog.resolve(metric, namespace)
            if resolved.definition.mock:
                return self._mock(metric, resolved, version)
            query = self._render(resolved, bindings)
            value, reason = first_value(self._query(query))
            sample = self._sample_size(resolved, bindings, value)
        except ReconcilerError as exc:
            log.warning(
                "metric_unavailable", metric=metric, version=version, query=query, error=str(exc)
            )
            return Evaluation(
                metric, version, MetricValue(None, None, UNAVAILABLE), query, str(exc)
            )
        if value is None:
            log.info("metric_no_data", metric=metric, version=version, query=query, reason=reason)
            return Evaluation(metric, version, MetricValue(None, sample, NO_DATA), query, reason)
        return Evaluation(metric, version, MetricValue(value, sample, OK), query)

    @staticmethod
    def _render(resolved: Resolved, bindings: Bindings) -> str:
        template = resolved.definition.query
        if template is None:  # only mock metrics have none, handled before
            raise PrometheusPermanentError(f"metric {resolved.definition.ref} has no query")
        return render(template, bindings)

    def _sample_size(
        self, resolved: Resolved, bindings: Bindings, value: float | None
    ) -> int | None:
        reference = resolved.definition.sample_size
        if reference is None:
            return None
        try:
            counter = self._catalog.resolve(reference, resolved.namespace)
            if counter.definition == resolved.definition:
                count = value
            else:
                count, _reason = first_value(self._query(self._render(counter, bindings)))
        except ReconcilerError as exc:
            log.warning(
                "sample_size_unavailable",
                metric=resolved.definition.ref,
                sample_size=reference,
                error=str(exc),
            )
            return None
        return round(count) if count is not None else None

    @staticmethod
    def _mock(metric: str, resolved: Resolved, version: str) -> Evaluation:
        for name, level in resolved.definition.mock:
            if name == version:
                return Evaluation(metric, version, MetricValue(level, None, OK))
        reason = f"mock metric {resolved.definition.ref} has no level for {version!r}"
        return Evaluation(metric, version, MetricValue(None, None, NO_DATA), None, reason)
