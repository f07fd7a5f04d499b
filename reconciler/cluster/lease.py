"""Leader election per Env repo: one ``coordination.k8s.io/v1`` Lease per repo.

Several replicas share the Env repos; for each repo, only the holder of its Lease acts.
The protocol is client-go's: a holder renews every ``retry_period``; a Lease whose record
has not changed for its ``leaseDurationSeconds`` (measured on the observer's own clock,
from when it saw the record change, so clock skew between hosts does not matter) may be
taken; writes carry ``resourceVersion``, so two takers cannot both win. A holder counts
itself leader only until ``renew_deadline`` after the moment it *sent* its last
successful renewal, which is shorter than the Lease duration: a replica that cannot
renew stops acting on a repo before anyone else could take it over. Each tick takes at
most one free Lease, so replicas that start together spread the repos between them.
``decide`` is pure; ``RepoLeases`` does the requests, with the clock passed in.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

from reconciler.cluster.client import Kube, RetryPolicy
from reconciler.cluster.errors import ClusterError, ConflictError
from reconciler.cluster.resources import ObjectRef

log = structlog.get_logger(__name__)

LEASE_API = "coordination.k8s.io/v1"
REPO_ANNOTATION = "gitops-reconciler.dev/env-repo"
_LEASE_RETRY = RetryPolicy(attempts=2, initial_wait=0.1, max_wait=0.5)


@dataclass(frozen=True)
class LeaseSettings:
    """Timing of leader election (client-go's defaults), and where the Leases live."""

    lease_duration: float = 15.0
    """Seconds a Lease stays valid without renewal before others may take it."""
    renew_deadline: float = 10.0
    """Seconds after its last renewal that a holder stops acting if it could not renew."""
    retry_period: float = 2.0
    """Seconds between attempts to renew or to take a Lease."""
    namespace: str | None = None
    """Namespace of the Leases; None: the connection's default namespace (the pod's)."""
    name_prefix: str = "gitops-reconciler"

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry_period < renew_deadline < lease_duration "
                f"(got {self.retry_period}, {self.renew_deadline}, {self.lease_duration})"
            )

    @property
    def duration_seconds(self) -> int:
        """``leaseDurationSeconds`` (the API takes whole seconds; rounded up)."""
        return max(1, math.ceil(self.lease_duration))


def clean_url(url: str) -> str:
    """``url`` without user name, password or token (safe to store in an annotation)."""
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    return url


def lease_name(repo: str, prefix: str = "gitops-reconciler") -> str:
    """A valid, stable Lease name for an Env repo: readable slug plus a hash of the URL."""
    url = clean_url(repo)
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    tail = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", tail).strip("-")[:30].strip("-") or "repo"
    return f"{prefix}-{slug}-{digest}"


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease that election reads."""

    holder: str
    duration: int
    renew_time: str | None
    transitions: int
    resource_version: str

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> LeaseRecord:
        """Read a decoded Lease."""
        spec = obj.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=int(spec.get("leaseDurationSeconds") or 0),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
        )

    @property
    def key(self) -> tuple[str, int, str | None, int]:
        """What changes when the holder renews or someone takes the Lease."""
        return (self.holder, self.duration, self.renew_time, self.transitions)


class Step(Enum):
    """What a replica does with one Lease in one tick."""

    CREATE = "create"
    RENEW = "renew"
    TAKE = "take"
    WAIT = "wait"


def decide(record: LeaseRecord | None, me: str, observed_at: float, now: float) -> Step:
    """Create a missing Lease, renew ours, take a free or expired one, else wait.

    ``observed_at`` is when (on our clock) we first saw ``record`` as it is now.
    """
    if record is None:
        return Step.CREATE
    if record.holder == me:
        return Step.RENEW
    if not record.holder or observed_at + record.duration <= now:
        return Step.TAKE
    return Step.WAIT


@dataclass
class _Held:
    observed: tuple[tuple[str, int, str | None, int], float] | None = None
    valid_until: float = -math.inf


@dataclass
class RepoLeases:
    """This replica's side of the election for every Env repo it serves."""

    kube: Kube
    repos: tuple[str, ...]
    identity: str
    settings: LeaseSettings = LeaseSettings()
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _state: dict[str, _Held] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._state = {repo: _Held() for repo in self.repos}

    def ref(self, repo: str) -> ObjectRef:
        """The Lease of ``repo``."""
        namespace = self.settings.namespace or self.kube.namespace
        return ObjectRef(LEASE_API, "Lease", lease_name(repo, self.settings.name_prefix), namespace)

    def holds(self, repo: str) -> bool:
        """Whether this replica may act on ``repo`` now (its renewal is recent enough)."""
        with self._lock:
            return self.clock() < self._state[repo].valid_until

    def held(self) -> frozenset[str]:
        """The repos this replica may act on now."""
        return frozenset(repo for repo in self.repos if self.holds(repo))

    def valid_until(self, repo: str) -> float:
        """Until when (on ``clock``) this replica may act on ``repo`` (-inf: not at all)."""
        with self._lock:
            return self._state[repo].valid_until

    def tick(self) -> frozenset[str]:
        """Renew what we hold, take at most one free Lease; return the repos held now."""
        taken = 0
        for repo in self._order():
            step = self._attempt(repo, may_take=taken == 0)
            taken += step in {Step.CREATE, Step.TAKE}
        return self.held()

    def run(self, stop: threading.Event, on_change: Callable[[frozenset[str]], None]) -> None:
        """Tick every ``retry_period`` until ``stop`` is set, then release what we hold."""
        last: frozenset[str] = frozenset()
        try:
            while not stop.is_set():
                now_held = self.tick()
                if now_held != last:
                    on_change(now_held)
                    last = now_held
                stop.wait(self.settings.retry_period)
        finally:
            self.release()
            on_change(frozenset())

    def release(self, repos: Iterable[str] | None = None) -> None:
        """Stop acting on ``repos`` (default: all held), then hand their Leases back."""
        chosen = list(repos) if repos is not None else list(self.repos)
        with self._lock:
            ours = [r for r in chosen if self._state[r].valid_until > -math.inf]
            for repo in ours:
                self._state[repo].valid_until = -math.inf
        for repo in ours:
            try:
                obj = self.kube.get(self.ref(repo), retry=_LEASE_RETRY)
                if obj is None or LeaseRecord.from_object(obj).holder != self.identity:
                    continue
                stamp = self._stamp()
                spec = {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": stamp}
                self._put(repo, obj, spec)
                log.info("lease_released", repo=clean_url(repo), identity=self.identity)
            except ClusterError as exc:
                log.warning("lease_release_failed", repo=clean_url(repo), error=str(exc))

    # -- one attempt ---------------------------------------------------------------------

    def _order(self) -> list[str]:
        """Repos in an order of this replica's own, so that replicas try different ones first."""
        return sorted(
            self.repos, key=lambda r: hashlib.sha256(f"{self.identity}/{r}".encode()).digest()
        )

    def _attempt(self, repo: str, *, may_take: bool) -> Step:
        # Our own validity counts from before the request (we may act only less long);
        # another holder's record counts from after we read it (it may act that long).
        started = self.clock()
        try:
            obj = self.kube.get(self.ref(repo), retry=_LEASE_RETRY)
            record = LeaseRecord.from_object(obj) if obj is not None else None
            read_at = self.clock()
            observed_at = self._observe(repo, record, read_at)
            step = decide(record, self.identity, observed_at, read_at)
            if step is Step.WAIT or (step in {Step.CREATE, Step.TAKE} and not may_take):
                if record is not None and record.holder != self.identity:
                    self._lose(repo, record.holder)
                return Step.WAIT
            self._write(repo, obj, record, step)
        except ConflictError:
            return Step.WAIT  # another replica wrote first; we will see its record next tick
        except ClusterError as exc:
            log.warning("lease_attempt_failed", repo=clean_url(repo), error=str(exc))
            return Step.WAIT
        with self._lock:
            newly = self._state[repo].valid_until <= self.clock()
            self._state[repo].valid_until = started + self.settings.renew_deadline
        if newly:
            log.info("lease_acquired", repo=clean_url(repo), identity=self.identity)
        return step

    def _observe(self, repo: str, record: LeaseRecord | None, at: float) -> float:
        with self._lock:
            held = self._state[repo]
            if record is None:
                held.observed = None
                return at
            if held.observed is None or held.observed[0] != record.key:
                held.observed = (record.key, at)
            return held.observed[1]

    def _lose(self, repo: str, holder: str) -> None:
        with self._lock:
            was_ours = self._state[repo].valid_until > -math.inf
            self._state[repo].valid_until = -math.inf
        if was_ours:
            log.warning("lease_lost", repo=clean_url(repo), holder=holder)

    def _write(
        self, repo: str, obj: Mapping[str, Any] | None, record: LeaseRecord | None, step: Step
    ) -> None:
        stamp = self._stamp()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.settings.duration_seconds,
            "renewTime": stamp,
        }
        if step is Step.CREATE:
            spec |= {"acquireTime": stamp, "leaseTransitions": 0}
            ref = self.ref(repo)
            resource, namespace = self.kube.locate(ref)
            body = {
                "apiVersion": LEASE_API,
                "kind": "Lease",
                "metadata": {
                    "name": ref.name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "gitops-reconciler"},
                    "annotations": {REPO_ANNOTATION: clean_url(repo)},
                },
                "spec": spec,
            }
            created = self.kube.request(
                "create",
                "POST",
                resource.path(namespace),
                target=resource.target(namespace, ref.name),
                body=body,
                query={"fieldManager": self.kube.field_manager},
                retry=_LEASE_RETRY,
            )
            self._observe(repo, LeaseRecord.from_object(created), self.clock())
            return
        if obj is None or record is None:
            raise ValueError(f"{step} needs the Lease as read")  # decide() never asks it
        if step is Step.TAKE:
            spec |= {"acquireTime": stamp, "leaseTransitions": record.transitions + 1}
        self._put(repo, obj, spec)

    def _put(self, repo: str, obj: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        ref = self.ref(repo)
        resource, namespace = self.kube.locate(ref)
        body = dict(obj)
        body["spec"] = {**(obj.get("spec") or {}), **spec}
        updated = self.kube.request(
            "update",
            "PUT",
            resource.path(namespace, ref.name),
            target=resource.target(namespace, ref.name),
            body=body,
            query={"fieldManager": self.kube.field_manager},
            retry=_LEASE_RETRY,
        )
        self._observe(repo, LeaseRecord.from_object(updated), self.clock())

    def _stamp(self) -> str:
        """``MicroTime`` as the API wants it: ``2025-01-31T12:00:00.000000Z``."""
        return self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
