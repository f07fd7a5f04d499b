"""Kubernetes Events for experiment transitions: optional, and never fatal.

Each recorded transition can leave an Event on the object that carries the experiment's
weights (``kubectl describe virtualservice productpage`` then shows the rollout's story).
An Event that cannot be written is logged and dropped; once RBAC denies ``create`` on
``events``, the recorder turns itself off for the rest of the process instead of asking
again at every transition.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import structlog

from reconciler.cluster.client import NO_RETRY, Kube
from reconciler.cluster.errors import ForbiddenError
from reconciler.errors import ReconcilerError
from reconciler.spec.model import ObjectRef

log = structlog.get_logger(__name__)
COMPONENT = "gitops-reconciler"


class KubeEvents:
    """Writes ``core/v1`` Events about objects; off for good after an RBAC denial."""

    def __init__(self, kube: Kube) -> None:
        """Use ``kube`` (one attempt per Event: an Event is not worth a retry)."""
        self.kube = kube
        self.enabled = True
        self._lock = threading.Lock()

    def record(self, about: ObjectRef, reason: str, message: str, *, warning: bool = False) -> None:
        """Leave an Event on ``about``; log and carry on when it cannot be written."""
        if not self.enabled:
            return
        namespace = about.namespace or self.kube.namespace
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{about.name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": about.api_version,
                "kind": about.kind,
                "name": about.name,
                "namespace": namespace,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        resource = self.kube.resource("v1", "Event")
        try:
            self.kube.request(
                "create",
                "POST",
                resource.path(namespace),
                target=resource.target(namespace),
                body=body,
                retry=NO_RETRY,
            )
        except ForbiddenError as exc:
            with self._lock:
                self.enabled = False
            log.warning("events_disabled", reason="RBAC denies creating events", error=str(exc))
        except ReconcilerError as exc:
            log.warning("event_not_recorded", about=str(about), reason=reason, error=str(exc))
