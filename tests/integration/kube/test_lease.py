"""Leader election per Env repo with real Leases: two reconcilers, three repos."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.cluster.client import Kube, RetryPolicy
from reconciler.cluster.lease import LeaseRecord, LeaseSettings, RepoLeases, lease_name
from reconciler.cluster.resources import ObjectRef
from tests.fixtures.kube import KubeServer, apply, delete

pytestmark = pytest.mark.integration

REPOS = (
    "https://git.example/team-a/env.git",
    "https://git.example/team-b/env.git",
    "ssh://git@git.example/team-c/env.git",
)
FAST = LeaseSettings(lease_duration=2.0, renew_deadline=1.5, retry_period=0.1)


@dataclass
class Window:
    """A moment a replica acted on a repo, and until when it believed it could."""

    identity: str
    start: float
    until: float


@dataclass
class Replica:
    """A reconciler's election loop in a thread, recording every moment it acts."""

    leases: RepoLeases
    windows: dict[str, list[Window]]
    lock: threading.Lock
    stop: threading.Event = field(default_factory=threading.Event)
    crash: bool = False
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=self.leases.identity)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.leases.tick()
            for repo in self.leases.repos:
                now = self.leases.clock()
                until = self.leases.valid_until(repo)
                if now < until:  # "acting" on the repo: only while the Lease says so
                    with self.lock:
                        self.windows[repo].append(Window(self.leases.identity, now, until))
            self.stop.wait(self.leases.settings.retry_period)
        if not self.crash:  # a crash hands nothing back: its Leases must expire
            self.leases.release()

    def halt(self, *, crash: bool = False) -> float:
        self.crash = crash
        self.stop.set()
        assert self.thread is not None
        self.thread.join()
        return time.monotonic()


def assert_one_actor_at_a_time(windows: dict[str, list[Window]], replicas: list[Replica]) -> None:
    """No two replicas could act on a repo at once.

    A replica may act until its renew deadline; one that released its Leases stopped
    acting when it released them. A crashed (or hung) one counts as acting until its
    deadline: nobody may take over before that.
    """
    handed_back = {
        (r.leases.identity, repo): sorted(t for name, t in r.leases.handed_back if name == repo)
        for r in replicas
        for repo in windows
    }

    def end(window: Window, repo: str) -> float:
        # until its deadline, or until it handed the repo back (all at once, or over its share)
        later = [t for t in handed_back[window.identity, repo] if t >= window.start]
        return min([window.until, *later[:1]])

    for repo, seen in windows.items():
        for a in seen:
            for b in seen:
                if a.identity != b.identity:
                    overlap = min(end(a, repo), end(b, repo)) - max(a.start, b.start)
                    assert overlap < 0, f"{repo}: {a} and {b} acted at the same time"


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    pytest.fail(f"condition not met within {timeout} s")


def _replica(
    kube: Kube,
    name: str,
    namespace: str,
    windows: dict[str, list[Window]],
    lock: threading.Lock,
    *,
    timing: LeaseSettings = FAST,
) -> Replica:
    settings = LeaseSettings(
        lease_duration=timing.lease_duration,
        renew_deadline=timing.renew_deadline,
        retry_period=timing.retry_period,
        namespace=namespace,
    )
    return Replica(RepoLeases(kube, tuple(windows), name, settings), windows, lock)


FLEET = tuple(f"https://git.example/team-{i:02d}/env.git" for i in range(30))
FLEET_TIMING = LeaseSettings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)


def test_three_replicas_share_thirty_repos_and_the_survivors_of_a_kill_take_its_ten_at_once(
    kube_server: KubeServer, namespace: str
) -> None:
    """Taking one free Lease per retry period, ten repos would take five seconds more."""
    windows: dict[str, list[Window]] = {repo: [] for repo in FLEET}
    lock = threading.Lock()
    connections = [kube_server.connect() for _ in range(3)]
    replicas = [
        _replica(kube, f"replica-{i}", namespace, windows, lock, timing=FLEET_TIMING)
        for i, kube in enumerate(connections)
    ]
    try:
        for replica in replicas:
            replica.start()
        wait_for(lambda: all(len(r.leases.held()) == 10 for r in replicas), 30)
        assert frozenset().union(*(r.leases.held() for r in replicas)) == set(FLEET)
        victim, survivors = replicas[0], replicas[1:]
        theirs = victim.leases.held()
        killed_at = victim.halt(crash=True)  # kill -9: nothing handed back, its Leases expire

        def taken() -> bool:
            return theirs <= frozenset().union(*(r.leases.held() for r in survivors))

        wait_for(taken, FLEET_TIMING.lease_duration + 5)
        took = time.monotonic() - killed_at
        # expiry is seen up to a retry period late; a second for the round's 30 requests
        bound = FLEET_TIMING.lease_duration + FLEET_TIMING.retry_period + 1.0
        assert took < bound, f"the survivors took {took:.2f} s for the killed replica's repos"
        wait_for(lambda: all(len(r.leases.held()) == 15 for r in survivors), 5)
    finally:
        for replica in replicas:
            if not replica.stop.is_set():
                replica.halt()
        for kube in connections:
            kube.close()
    assert_one_actor_at_a_time(windows, replicas)


def test_each_repo_has_one_actor_and_a_stopped_replicas_repos_move_within_the_lease_duration(
    admin: Kube, kube_server: KubeServer, namespace: str
) -> None:
    windows: dict[str, list[Window]] = {repo: [] for repo in REPOS}
    lock = threading.Lock()
    other = kube_server.connect()
    replicas = [
        _replica(admin, "replica-a", namespace, windows, lock),
        _replica(other, "replica-b", namespace, windows, lock),
    ]
    try:
        for replica in replicas:
            replica.start()
        wait_for(lambda: all(any(r.leases.holds(repo) for r in replicas) for repo in REPOS), 5)
        time.sleep(1.0)  # several renewals
        held = {r.leases.identity: r.leases.held() for r in replicas}
        assert held["replica-a"] | held["replica-b"] == set(REPOS)
        assert not held["replica-a"] & held["replica-b"]
        # the Lease objects say the same
        for repo in REPOS:
            lease = admin.get(
                ObjectRef("coordination.k8s.io/v1", "Lease", lease_name(repo), namespace)
            )
            assert lease is not None
            holder = LeaseRecord.from_object(lease).holder
            assert repo in held[holder]

        leaving = max(replicas, key=lambda r: len(r.leases.held()))
        staying = next(r for r in replicas if r is not leaving)
        theirs = leaving.leases.held()
        leaving.halt()
        moved_after = wait_for(lambda: theirs <= staying.leases.held(), FAST.lease_duration)
        assert moved_after < FAST.lease_duration
        time.sleep(0.3)
    finally:
        for replica in replicas:
            if not replica.stop.is_set():
                replica.halt()
        other.close()
    assert_one_actor_at_a_time(windows, replicas)


class HeartbeatBetweenReadAndWrite(Kube):
    """A connection that, once armed, lets another replica beat between our read and write.

    Every replica writes the members Lease each retry period, so a leaving replica's
    read-modify-write meets a newer version often; here it does every time it is armed.
    """

    def __init__(self, kube: Kube, members: ObjectRef) -> None:
        super().__init__(kube.api, namespace=kube.namespace, retry=kube.retry)
        self.members = members
        self.beat_between: list[RepoLeases] = []

    def get(self, ref: ObjectRef, *, retry: RetryPolicy | None = None) -> dict[str, Any] | None:
        obj = super().get(ref, retry=retry)
        if ref == self.members and self.beat_between:
            self.beat_between.pop().tick()  # a real write by the other replica
        return obj


def test_a_leaving_replica_whose_write_meets_a_newer_heartbeat_still_leaves_at_once(
    admin: Kube, kube_server: KubeServer, namespace: str
) -> None:
    settings = LeaseSettings(
        lease_duration=30.0, renew_deadline=20.0, retry_period=0.1, namespace=namespace
    )
    other = kube_server.connect()
    staying = RepoLeases(other, REPOS, "replica-b", settings)
    racing = HeartbeatBetweenReadAndWrite(admin, staying.members_ref())
    leaving = RepoLeases(racing, REPOS, "replica-a", settings)
    try:
        for _ in range(3):
            leaving.tick()
            staying.tick()
        assert staying.fair_share() == 2  # counts both
        racing.beat_between.append(staying)  # our first write in leaving conflicts
        leaving.release()
        assert not racing.beat_between  # the other replica did write in between
        members = admin.get(staying.members_ref())
        assert members is not None
        beats = members["metadata"]["annotations"]
        assert not any("replica-a" in value for value in beats.values())
        # the one left counts itself alone now, not a Lease duration (30 s) later
        assert staying.fair_share() == len(REPOS)
        for _ in range(len(REPOS)):
            staying.tick()
        assert staying.held() == frozenset(REPOS)
    finally:
        staying.release()
        other.close()  # racing shares admin's connection: the fixture closes it


def test_a_replica_that_starts_later_gets_its_share_and_no_repo_ever_has_two_actors(
    admin: Kube, kube_server: KubeServer, namespace: str
) -> None:
    windows: dict[str, list[Window]] = {repo: [] for repo in REPOS}
    lock = threading.Lock()
    first = _replica(admin, "early", namespace, windows, lock)
    first.start()
    others = [kube_server.connect(), kube_server.connect()]
    late = [
        _replica(others[0], "late-1", namespace, windows, lock),
        _replica(others[1], "late-2", namespace, windows, lock),
    ]
    replicas = [first, *late]
    try:
        wait_for(lambda: first.leases.held() == set(REPOS), 5)
        for replica in late:
            replica.start()
        # three repos, three replicas: one each, every repo held
        wait_for(lambda: all(len(r.leases.held()) == 1 for r in replicas), 10)
        time.sleep(0.5)
        held = [r.leases.held() for r in replicas]
        assert all(len(h) == 1 for h in held)
        assert frozenset().union(*held) == set(REPOS)
        # one leaves: its repo goes to one of the two others
        leaving = late[0]
        theirs = leaving.leases.held()
        leaving.halt()
        wait_for(lambda: any(theirs <= r.leases.held() for r in (first, late[1])), 5)
    finally:
        for replica in replicas:
            if not replica.stop.is_set():
                replica.halt()
        for kube in others:
            kube.close()
    assert_one_actor_at_a_time(windows, replicas)


def test_a_crashed_replica_is_replaced_only_after_its_lease_expired(
    admin: Kube, kube_server: KubeServer, namespace: str
) -> None:
    windows: dict[str, list[Window]] = {repo: [] for repo in REPOS}
    lock = threading.Lock()
    first = _replica(admin, "first", namespace, windows, lock)
    first.start()
    wait_for(lambda: first.leases.held() == set(REPOS), 5)
    other = kube_server.connect()
    second = _replica(other, "second", namespace, windows, lock)
    try:
        second.start()
        # the first hands back what is over its share (3 repos, 2 replicas: 2 and 1)
        wait_for(lambda: len(second.leases.held()) == 1, 5)
        time.sleep(0.5)  # and it stays so
        assert (len(first.leases.held()), len(second.leases.held())) == (2, 1)
        crashed_at = first.halt(crash=True)  # no release: the Leases must expire
        taken_after = wait_for(lambda: second.leases.held() == set(REPOS), 2 * FAST.lease_duration)
        # not before the duration (measured from the last renewal the others saw)...
        assert taken_after + 2 * FAST.retry_period > FAST.lease_duration - FAST.renew_deadline
        # ...and soon after it
        assert time.monotonic() - crashed_at < FAST.lease_duration + 1.0
    finally:
        second.halt()
        other.close()
    assert_one_actor_at_a_time(windows, [first, second])


def test_a_replica_that_cannot_renew_stops_acting_before_anyone_can_take_over(
    admin: Kube, kube_server: KubeServer, namespace: str
) -> None:
    """Its RoleBinding is deleted: renewals are denied, it stops at its renew deadline."""
    user = f"system:serviceaccount:{namespace}:replica"
    apply(
        admin,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "replica", "namespace": namespace},
        },
    )
    apply(
        admin,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "leases", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["get", "create", "update"],
                }
            ],
        },
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "replica-leases", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"},
        "subjects": [{"kind": "ServiceAccount", "name": "replica", "namespace": namespace}],
    }
    apply(admin, binding)
    windows: dict[str, list[Window]] = {repo: [] for repo in REPOS}
    lock = threading.Lock()
    denied_kube = kube_server.connect(impersonate=user)
    doomed = _replica(denied_kube, "doomed", namespace, windows, lock)
    doomed.start()
    other = kube_server.connect()
    survivor = _replica(other, "survivor", namespace, windows, lock)
    try:
        wait_for(lambda: doomed.leases.held() == set(REPOS), 5)
        survivor.start()
        delete(
            admin,
            ObjectRef("rbac.authorization.k8s.io/v1", "RoleBinding", "replica-leases", namespace),
        )
        denied_at = time.monotonic()
        stopped_after = wait_for(lambda: doomed.leases.held() == frozenset(), FAST.lease_duration)
        assert stopped_after <= FAST.renew_deadline + 0.1
        wait_for(lambda: survivor.leases.held() == set(REPOS), 2 * FAST.lease_duration)
        assert time.monotonic() - denied_at > FAST.renew_deadline
    finally:
        doomed.halt(crash=True)
        survivor.halt()
        denied_kube.close()
        other.close()
    assert_one_actor_at_a_time(windows, [doomed, survivor])
