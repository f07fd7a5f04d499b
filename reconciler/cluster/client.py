"""The connection to the API server: settings, ``connect``, and JSON requests with retries.

Built on the official ``kubernetes`` client (in-cluster config or a kubeconfig, its auth
and TLS handling, its ``ApiClient``), used for plain JSON requests so that one code path
serves every kind, core or custom. ``Kube.request`` is where retries are declared:
tenacity retries temporary faults (429, 5xx, no answer) with exponential backoff and
jitter within ``RetryPolicy``'s bounds, honouring ``Retry-After``; conflicts and other
4xx are raised at once, classified by ``reconciler.cluster.errors``. This is the only
module that imports the ``kubernetes`` package; it never logs a token.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from reconciler.breaker import CircuitBreaker
from reconciler.cluster.errors import (
    ClusterError,
    ClusterTemporaryError,
    ConflictError,
    KubeConfigError,
    NotFoundError,
    Target,
    classify,
    network_error,
)
from reconciler.cluster.resources import ObjectRef, Resource, ResourceMapper
from reconciler.config import KubernetesSettings

log = structlog.get_logger(__name__)

FIELD_MANAGER = "gitops-reconciler"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a temporary fault is retried, and how long to wait in between."""

    attempts: int = 5
    initial_wait: float = 0.2
    max_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class KubeSettings:
    """Where the API server is and who we are (part of the process's one configuration)."""

    kubeconfig: str | None = None
    """A kubeconfig file; None: in-cluster config when in a pod, else ``~/.kube/config``."""
    context: str | None = None
    namespace: str | None = None
    """Default namespace (objects named without one, the Leases); None: from the context,
    or the pod's own namespace in-cluster."""
    field_manager: str = FIELD_MANAGER
    request_timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy()
    impersonate: str | None = None
    """Act as this user (``system:serviceaccount:NS:NAME``), e.g. to check RBAC."""
    trip_after: int = 3
    """Requests in a row without a usable answer (after their retries) before the client
    stops asking the API server for ``cooldown_seconds`` (a circuit breaker)."""
    cooldown_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: KubernetesSettings) -> KubeSettings:
        """The connection the ``kubernetes`` settings name."""
        kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
        return cls(kubeconfig=kubeconfig, context=settings.context, namespace=settings.namespace)


def _load_configuration(settings: KubeSettings) -> tuple[k8s.Configuration, str | None]:
    configuration = k8s.Configuration()
    namespace = settings.namespace
    if settings.kubeconfig is None and _IN_CLUSTER_NAMESPACE.is_file():
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        namespace = namespace or _IN_CLUSTER_NAMESPACE.read_text().strip()
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=settings.kubeconfig,
            context=settings.context,
            client_configuration=configuration,
        )
        if namespace is None:
            _contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                settings.kubeconfig
            )
            if settings.context:
                contexts = {c["name"]: c for c in _contexts}
                active = contexts.get(settings.context, active)
            namespace = (active or {}).get("context", {}).get("namespace")
    return configuration, namespace


def _config_problem(settings: KubeSettings, exc: BaseException) -> str:
    """One line: which configuration could not be used, why, and what to set."""
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    if settings.kubeconfig is not None:
        if not Path(settings.kubeconfig).is_file():
            reason = "no such file"
        return (
            f"the kubeconfig {settings.kubeconfig} cannot be used: {reason} "
            "(check the file, or --kubeconfig / RECONCILER_KUBECONFIG)"
        )
    if _IN_CLUSTER_NAMESPACE.is_file():
        return f"the in-cluster configuration cannot be used: {reason}"
    return (
        "no Kubernetes configuration: not running in a cluster, and no usable kubeconfig "
        f"in KUBECONFIG or ~/.kube/config ({reason}); set --kubeconfig or "
        "RECONCILER_KUBECONFIG"
    )


def connect(
    settings: KubeSettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Kube:
    """Load the configuration (in-cluster or kubeconfig) and return a ``Kube``.

    Raises:
        KubeConfigError: no configuration, or one that cannot be used (one line that says
            which file and what to set, never the client's traceback).
    """
    try:
        configuration, namespace = _load_configuration(settings)
    except (
        k8s_config.ConfigException,
        OSError,
        yaml.YAMLError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
    ) as exc:
        raise KubeConfigError(_config_problem(settings, exc)) from None
    # One retry layer only (ours): urllib3 may reconnect, never resend a request.
    configuration.retries = urllib3.Retry(
        total=2,
        connect=2,
        read=0,
        status=0,
        redirect=0,
        respect_retry_after_header=False,  # a 429/503 comes back to us, whole
        raise_on_status=False,
    )
    api = k8s.ApiClient(configuration)
    if settings.impersonate:
        api.set_default_header(  # type: ignore[no-untyped-call]
            "Impersonate-User", settings.impersonate
        )
    return Kube(
        api,
        namespace=namespace or "default",
        field_manager=settings.field_manager,
        request_timeout=settings.request_timeout,
        retry=settings.retry,
        sleep=sleep,
        clock=clock,
        trip_after=settings.trip_after,
        cooldown_seconds=settings.cooldown_seconds,
    )


class Kube:
    """JSON requests to the API server, classified errors, declared retries."""

    def __init__(
        self,
        api: Any,  # noqa: ANN401 - kubernetes.client.ApiClient (untyped package)
        *,
        namespace: str = "default",
        field_manager: str = FIELD_MANAGER,
        request_timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        trip_after: int = 3,
        cooldown_seconds: float = 10.0,
    ) -> None:
        """Wrap an ``ApiClient``; ``sleep`` waits between retries (tests pass their own).

        After ``trip_after`` requests in a row got no usable answer (each after its
        retries), requests fail at once, without being sent, for ``cooldown_seconds`` on
        ``clock``; then one goes out, and an answer closes the circuit again.
        """
        self.api = api
        self.namespace = namespace
        self.field_manager = field_manager
        self.retry = retry
        self._timeout = request_timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        """HTTP requests sent, retries included (tests read it to prove there were none)."""
        self._breaker = CircuitBreaker(
            trip_after=trip_after, cooldown_seconds=cooldown_seconds, clock=clock
        )
        """Counts requests in a row that got no usable answer."""
        self.mapper = ResourceMapper(self._discover)

    def close(self) -> None:
        """Release the connection pool."""
        self.api.close()

    @property
    def server_host(self) -> str | None:
        """The API server's host (name or address), as the connection reaches it."""
        return urlsplit(str(self.api.configuration.host)).hostname

    # -- objects ------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """The REST resource of a kind (discovered once)."""
        return self.mapper.resolve(api_version, kind)

    def locate(self, ref: ObjectRef) -> tuple[Resource, str | None]:
        """The resource and the effective namespace (ours by default, None if cluster-scoped)."""
        resource = self.resource(ref.api_version, ref.kind)
        return resource, (ref.namespace or self.namespace) if resource.namespaced else None

    def get(self, ref: ObjectRef, *, retry: RetryPolicy | None = None) -> dict[str, Any] | None:
        """The object as JSON, or None when it does not exist."""
        resource, namespace = self.locate(ref)
        try:
            return self.request(
                "get",
                "GET",
                resource.path(namespace, ref.name),
                target=resource.target(namespace, ref.name),
                retry=retry,
            )
        except NotFoundError:
            return None

    def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        page_size: int = 500,
        all_namespaces: bool = False,
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` (ours when None; all for cluster-scoped).

        With ``all_namespaces``, every object of a namespaced kind, across namespaces
        (``/apis/<group>/<version>/<plural>``). One LIST request per ``page_size`` objects
        (``limit`` and ``continue``).
        """
        resource = self.resource(api_version, kind)
        if all_namespaces:
            path, target = replace(resource, namespaced=False).path(None), resource.target()
        else:
            where = (namespace or self.namespace) if resource.namespaced else None
            path, target = resource.path(where), resource.target(where)
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {"limit": str(page_size)}
            if token:
                query["continue"] = token
            answer = self.request("list", "GET", path, target=target, query=query)
            items.extend(i for i in answer.get("items") or [] if isinstance(i, dict))
            token = str((answer.get("metadata") or {}).get("continue") or "")
            if not token:
                return items

    def patch(
        self,
        ref: ObjectRef,
        body: Any,  # noqa: ANN401 - a JSON Patch list or a merge-patch object
        *,
        content_type: str,
        subresource: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> dict[str, Any]:
        """PATCH the object (or its ``status``) as ``field_manager``; return the result."""
        resource, namespace = self.locate(ref)
        return self.request(
            "patch",
            "PATCH",
            resource.path(namespace, ref.name, subresource),
            target=resource.target(namespace, ref.name),
            body=body,
            content_type=content_type,
            query={"fieldManager": self.field_manager},
            retry=retry,
        )

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        target: Target,
        body: Any = None,  # noqa: ANN401 - JSON
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> dict[str, Any]:
        """One API request with retries of temporary faults; the decoded JSON answer.

        Raises:
            ClusterTemporaryError: still failing after the policy's attempts.
            ClusterPermanentError: denied, invalid, or not found (at the first answer).
            ConflictError: someone else changed the object (never retried here).
        """
        if wait := self._breaker.wait_left():
            raise ClusterTemporaryError(
                f"{verb} {target}: the API server is not asked for {wait:.0f} s more: "
                f"{self._breaker.failures} requests in a row got no usable answer",
                verb=verb,
                target=target,
            )
        policy = retry or self.retry
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=_wait(policy),
            retry=retry_if_exception(
                lambda e: isinstance(e, ClusterTemporaryError) and not isinstance(e, ConflictError)
            ),
            sleep=self._sleep,
            reraise=True,
            before_sleep=_log_retry,
        )
        try:
            result: dict[str, Any] = retrying(
                self._send,
                verb=verb,
                method=method,
                path=path,
                target=target,
                body=body,
                content_type=content_type,
                query=query,
            )
        except ClusterError as exc:
            # a refusal or a conflict is an answer; only silence or a busy server counts
            if isinstance(exc, ClusterTemporaryError) and not isinstance(exc, ConflictError):
                self._no_answer(exc)
            else:
                self._answered()
            raise
        self._answered()
        return result

    def _no_answer(self, exc: ClusterTemporaryError) -> None:
        if self._breaker.failed():
            log.warning(
                "kube_circuit_open",
                failures=self._breaker.failures,
                seconds=self._breaker.cooldown_seconds,
                error=str(exc),
            )

    def _answered(self) -> None:
        if self._breaker.answered():
            log.info("kube_circuit_closed")

    def _send(
        self,
        *,
        verb: str,
        method: str,
        path: str,
        target: Target,
        body: Any,  # noqa: ANN401
        content_type: str,
        query: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        with self._lock:
            self.requests_sent += 1
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            method, url, headers, body, _post = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=self._timeout
            )
            data = response.read()
        except k8s.ApiException as exc:  # raised without an HTTP answer (TLS failure)
            if exc.status:
                raise classify(exc.status, exc.body, verb=verb, target=target) from None
            raise network_error(exc, verb=verb, target=target) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise network_error(exc, verb=verb, target=target) from None
        if not 200 <= response.status <= 299:  # noqa: PLR2004 - the HTTP success range
            raise classify(
                response.status,
                data,
                verb=verb,
                target=target,
                headers=response.headers,
                json_patch=content_type == JSON_PATCH,
            )
        decoded = json.loads(data) if data else {}
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    def _discover(self, path: str, target: Target) -> dict[str, Any] | None:
        try:
            return self.request("get", "GET", path, target=target)
        except NotFoundError:
            return None


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(multiplier=policy.initial_wait, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        delay = backoff(state)
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None)
        if asked:
            delay = max(delay, min(float(asked), policy.max_wait))
        return float(delay)

    return wait


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ClusterError):
        log.warning(
            "kube_retry",
            verb=error.verb,
            object=str(error.target),
            status=error.status,
            attempt=state.attempt_number,
            error=str(error),
        )
