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

Replicas that start apart are balanced too: each one writes a heartbeat into one shared
Lease (``<prefix>-members``, an annotation per replica,
so no ``list`` permission is needed) and counts the replicas whose heartbeat it saw change
within the Lease duration. A replica takes a free Lease only while it holds fewer than its
fair share (the repos divided by the replicas, rounded up) and hands one back (stopping
acting first) each tick it holds more; a Lease left free for a whole Lease duration is
taken by anyone, so a miscount can delay a repo but never leave it without an actor.
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
from reconciler.config import LeaderElectionSettings, lease_timing_problem

log = structlog.get_logger(__name__)

LEASE_API = "coordination.k8s.io/v1"
REPO_ANNOTATION = "gitops-reconciler.dev/env-repo"
MEMBER_ANNOTATION = "gitops-reconciler.dev/member-"
"""Prefix of a replica's heartbeat annotation on the members Lease (plus a hash of its name)."""
_FORGET_AFTER = 10
"""Lease durations after which a heartbeat that stopped changing is removed."""
_LEASE_RETRY = RetryPolicy(attempts=2, initial_wait=0.1, max_wait=0.5)
_LEAVE_ATTEMPTS = 5
"""Reads and writes of the members Lease to take our heartbeat off, while others write it."""


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
        problem = lease_timing_problem(self.retry_period, self.renew_deadline, self.lease_duration)
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def from_settings(
        cls, settings: LeaderElectionSettings, namespace: str | None
    ) -> LeaseSettings:
        """The timings of the ``leaderElection`` settings; the Leases in ``namespace``."""
        return cls(
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
            namespace=namespace,
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
    uid: str = ""
    """The Lease object's uid: a deleted and recreated Lease counts its terms afresh."""

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
            uid=str((obj.get("metadata") or {}).get("uid", "")),
        )

    @property
    def key(self) -> tuple[str, int, str | None, int]:
        """What changes when the holder renews or someone takes the Lease."""
        return (self.holder, self.duration, self.renew_time, self.transitions)


_SOONEST = 0.05
"""Seconds at least between two rounds (and past an expiry, so it has passed when we look)."""


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
    term: tuple[str, int] | None = None
    """(uid, ``leaseTransitions``) of the Lease as we last wrote it (None: never held)."""


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
    _members: dict[str, tuple[str, float]] = field(default_factory=dict, init=False, repr=False)
    """The heartbeats on the members Lease when we last read it: key -> (value, when we saw
    it change)."""
    handed_back: list[tuple[str, float]] = field(default_factory=list, init=False, repr=False)
    """(repo, when on ``clock``) for each Lease handed back: this replica stopped acting
    on the repo then, before the Lease was freed for another."""
    _beats: int = field(default=0, init=False, repr=False)
    _started: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._state = {repo: _Held() for repo in self.repos}

    def set_repos(self, repos: Iterable[str]) -> None:
        """Serve ``repos`` from now on: new ones are contended for, dropped ones handed back."""
        wanted = tuple(dict.fromkeys(repos))
        with self._lock:
            dropped = [repo for repo in self.repos if repo not in wanted]
        if dropped:
            self.release(dropped)
        with self._lock:
            for repo in wanted:
                self._state.setdefault(repo, _Held())
            for repo in dropped:
                self._state.pop(repo, None)
            self.repos = wanted

    def term(self, repo: str) -> tuple[str, int] | None:
        """(Lease uid, our term) on ``repo`` while we may act on it (None: we may not)."""
        with self._lock:
            held = self._state.get(repo)
            if held is None or self.clock() >= held.valid_until:
                return None
            return held.term

    def ref(self, repo: str) -> ObjectRef:
        """The Lease of ``repo``."""
        namespace = self.settings.namespace or self.kube.namespace
        return ObjectRef(LEASE_API, "Lease", lease_name(repo, self.settings.name_prefix), namespace)

    def holds(self, repo: str) -> bool:
        """Whether this replica may act on ``repo`` now (its renewal is recent enough)."""
        with self._lock:
            held = self._state.get(repo)
            return held is not None and self.clock() < held.valid_until

    def held(self) -> frozenset[str]:
        """The repos this replica may act on now."""
        return frozenset(repo for repo in self.repos if self.holds(repo))

    def valid_until(self, repo: str) -> float:
        """Until when (on ``clock``) this replica may act on ``repo`` (-inf: not at all)."""
        with self._lock:
            held = self._state.get(repo)
            return -math.inf if held is None else held.valid_until

    def tick(self) -> frozenset[str]:
        """Renew what we hold, take a free Lease while under our share; return what we hold.

        For the first Lease duration at most one Lease is taken per tick, then as many as
        our share lacks; while over our fair share, one is handed back.
        """
        if self._started is None:
            self._started = self.clock()
        share = self.fair_share()
        holding = len(self.held())
        warmed = self.clock() - self._started >= self.settings.lease_duration
        budget = max(1, share - holding) if warmed else 1
        taken = 0
        for repo in self._order():
            step = self._attempt(repo, may_take=taken < budget, over_share=holding + taken >= share)
            taken += step in {Step.CREATE, Step.TAKE}
        held = self.held()
        if len(held) > share:
            surplus = next(repo for repo in reversed(self._order()) if repo in held)
            log.info("lease_handed_back", repo=clean_url(surplus), share=share, held=len(held))
            self.release([surplus])
            held = self.held()
        return held

    def fair_share(self) -> int:
        """The repos this replica should hold: all of them divided by the live replicas.

        With one repo the share is that repo whatever the replicas: no heartbeat is kept.
        """
        if len(self.repos) <= 1:
            return len(self.repos)
        replicas = self._heartbeat()
        return math.ceil(len(self.repos) / replicas)

    def run(self, stop: threading.Event, on_change: Callable[[frozenset[str]], None]) -> None:
        """Tick every ``retry_period`` until ``stop`` is set, then release what we hold."""
        last: frozenset[str] = frozenset()
        try:
            while not stop.is_set():
                now_held = self.tick()
                if now_held != last:
                    on_change(now_held)
                    last = now_held
                stop.wait(self.next_wait())
        finally:
            self.release()
            on_change(frozenset())

    def next_wait(self) -> float:
        """Seconds until the next round: a retry period, or less when something expires sooner.

        Another replica's Lease, or heartbeat, that stops changing expires a Lease duration
        after we saw it change; a round then, not up to a retry period later, takes over a
        killed replica's repos (and counts it gone) within the duration and the lag of our
        last look at it. A Lease that keeps being renewed never comes due, so a steady
        fleet still looks once a retry period.
        """
        now = self.clock()
        due = [now + self.settings.retry_period]
        with self._lock:
            for held in self._state.values():
                if held.observed is not None and held.valid_until == -math.inf:
                    (holder, duration, _renewed, _transitions), seen = held.observed
                    if holder and holder != self.identity:
                        due.append(seen + duration)
            due.extend(
                changed + self.settings.lease_duration for _value, changed in self._members.values()
            )
        upcoming = [at for at in due if at > now]
        return max(_SOONEST, min(upcoming) - now + _SOONEST)

    def release(self, repos: Iterable[str] | None = None) -> None:
        """Stop acting on ``repos`` (default: all held, and leave), then hand them back."""
        if repos is None and len(self.repos) > 1:
            self._leave()
        chosen = list(repos) if repos is not None else list(self.repos)
        with self._lock:
            ours = [
                r for r in chosen if r in self._state and self._state[r].valid_until > -math.inf
            ]
            stopped = self.clock()
            for repo in ours:
                self._state[repo].valid_until = -math.inf
                self.handed_back.append((repo, stopped))
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

    # -- membership ----------------------------------------------------------------------

    def members_ref(self) -> ObjectRef:
        """The Lease that carries the heartbeats of every replica serving these repos."""
        namespace = self.settings.namespace or self.kube.namespace
        # one per deployment (its prefix), not per repo set: replicas that see different
        # sets for a moment (a config change, a discovery) still count each other
        return ObjectRef(LEASE_API, "Lease", f"{self.settings.name_prefix}-members", namespace)

    def _heartbeat(self) -> int:
        """Write our heartbeat; return how many replicas (ourselves included) are alive.

        A replica is alive while its heartbeat changed within the Lease duration, as seen
        on our own clock. When the members Lease cannot be read or written, we count on
        what we saw last.
        """
        ref = self.members_ref()
        mine = self._member_key()
        self._beats += 1
        try:
            obj = self.kube.get(ref, retry=_LEASE_RETRY)
            annotations = dict(((obj or {}).get("metadata") or {}).get("annotations") or {})
            now = self.clock()
            self._see_members(annotations, now)
            forget = _FORGET_AFTER * self.settings.lease_duration
            annotations = {
                key: value
                for key, value in annotations.items()
                if key not in self._members or now - self._members[key][1] < forget
            }
            annotations[mine] = f"{self.identity} {self._beats}"
            self._write_members(ref, obj, annotations)
        except ClusterError as exc:  # a conflict included: another replica wrote first
            log.debug("lease_heartbeat_skipped", error=str(exc))
        now = self.clock()
        alive = {
            key
            for key, (_value, changed) in self._members.items()
            if now - changed < self.settings.lease_duration
        }
        return len(alive | {mine})

    def _member_key(self) -> str:
        return MEMBER_ANNOTATION + hashlib.sha256(self.identity.encode()).hexdigest()[:12]

    def _leave(self) -> None:
        """Take our heartbeat off the members Lease, so the others recount at once.

        Every replica writes its heartbeat to that one object each retry period, so our
        write often meets a newer version: we read it again and retry. Were we to give
        up, the others would count us alive, and leave our repos alone, for a Lease
        duration.
        """
        ref = self.members_ref()
        for attempt in range(1, _LEAVE_ATTEMPTS + 1):
            try:
                obj = self.kube.get(ref, retry=_LEASE_RETRY)
                annotations = dict(((obj or {}).get("metadata") or {}).get("annotations") or {})
                if obj is None or annotations.pop(self._member_key(), None) is None:
                    return
                self._write_members(ref, obj, annotations)
            except ConflictError as exc:
                if attempt == _LEAVE_ATTEMPTS:
                    log.warning("lease_leave_failed", error=str(exc), attempts=attempt)
            except ClusterError as exc:
                log.warning("lease_leave_failed", error=str(exc), attempts=attempt)
                return
            else:
                return

    def _see_members(self, annotations: Mapping[str, str], now: float) -> None:
        """Keep each heartbeat on the members Lease, with when we saw its value change."""
        members: dict[str, tuple[str, float]] = {}
        for key, value in annotations.items():
            if key.startswith(MEMBER_ANNOTATION):
                previous = self._members.get(key)
                if previous is not None and previous[0] == value:
                    members[key] = previous
                else:
                    members[key] = (value, now)
        self._members = members

    def _write_members(
        self, ref: ObjectRef, obj: Mapping[str, Any] | None, annotations: dict[str, str]
    ) -> None:
        if obj is None:
            self._create(ref, annotations, {})
            return
        body = dict(obj)
        body["metadata"] = {**(obj.get("metadata") or {}), "annotations": annotations}
        self._update(ref, body)

    # -- one attempt ---------------------------------------------------------------------

    def _order(self) -> list[str]:
        """Repos in an order of this replica's own, so that replicas try different ones first."""
        return sorted(
            self.repos, key=lambda r: hashlib.sha256(f"{self.identity}/{r}".encode()).digest()
        )

    def _attempt(self, repo: str, *, may_take: bool, over_share: bool = False) -> Step:
        # Our own validity counts from before the request (we may act only less long);
        # another holder's record counts from after we read it (it may act that long).
        started = self.clock()
        try:
            obj = self.kube.get(self.ref(repo), retry=_LEASE_RETRY)
            record = LeaseRecord.from_object(obj) if obj is not None else None
            read_at = self.clock()
            observed_at = self._observe(repo, record, read_at)
            step = decide(record, self.identity, observed_at, read_at)
            if over_share and step in {Step.CREATE, Step.TAKE}:
                # over our share only a Lease nobody took for a whole duration is ours to take
                unclaimed = record is not None and (
                    read_at - observed_at >= self.settings.lease_duration
                )
                may_take = may_take and unclaimed
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
            held = self._state.get(repo)
            if held is None:  # dropped from the set meanwhile: hand it back at once
                return step
            newly = held.valid_until <= self.clock()
            held.valid_until = started + self.settings.renew_deadline
        if newly:
            log.info("lease_acquired", repo=clean_url(repo), identity=self.identity)
        return step

    def _observe(self, repo: str, record: LeaseRecord | None, at: float) -> float:
        with self._lock:
            held = self._state.get(repo)
            if held is None:  # dropped from the set meanwhile
                return at
            if record is None:
                held.observed = None
                return at
            if held.observed is None or held.observed[0] != record.key:
                held.observed = (record.key, at)
            if record.holder == self.identity:
                held.term = (record.uid, record.transitions)
            return held.observed[1]

    def _lose(self, repo: str, holder: str) -> None:
        with self._lock:
            held = self._state.get(repo)
            if held is None:
                return
            was_ours = held.valid_until > -math.inf
            held.valid_until = -math.inf
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
            created = self._create(self.ref(repo), {REPO_ANNOTATION: clean_url(repo)}, spec)
            self._observe(repo, LeaseRecord.from_object(created), self.clock())
            return
        if obj is None or record is None:
            raise ValueError(f"{step} needs the Lease as read")  # decide() never asks it
        if step is Step.TAKE:
            spec |= {"acquireTime": stamp, "leaseTransitions": record.transitions + 1}
        self._put(repo, obj, spec)

    def _put(self, repo: str, obj: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        body = dict(obj)
        body["spec"] = {**(obj.get("spec") or {}), **spec}
        updated = self._update(self.ref(repo), body)
        self._observe(repo, LeaseRecord.from_object(updated), self.clock())

    def _create(
        self, ref: ObjectRef, annotations: Mapping[str, str], spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create the Lease ``ref`` (labelled as ours); return it as the API server wrote it."""
        resource, namespace = self.kube.locate(ref)
        body = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {
                "name": ref.name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "gitops-reconciler"},
                "annotations": dict(annotations),
            },
            "spec": dict(spec),
        }
        return self.kube.request(
            "create",
            "POST",
            resource.path(namespace),
            target=resource.target(namespace, ref.name),
            body=body,
            query={"fieldManager": self.kube.field_manager},
            retry=_LEASE_RETRY,
        )

    def _update(self, ref: ObjectRef, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the Lease ``ref`` with ``body`` (its resourceVersion guards the write)."""
        resource, namespace = self.kube.locate(ref)
        return self.kube.request(
            "update",
            "PUT",
            resource.path(namespace, ref.name),
            target=resource.target(namespace, ref.name),
            body=body,
            query={"fieldManager": self.kube.field_manager},
            retry=_LEASE_RETRY,
        )

    def _stamp(self) -> str:
        """``MicroTime`` as the API wants it: ``2025-01-31T12:00:00.000000Z``."""
        return self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
