"""The ``fleet`` benchmark's take-over: survivors take a killed replica's Leases.

``--replicas`` replicas of ``reconciler run`` with leader election (one Lease per repo;
``--lease-duration``, renew deadline and retry period as manifests/fleet sets them) serve
the world's small Env repos (a README, no experiment: the Leases are what is measured).
Once the Leases are spread (every one held, each replica at most its fair share, the same
for two retry periods), the replica holding most is killed with SIGKILL; the Leases are
listed every 100 ms until each one it held is held by a survivor. Also reported: how long
after its expiry (the victim's last renewal + the duration, on this host's clock, the API
server's too) each was taken: the survivors' reaction.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from benchlib.common import quantiles
from benchlib.fleetworld import LEASE_NAMESPACE, Fleet, start_process, write_config
from reconciler.cluster.client import Kube
from reconciler.cluster.lease import LEASE_API, REPO_ANNOTATION, clean_url
from tests.e2e.world import ReconcilerProcess

TAKEOVER_SLACK = 2.0
"""Seconds beyond the Lease duration a take-over may take (the issue's goal)."""
_POLL = 0.1


def _leases(admin: Kube) -> dict[str, tuple[str, float]]:
    """The holder of each repo's Lease and when it renewed it (``time.time()``), by repo."""
    found = {}
    for lease in admin.list_objects(LEASE_API, "Lease", LEASE_NAMESPACE):
        repo = ((lease.get("metadata") or {}).get("annotations") or {}).get(REPO_ANNOTATION)
        spec = lease.get("spec") or {}
        renewed = spec.get("renewTime")
        if repo:
            at = datetime.fromisoformat(renewed).timestamp() if renewed else math.nan
            found[repo] = (str(spec.get("holderIdentity") or ""), at)
    return found


def _holders(admin: Kube) -> dict[str, str]:
    """The holder of each repo's Lease (by the repo's URL as the Lease names it)."""
    return {repo: holder for repo, (holder, _at) in _leases(admin).items()}


def _owner(holder: str, pids: Mapping[int, int]) -> int | None:
    """The replica (index) a holder identity (``<host>-<pid>``) names, if one of ours."""
    pid = holder.rpartition("-")[2]
    return pids.get(int(pid)) if pid.isdigit() else None


def _wait_spread(
    admin: Kube, repos: Sequence[str], pids: Mapping[int, int], args: argparse.Namespace
) -> list[int | None]:
    """Each repo's holder (replica index) once the Leases are spread, the same for a while.

    Spread: every Lease held by a replica, each replica holding at least one and at most
    its fair share, unchanged for two retry periods.
    """
    share = math.ceil(len(repos) / args.replicas)
    by = time.monotonic() + 6 * args.lease_duration + 60
    stable: tuple[float, list[int | None]] | None = None
    while True:
        holders = _holders(admin)
        owners = [_owner(holders.get(repo, ""), pids) for repo in repos]
        held = Counter(owners)
        spread = None not in held and len(held) == args.replicas and max(held.values()) <= share
        now = time.monotonic()
        if not spread or stable is None or stable[1] != owners:
            stable = (now, owners) if spread else None
        elif now - stable[0] >= 2 * args.retry_period:
            return owners
        if now > by:
            raise SystemExit(f"bench: the Leases did not spread: {dict(held)}, {share} each")
        time.sleep(_POLL)


def _time_takeover(
    admin: Kube,
    theirs: set[str],
    pids: Mapping[int, int],
    *,
    victim: int,
    killed: float,
    by: float,
) -> dict[str, float]:
    """Seconds from ``killed`` until a survivor held each of ``theirs`` (exits after ``by``).

    Both are ``time.time()``: the Leases' renewTime, compared with them, is on that clock.
    """
    taken: dict[str, float] = {}
    while len(taken) < len(theirs):
        holders = _holders(admin)
        now = time.time()
        for repo in theirs - set(taken):
            owner = _owner(holders.get(repo, ""), pids)
            if owner is not None and owner != victim:
                taken[repo] = now - killed
        if now > by:
            raise SystemExit(
                f"bench: {len(theirs) - len(taken)} of the killed replica's {len(theirs)} "
                f"Leases not taken over after {now - killed:.0f} s"
            )
        time.sleep(_POLL)
    return taken


def measure(fleet: Fleet, args: argparse.Namespace, cpus: set[int] | None) -> dict[str, Any]:
    """Start the replicas (on ``cpus``), wait for the Leases to spread, kill one, time it."""
    election = {
        "enabled": True,
        "leaseDuration": args.lease_duration,
        "renewDeadline": args.renew_deadline,
        "retryPeriod": args.retry_period,
    }
    repos = [clean_url(url) for url in fleet.small]
    replicas: list[ReconcilerProcess] = []
    try:
        started = time.monotonic()
        for n in range(args.replicas):
            config = write_config(fleet, fleet.small, f"replica-{n}", {"leaderElection": election})
            replicas.append(start_process(fleet, config, f"replica-{n}", args.interval, cpus))
        pids = {p.popen.pid: n for n, p in enumerate(replicas)}
        owners = _wait_spread(fleet.admin, repos, pids, args)
        spread_s = time.monotonic() - started
        held = Counter(owners)
        victim = max(range(args.replicas), key=lambda n: (held[n], -n))
        theirs = {repo for repo, owner in zip(repos, owners, strict=True) if owner == victim}
        renewed = {repo: at for repo, (_holder, at) in _leases(fleet.admin).items()}
        os.kill(replicas[victim].popen.pid, signal.SIGKILL)
        killed = time.time()  # the API server runs here: its renewTime is on this clock
        replicas[victim].popen.wait()
        by = killed + 4 * args.lease_duration + 30
        taken = _time_takeover(fleet.admin, theirs, pids, victim=victim, killed=killed, by=by)
        # how long after its Lease expired (the victim's last renewal + the duration) each
        # repo was taken: the survivors' reaction, which the goal's 2 s are for
        late = [killed + taken[r] - renewed[r] - args.lease_duration for r in theirs]
        after = Counter(_owner(h, pids) for h in _holders(fleet.admin).values())
    finally:
        for process in replicas:
            process.stop()
    seconds = max(taken.values())
    goal = args.lease_duration + TAKEOVER_SLACK
    return {
        "replicas": args.replicas,
        "repos": len(repos),
        "lease_duration": args.lease_duration,
        "renew_deadline": args.renew_deadline,
        "retry_period": args.retry_period,
        "spread_s": spread_s,
        "held_before": sorted(held.values(), reverse=True),
        "killed_held": len(theirs),
        "seconds": seconds,
        "lease_s": quantiles(list(taken.values())) | {"min": min(taken.values())},
        "lease_s_each": sorted(round(t, 1) for t in taken.values()),
        "after_expiry_s": quantiles(late),
        "renewed_before_kill_s": killed - max(renewed[r] for r in theirs),
        "held_after": sorted((v for k, v in after.items() if k is not None), reverse=True),
        "goal_s": goal,
        "met": seconds <= goal,
    }
