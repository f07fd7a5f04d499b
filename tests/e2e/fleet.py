"""A fleet: many Env repos, served by several ``reconciler run`` replicas under leader election.

``Fleet`` holds one ``World`` per Env repo (its own namespace, VirtualService and traffic
simulator, scraped by the session's Prometheus; no process of its own), one config file
whose ``repos:`` list names every repo, and the replicas the test starts: each is
``python -m reconciler run --config FILE`` with its own cache and port, hence its own
identity (``<hostname>-<pid>``, as ``Rollout-Actor`` names it). Who holds which repo is
read from the Lease objects (``holderIdentity``) through the admin connection.

The end is read from Git alone (``assert_*``), as a person would with ``git log``:

- every commit of the state branch and every outcome on main names its actor and Lease term,
  the terms of a repo's Lease never go down along its state branch, and each term has one
  actor: no two replicas acted on a repo at once;
- iterations are neither skipped nor repeated beyond the bound DESIGN.md sets. It never says
  "at least once" in so many words; what bounds repeats is: a decision is recorded before it
  is acted on (section 2, invariant 2), each transition is one commit (3), acting twice on a
  recorded decision is harmless (5), no iteration is judged on a split the cluster did not
  carry (8), and a new process carries on from the state tip (section 5). So an iteration is
  judged, and recorded, exactly once: whoever takes a repo over starts from the tip and
  never judges again what the tip holds. What is at least once is the act: a replica killed
  (or handing a Lease back) between its state push and its weights patch leaves the
  decision recorded but not carried, and the next holder sets those weights and records it
  in one commit that judges nothing (``Rollout-Skipped``: the next iteration; the same
  ``Rollout-Iteration``). The bound enforced: the state commits of an experiment other than
  such skips are exactly an uninterrupted run's, and each skip was written in another Lease
  term than the commit before it, so there are at most as many as the repo changed hands.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.client import Kube
from reconciler.cluster.lease import LEASE_API, LeaseRecord, lease_name
from reconciler.cluster.resources import discovery_path
from reconciler.controller.actor import ACTOR, LEASE_TERM, parse_term
from tests.e2e.envrepo import STATE, Commit, ExperimentFile
from tests.e2e.outcomes import assert_promoted_once, finished
from tests.e2e.world import (
    PROCESS_START,
    VIRTUAL_SERVICE,
    ProcessUnreachableError,
    ReconcilerProcess,
    World,
    route_weights,
)
from tests.fixtures.net import free_port
from tests.gitutil import git

LEASE_DURATION = 4.0
RENEW_DEADLINE = 3.0
RETRY_PERIOD = 1.0
INTERVAL = 2.0
"""Seconds between a repo's ticks (fetches): 15 a second for the fleet, not 30, on 2 cores."""
POLL = 0.25
"""Seconds between two looks at the Leases (one LIST request)."""
GIT_POLL = 1.0
"""Seconds between two looks at the Env repos (a git process for each repo looked at)."""


@dataclass(frozen=True)
class Replica:
    """One ``reconciler run`` process of the fleet."""

    name: str
    process: ReconcilerProcess

    @property
    def identity(self) -> str:
        """How its Leases and its commits name it (``Rollout-Actor``)."""
        return f"{socket.gethostname()}-{self.process.popen.pid}"


class SharedWeights:
    """Every namespace's VirtualService weights, for all the simulators, from one LIST.

    The simulators are advanced at each scrape of the one simulator server, and each reads
    its VirtualService first: 30 GETs in a row inside every scrape, which on a busy machine
    outlast Prometheus's 1 s scrape timeout (no data, then no verdict). One LIST of the
    VirtualServices of every namespace, at most every ``max_age`` seconds, reads the same
    weights from the same API server.
    """

    def __init__(self, kube: Kube, max_age: float = 0.1) -> None:
        """Read through ``kube`` (a connection of its own: scrapes come on other threads)."""
        self._kube = kube
        self._max_age = max_age
        self._read_at = -math.inf
        self._weights: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, _kube: Kube, namespace: str) -> dict[str, int] | None:
        """The weights in ``namespace`` (a ``WeightReader``; ``_kube`` is not needed)."""
        with self._lock:
            if time.monotonic() - self._read_at > self._max_age:
                try:
                    self._weights = self._list()
                finally:  # a failed LIST too: the other simulators keep their last weights
                    self._read_at = time.monotonic()
            return self._weights.get(namespace)

    def _list(self) -> dict[str, dict[str, int]]:
        api_version, kind, name = VIRTUAL_SERVICE
        resource = self._kube.resource(api_version, kind)
        answer = self._kube.request(
            "list",
            "GET",
            f"{discovery_path(api_version)}/{resource.plural}",  # every namespace's
            target=resource.target(),
        )
        return {
            obj["metadata"]["namespace"]: route_weights(obj)
            for obj in answer.get("items") or []
            if obj["metadata"]["name"] == name
        }


class EveryRepo:
    """A condition on each repo that, once true for a repo, stays true (it is not asked again).

    Truthy once it holds for every repo; ``str`` names the repos it does not hold for yet.
    """

    def __init__(self, worlds: Iterable[World], holds: Callable[[World], object]) -> None:
        """``holds(world)``: whether the condition holds for that world's repo now."""
        self.pending = list(worlds)
        self._holds = holds

    def __call__(self) -> bool:
        """Ask the repos it did not hold for yet; whether it holds for all now."""
        self.pending = [world for world in self.pending if not self._holds(world)]
        return not self.pending

    def __str__(self) -> str:
        return f"not yet in {len(self.pending)}: {[w.namespace for w in self.pending]}"


class Fleet:
    """Env repos, one config file naming them all, and the replicas serving them."""

    def __init__(
        self,
        tmp: Path,
        worlds: Sequence[World],
        *,
        admin: Kube,
        kubeconfig: Path,
        lease_namespace: str,
        prometheus_url: str,
    ) -> None:
        """Write the config file; no replica runs yet."""
        self.tmp = tmp
        self.worlds = list(worlds)
        self.admin = admin
        self.lease_namespace = lease_namespace
        self.replicas: list[Replica] = []
        """Every replica started, in order."""
        self.live: list[Replica] = []
        """The replicas that should be running now."""
        self.config = tmp / "config.yaml"
        config: dict[str, Any] = {
            "interval": INTERVAL,
            "prometheus": {"url": prometheus_url, "timeout": 2},
            "kubernetes": {"kubeconfig": str(kubeconfig), "namespace": lease_namespace},
            "leaderElection": {
                "enabled": True,
                "leaseDuration": LEASE_DURATION,
                "renewDeadline": RENEW_DEADLINE,
                "retryPeriod": RETRY_PERIOD,
            },
            "log": {"json": True, "level": "info"},
            # each repo may weight its own namespace only
            "repos": [
                {"repo": w.repo.url, "kubernetes": {"weightNamespaces": [w.namespace]}}
                for w in self.worlds
            ],
        }
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML

    # -- replicas -----------------------------------------------------------------------

    def start(self, count: int = 1) -> list[Replica]:
        """Start ``count`` replicas at once; returns once each answers /healthz."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env["HOME"] = str(self.tmp / "home")
        started = []
        for _ in range(count):
            number = len(self.replicas) + 1
            port = free_port()
            args = [
                "--config", str(self.config),
                # a fresh cache for every process: nothing local survives a restart
                "--cache-dir", str(self.tmp / f"cache-{number}"),
                "--listen", f"127.0.0.1:{port}",
            ]  # fmt: skip
            log = self.tmp / f"replica-{number}.log"
            replica = Replica(f"replica-{number}", ReconcilerProcess(args, env, log, port))
            self.replicas.append(replica)
            self.live.append(replica)
            started.append(replica)

        def healthy() -> bool:
            try:
                return all(r.process.request("/healthz")[0] == 200 for r in started)
            except ProcessUnreachableError:
                return False  # not listening yet

        self.wait("the new replicas to answer /healthz", healthy, timeout=PROCESS_START)
        return started

    def kill(self, replica: Replica) -> float:
        """SIGKILL ``replica`` (it hands nothing back); when, on the monotonic clock."""
        self.live.remove(replica)
        replica.process.popen.kill()
        killed_at = time.monotonic()
        replica.process.popen.wait(timeout=10)
        return killed_at

    def stop(self, replica: Replica) -> int:
        """SIGTERM ``replica`` (it hands its Leases back); its exit status."""
        self.live.remove(replica)
        return replica.process.stop()

    # -- the Leases -----------------------------------------------------------------------

    def leases(self) -> dict[str, LeaseRecord]:
        """Each repo's Lease as the API server has it, by repo URL (absent: not made yet)."""
        found = {
            obj["metadata"]["name"]: LeaseRecord.from_object(obj)
            for obj in self.admin.list_objects(LEASE_API, "Lease", self.lease_namespace)
        }
        return {
            w.repo.url: found[name]
            for w in self.worlds
            if (name := lease_name(w.repo.url)) in found
        }

    def holders(self) -> dict[str, str]:
        """Each repo's Lease holder by repo URL ('' when nobody holds it)."""
        leases = self.leases()
        return {
            w.repo.url: leases[w.repo.url].holder if w.repo.url in leases else ""
            for w in self.worlds
        }

    def shares(self) -> dict[str, int]:
        """How many repos each live replica holds, by replica name."""
        counts = Counter(self.holders().values())
        return {r.name: counts[r.identity] for r in self.live}

    def held_by(self, replica: Replica) -> list[World]:
        """The repos whose Lease ``replica`` holds."""
        holders = self.holders()
        return [w for w in self.worlds if holders[w.repo.url] == replica.identity]

    def fair_share(self, low: int, high: int) -> dict[str, int] | None:
        """A condition: every repo held by a live replica, each holding ``low``..``high``."""
        holders = self.holders()
        live = {r.identity for r in self.live}
        if not set(holders.values()) <= live:
            return None
        shares = self.shares()
        return shares if all(low <= n <= high for n in shares.values()) else None

    # -- looking ----------------------------------------------------------------------------

    def wait(
        self, what: str, condition: Callable[[], Any], timeout: float, *, poll: float = POLL
    ) -> Any:
        """Poll ``condition`` until it is truthy (its value), failing when a live replica exits."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            for replica in self.live:
                if replica.process.exit_code is not None:
                    pytest.fail(
                        f"while waiting for {what}: {replica.name} exited "
                        f"{replica.process.exit_code}; its log:\n{replica.process.log_tail()}"
                    )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout:g} s waiting for {what} ({condition})\n"
                    f"{self.describe()}"
                )
            time.sleep(poll)

    def describe(self) -> str:
        """Who holds what, and each live replica's last log lines, for failure messages."""
        lines = [f"repos held: {self.shares()} (live replicas)"]
        names = {r.identity: r.name for r in self.replicas}
        holders = self.holders()
        for world in self.worlds:
            holder = holders[world.repo.url]
            tip = world.repo.log(STATE, limit=1)
            lines.append(
                f"  {world.namespace}: {names.get(holder, holder or 'nobody')}, state tip "
                f"{tip[0].subject if tip else None!r}"
            )
        lines += [
            f"{replica.name} ({replica.identity}) log:\n{replica.process.log_tail(15)}"
            for replica in self.live
        ]
        return "\n".join(lines)

    def close(self) -> None:
        """Stop every replica still running, then every world."""
        for replica in self.replicas:
            if replica.process.exit_code is None:
                replica.process.stop()
        for world in self.worlds:
            world.close()


# -- what Git alone says -----------------------------------------------------------------------


def assert_each_iteration_judged_once(world: World, experiment: ExperimentFile) -> list[Commit]:
    """The at-least-once bound (module docstring) on one experiment; its skip commits.

    Every commit that judged nothing because the cluster did not carry the recorded weights
    (``Rollout-Skipped``) repeats the iteration before it, says the next one was not judged,
    and was written in another Lease term than the commit whose weights it set again. All
    other commits are an uninterrupted run's, exactly once (``assert_promoted_once``).
    """
    key = experiment.key(world.namespace)
    runs = world.repo.state_log(key)
    skips = []
    for before, commit in itertools.pairwise(runs):
        if commit.get("Rollout-Skipped") is None:
            continue
        skips.append(commit)
        where = f"{world.namespace}: {commit.id[:12]} {commit.subject!r}"
        assert commit.verdicts is None, f"{where} judged an iteration it says it skipped"
        assert commit.iteration == before.iteration, f"{where} is not the iteration before it"
        assert commit.get("Rollout-Skipped") == str((before.iteration or 0) + 1), where
        assert commit.get(LEASE_TERM) != before.get(LEASE_TERM), (
            f"{where}: the weights of {before.id[:12]} were set again in the term that "
            f"recorded them ({before.get(LEASE_TERM)}): a repeat no hand-over explains"
        )
    assert_promoted_once(world, experiment, skips=len(skips))
    return skips


def assert_one_actor_per_term(world: World, lease: LeaseRecord) -> list[tuple[int, str]]:
    """(term, actor) of each state commit, oldest first, checking one actor per term.

    Every state commit and outcome commit names its actor and its term of the repo's
    ``lease`` (as the API server has it now: no term beyond its transitions); along the state
    branch (linear: no merge) the terms never go down; each term, on either branch, has
    exactly one actor.
    """
    lease_uid = lease.uid
    repo = world.repo
    merges = git("--git-dir", repo.path, "rev-list", "--merges", STATE)
    assert not merges, f"{world.namespace}: merge commits on the state branch: {merges}"
    seen: list[tuple[int, str]] = []
    actors: dict[int, set[str]] = {}
    for branch, commits in (("state", repo.state_log()), ("main", repo.outcomes())):
        for commit in commits:
            where = f"{world.namespace} {branch} {commit.id[:12]} {commit.subject!r}"
            actor, term = commit.get(ACTOR), parse_term(commit.get(LEASE_TERM))
            assert actor, f"{where} names no {ACTOR}"
            assert term is not None, f"{where}: {LEASE_TERM} is {commit.get(LEASE_TERM)!r}"
            assert term[0] == lease_uid, f"{where}: term of Lease {term[0]}, not {lease_uid}"
            actors.setdefault(term[1], set()).add(actor)
            if branch == "state":
                assert not seen or seen[-1][0] <= term[1], (
                    f"{where}: term {term[1]} after term {seen[-1][0]} ({seen[-1][1]})"
                )
                seen.append((term[1], actor))
    shared = {term: sorted(names) for term, names in actors.items() if len(names) > 1}
    assert not shared, f"{world.namespace}: terms with more than one actor: {shared}"
    assert max(actors) <= lease.transitions, f"{world.namespace}: {sorted(actors)}, {lease}"
    return seen


def assert_taken_over(world: World, terms: Sequence[tuple[int, str]], gone: str) -> None:
    """After ``gone``'s last state commit, another actor wrote under a newer term.

    ``terms``: (term, actor) along ``world``'s state branch, oldest first.
    """
    last = max((i for i, (_term, actor) in enumerate(terms) if actor == gone), default=None)
    assert last is not None, f"{world.namespace}: {gone} wrote nothing: {terms}"
    after = terms[last + 1 :]
    assert after, f"{world.namespace}: nobody wrote after {gone}: {terms}"
    assert after[0][1] != gone, f"{world.namespace}: {after[0]} after {terms[last]}"
    assert after[0][0] > terms[last][0], f"{world.namespace}: {after[0]} after {terms[last]}"


def iterating(worlds: Iterable[World], experiment: ExperimentFile) -> EveryRepo:
    """A condition: every repo's experiment has judged an iteration."""

    def judged(world: World) -> bool:
        latest = world.repo.latest(experiment.key(world.namespace))
        return latest is not None and (latest.iteration or 0) >= 1

    return EveryRepo(worlds, judged)


def experiments_finished(worlds: Iterable[World], experiment: ExperimentFile) -> EveryRepo:
    """A condition: every repo's experiment has its outcome on main and is archived."""
    # main's short log first: the state branch is read only once the outcome is there
    return EveryRepo(worlds, lambda w: w.repo.outcomes() and finished(w, experiment)())
