"""Kubernetes API failures as reconciler errors: temporary ones retried, the rest reported once.

``classify`` turns an HTTP status and the API server's ``Status`` body into a
``ClusterError`` that names the verb and the object (``RBAC denies patch on
virtualservices.networking.istio.io "productpage" in bookinfo to system:serviceaccount:
argocd:gitops-reconciler``), split by what the caller should do: conflicts, 429 and 5xx
and network faults are ``TemporaryError`` (retried within bounds by the adapter); any
other 4xx is a ``PermanentError`` (reported once, never retried). Pure: no I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import PermanentError, ReconcilerError, TemporaryError

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
HTTP_UNPROCESSABLE = 422
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500

_USER = re.compile(r'User "([^"]+)"')
_PATCH_NOT_APPLIED = "the server rejected our request due to an error in our request"
"""What the API server says (422, no details) when a JSON Patch does not apply: a ``test``
that failed, or a path that is missing. Schema violations say more and name the field."""


@dataclass(frozen=True)
class Target:
    """What a request was about, for messages: the resource, and the object if one."""

    resource: str
    """``virtualservices.networking.istio.io`` (plural, dot, group; core: ``deployments``)."""
    namespace: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        text = f'{self.resource} "{self.name}"' if self.name else self.resource
        return f"{text} in {self.namespace}" if self.namespace else text


class ClusterError(ReconcilerError):
    """A Kubernetes request failed; carries the verb, the object and the HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        verb: str,
        target: Target,
        status: int = 0,
        reason: str = "",
        user: str | None = None,
    ) -> None:
        super().__init__(message)
        self.verb = verb
        self.target = target
        self.status = status
        self.reason = reason
        self.user = user


class ClusterTemporaryError(ClusterError, TemporaryError):
    """The API server is busy, failing or unreachable; retried with backoff."""

    retry_after: float | None = None
    """Seconds the server asked us to wait (``Retry-After``), if it said."""


class ClusterPermanentError(ClusterError, PermanentError):
    """The request is wrong for this cluster (denied, invalid, missing); never retried."""


class ForbiddenError(ClusterPermanentError):
    """RBAC (or an admission webhook) denies the verb on the object."""


class NotFoundError(ClusterPermanentError):
    """The object, or its kind, does not exist."""


class ConflictError(ClusterTemporaryError):
    """Someone else changed the object first (409, or a JSON Patch ``test`` that failed).

    Not retried as it is: the caller reads the object again and recomputes its change.
    """


class FieldError(ClusterPermanentError):
    """A weight's ``fieldPath`` does not resolve in its object, or holds no number."""


class WeightPolicyError(ClusterPermanentError):
    """The reconciler's policy forbids this weight reference (its namespace, or its field).

    Raised before any request about the object. ``setting`` names the configuration that
    would allow it; ``field_path`` is the experiment's fieldPath. Permanent: only a change
    of the experiment file or of the reconciler's configuration changes the verdict.
    """

    def __init__(
        self, message: str, *, verb: str, target: Target, setting: str, field_path: str
    ) -> None:
        super().__init__(message, verb=verb, target=target, status=403, reason="PolicyDenied")
        self.setting = setting
        self.field_path = field_path


def status_message(body: str | bytes | None) -> tuple[str, str, bool]:
    """``(message, reason, has details)`` from an API server ``Status`` body (or raw text)."""
    if not body:
        return "", "", False
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        status = json.loads(text)
    except ValueError:
        return text.strip()[:500], "", False
    if not isinstance(status, dict):
        return text.strip()[:500], "", False
    details = status.get("details") or {}
    return (
        str(status.get("message") or ""),
        str(status.get("reason") or ""),
        bool(details.get("causes")),
    )


def classify(  # noqa: PLR0911 - one return per kind of failure reads best
    status: int,
    body: str | bytes | None,
    *,
    verb: str,
    target: Target,
    headers: Mapping[str, Any] | None = None,
    json_patch: bool = False,
) -> ClusterError:
    """The error to raise for a failed request (``status`` 0: no HTTP response at all)."""
    message, reason, detailed = status_message(body)
    user_match = _USER.search(message)
    user = user_match.group(1) if user_match else None
    fields: dict[str, Any] = {
        "verb": verb,
        "target": target,
        "status": status,
        "reason": reason,
        "user": user,
    }
    detail = f" (HTTP {status}{', ' + reason if reason else ''}): {message}" if message else ""
    if status == HTTP_CONFLICT:
        return ConflictError(
            f"{verb} {target}: changed by someone else since we read it{detail}", **fields
        )
    if (
        json_patch
        and status == HTTP_UNPROCESSABLE
        and not detailed
        and _PATCH_NOT_APPLIED in message
    ):
        return ConflictError(
            f"{verb} {target}: the JSON Patch did not apply: a value it tests was changed "
            f"by someone else since we read it (or a path it names is gone){detail}",
            **fields,
        )
    if status in {0, HTTP_TOO_MANY_REQUESTS} or status >= HTTP_SERVER_ERROR:
        error = ClusterTemporaryError(
            f"{verb} {target}: API server unavailable or busy{detail or ': ' + str(body)}",
            **fields,
        )
        error.retry_after = _retry_after(headers)
        return error
    if status == 403:  # noqa: PLR2004 - HTTP Forbidden
        who = f" to {user}" if user else ""
        return ForbiddenError(
            f"RBAC denies {verb} on {target}{who}: grant it in the reconciler's Role "
            "(manifests/core/rbac.yaml; per namespace: manifests/core/traffic-namespaces.yaml)"
            f"{detail}",
            **fields,
        )
    if status == 401:  # noqa: PLR2004 - HTTP Unauthorized
        return ClusterPermanentError(
            f"{verb} {target}: the API server does not accept our credentials (HTTP 401): "
            "check the kubeconfig or the ServiceAccount token",
            **fields,
        )
    if status == HTTP_NOT_FOUND:
        return NotFoundError(f"{verb} {target}: not found{detail}", **fields)
    return ClusterPermanentError(f"{verb} {target}: rejected{detail}", **fields)


def network_error(exc: Exception, *, verb: str, target: Target) -> ClusterError:
    """A request that got no HTTP response: TLS failures are permanent, the rest temporary."""
    text = f"{type(exc).__name__}: {exc}"
    if "SSLError" in text or "CERTIFICATE_VERIFY_FAILED" in text:
        return ClusterPermanentError(
            f"{verb} {target}: TLS with the API server failed ({text}); check its CA",
            verb=verb,
            target=target,
        )
    return ClusterTemporaryError(
        f"{verb} {target}: no answer from the API server ({text})", verb=verb, target=target
    )


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class KubeConfigError(PermanentError):
    """No Kubernetes configuration, or one that cannot be used (says which, and why)."""
