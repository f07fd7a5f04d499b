"""Which REST resource serves an ``apiVersion``/``kind``, and the URL of an object.

Any kind can carry a weight (Istio, Gateway API, Knative, SMI, ingress-nginx, a CRD of
one's own, namespaced or cluster-scoped), so kinds are not hard-coded: the first time a
group/version is needed, its discovery document (``/apis/<group>/<version>``, readable
by every authenticated user) says each kind's plural name and scope. Values here are
frozen; the only I/O is that one discovery GET per group/version, through the caller's
``fetch`` function.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from reconciler.cluster.errors import NotFoundError, Target
from reconciler.spec.model import ObjectRef

__all__ = [
    "ObjectRef",
    "Resource",
    "ResourceMapper",
    "discovery_path",
    "parse_discovery",
    "split_api_version",
]


@dataclass(frozen=True)
class Resource:
    """A REST resource: ``/apis/<group>/<version>/[namespaces/<ns>/]<plural>``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def full_name(self) -> str:
        """``virtualservices.networking.istio.io``, or ``deployments`` for the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        """URL path of the collection, of one object, or of its subresource (``status``)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced: a namespace is needed")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if sub is not None:
            base += f"/{sub}"
        return base

    def target(self, namespace: str | None = None, name: str | None = None) -> Target:
        """How errors name this resource (and one object of it)."""
        return Target(self.full_name, namespace if self.namespaced else None, name)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``("networking.istio.io", "v1")`` from ``networking.istio.io/v1``; core: ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def discovery_path(api_version: str) -> str:
    """``/apis/<group>/<version>``, or ``/api/v1`` for the core group."""
    group, version = split_api_version(api_version)
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def parse_discovery(api_version: str, document: Mapping[str, Any]) -> dict[str, Resource]:
    """Kind -> resource from an ``APIResourceList`` (subresources such as ``x/status`` skipped)."""
    group, version = split_api_version(api_version)
    found: dict[str, Resource] = {}
    for entry in document.get("resources") or []:
        name = str(entry.get("name", ""))
        if not name or "/" in name:
            continue
        kind = str(entry.get("kind", ""))
        found.setdefault(
            kind, Resource(group, version, name, kind, bool(entry.get("namespaced", False)))
        )
    return found


class ResourceMapper:
    """Kind -> resource, discovered once per group/version and then cached (thread-safe)."""

    def __init__(self, fetch: Callable[[str, Target], Mapping[str, Any] | None]) -> None:
        """``fetch(path, target)`` GETs a discovery document (None when it is not served)."""
        self._fetch = fetch
        self._known: dict[str, dict[str, Resource]] = {}
        self._lock = threading.Lock()

    def resolve(self, api_version: str, kind: str) -> Resource:
        """The resource serving ``kind`` in ``api_version``.

        Raises:
            NotFoundError: the API server serves no such kind (a CRD not installed?).
        """
        with self._lock:
            known = self._known.get(api_version)
        if known is None or kind not in known:
            # Look again when the kind is unknown: its CRD may have been installed since.
            path = discovery_path(api_version)
            document = self._fetch(path, Target(path))
            known = parse_discovery(api_version, document or {})
            with self._lock:
                self._known[api_version] = known
        if kind not in known:
            served = ", ".join(sorted(known)) or "nothing"
            raise NotFoundError(
                f"the API server serves no kind {kind} in {api_version} (it serves: {served}); "
                "is its CustomResourceDefinition installed?",
                verb="get",
                target=Target(discovery_path(api_version)),
                status=404,
            )
        return known[kind]
