"""Three ``reconciler run`` replicas share 30 Env repos, through a crash and a rescaling.

Issue 23, part 3, against the real API server (Leases), a real git daemon (30 Env repos) and
the session's Prometheus scraping one traffic simulator per repo's namespace: a canary runs
in every repo while one replica is killed with SIGKILL and started again, the fleet is
scaled to two replicas (SIGTERM) and back to three. Then Git alone must show what the
module docstring of ``tests.e2e.fleet`` spells out: one outcome per experiment, each
iteration judged once (repeats only within DESIGN.md's bound), one actor per Lease term,
terms never going down, and a change of term in every repo the killed replica held.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.client import Kube
from reconciler.controller.actor import ACTOR
from tests.e2e.envrepo import STATE, ExperimentFile
from tests.e2e.fleet import (
    GIT_POLL,
    LEASE_DURATION,
    RETRY_PERIOD,
    EveryRepo,
    Fleet,
    SharedWeights,
    assert_each_iteration_judged_once,
    assert_one_actor_per_term,
    assert_taken_over,
    experiments_finished,
    iterating,
)
from tests.e2e.world import RATE, World
from tests.fixtures.kube import KubeServer, ensure_namespace
from tests.fixtures.prometheus import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.long]

REPOS = 30
REPLICAS = 3
FAIR = (5, 15)
"""Repos each of three replicas holds once settled: about a third of 30, within a factor 2."""
EXPERIMENT = ExperimentFile(iterations=25)
"""Long enough (an iteration a tick) to run through the crash, the restart and both rescalings."""
TAKEOVER_SLACK = 5.0
"""Seconds beyond a Lease duration and a retry period. A survivor's round of the Leases is a
retry period plus some 30 Lease requests (a second or more on a busy machine): it sees the
dead replica's last renewal up to a round late, takes the Lease at its first round a Lease
duration after that, and may need one more round to count the dead replica out of its share."""
SETTLE = 25.0
"""Seconds for a new replica to start and the fleet to share the repos fairly again."""


@pytest.fixture
def fleet(tmp_path: Path, world_options: dict[str, Any], namespace: str) -> Iterator[Fleet]:
    """30 Env repos, each with its app in a namespace of its own and its traffic scraped."""
    admin: Kube = world_options["admin"]
    kube_server: KubeServer = world_options["kube_server"]
    prometheus: PrometheusServer = world_options["prometheus"]
    worlds: list[World] = []
    reader = kube_server.connect()
    weights = SharedWeights(reader)
    try:
        for number in range(REPOS):
            app = f"{namespace}-r{number}"
            ensure_namespace(admin, app)
            (tmp_path / app).mkdir()
            # a tenth of a lone world's traffic: the one simulator server advances and renders
            # all 30 namespaces at each scrape, within Prometheus's 1 s scrape timeout
            world = World(
                tmp_path / app,
                namespace=app,
                rate=RATE / 10,
                traffic_weights=weights,
                **world_options,
            )
            worlds.append(world)
            world.build()
        made = Fleet(
            tmp_path,
            worlds,
            admin=admin,
            kubeconfig=kube_server.kubeconfig,
            lease_namespace=namespace,  # the Leases live in the test's own namespace
            prometheus_url=prometheus.url,
        )
    except BaseException:
        for world in worlds:
            world.close()
        reader.close()
        raise
    try:
        made.wait(
            "Prometheus to scrape every namespace twice", EveryRepo(worlds, World.scraped), 30
        )
        yield made
    finally:
        made.close()
        reader.close()


def assert_fair(fleet: Fleet) -> dict[str, int]:
    """Each live replica holds its fair share of the repos now; the shares."""
    shares = fleet.shares()
    low, high = FAIR
    assert all(low <= held <= high for held in shares.values()), fleet.describe()
    return shares


def test_three_replicas_share_thirty_repos_through_a_crash_and_rescaling_one_actor_a_term(
    fleet: Fleet,
) -> None:
    began = time.monotonic()
    for world in fleet.worlds:
        world.repo.add_candidate(EXPERIMENT, world.namespace)
    replicas = fleet.start(REPLICAS)
    shares = [fleet.wait("each replica to hold its share", lambda: fleet.fair_share(*FAIR), SETTLE)]
    fleet.wait("an iteration in every repo", iterating(fleet.worlds, EXPERIMENT), 30, poll=GIT_POLL)
    shares.append(assert_fair(fleet))

    # kill -9 one replica mid-run: the others take its repos over once its Leases expire
    victim = replicas[1]
    orphans = fleet.held_by(victim)
    survivors = {r.identity for r in replicas if r is not victim}
    killed_at = fleet.kill(victim)
    fleet.wait(
        f"the {len(orphans)} repos of the killed replica to be taken over",
        lambda: all(fleet.holders()[w.repo.url] in survivors for w in orphans),
        LEASE_DURATION + RETRY_PERIOD + TAKEOVER_SLACK,
    )
    takeover = time.monotonic() - killed_at
    fleet.wait(
        "a state commit by a survivor in each of them",
        EveryRepo(orphans, lambda w: w.repo.log(STATE, limit=1)[0].get(ACTOR) in survivors),
        10,
        poll=GIT_POLL,
    )

    # start it again; scale to two (SIGTERM: its Leases are handed back), and back to three
    replicas += fleet.start()
    shares.append(fleet.wait("the restarted one's share", lambda: fleet.fair_share(*FAIR), SETTLE))
    leaving = replicas[0]
    assert fleet.stop(leaving) == 0, leaving.process.log_tail()
    # on its way out it handed every Lease back: none is left to expire
    kept = [w.namespace for w in fleet.held_by(leaving)]
    assert not kept, f"{leaving.name} exited still holding {kept}\n{leaving.process.log_tail()}"
    stopped_at = time.monotonic()
    fleet.wait("each of two replicas to hold 15", lambda: fleet.fair_share(15, 15), SETTLE)
    scaled_down = time.monotonic() - stopped_at
    replicas += fleet.start()
    shares.append(fleet.wait("the third one's share", lambda: fleet.fair_share(*FAIR), SETTLE))

    fleet.wait(
        "every experiment's outcome",
        experiments_finished(fleet.worlds, EXPERIMENT),
        90,
        poll=GIT_POLL,
    )
    shares.append(assert_fair(fleet))
    ran = time.monotonic() - began
    for replica in list(fleet.live):
        assert fleet.stop(replica) == 0, replica.process.log_tail()

    leases = fleet.leases()
    assert {lease.holder for lease in leases.values()} == {""}, "a Lease kept after SIGTERM"

    # Git alone: one outcome each, iterations within the bound, one actor per term
    skips = 0
    actors: set[str] = set()
    for world in fleet.worlds:
        skips += len(assert_each_iteration_judged_once(world, EXPERIMENT))
        terms = assert_one_actor_per_term(world, leases[world.repo.url])
        actors |= {actor for _term, actor in terms}
        if world in orphans:
            assert_taken_over(world, terms, victim.identity)
    # every replica acted while the experiments ran: the restarted and the third one too
    names = {r.identity: r.name for r in replicas}
    assert actors == set(names), f"state commits by {sorted(names.get(a, a) for a in actors)}"
    sys.stdout.write(
        f"\nfleet: {len(orphans)} repos taken over {takeover:.1f} s after kill -9 (limit "
        f"{LEASE_DURATION + RETRY_PERIOD + TAKEOVER_SLACK:g} s); two replicas held all "
        f"{scaled_down:.1f} s after the third exited; repos per replica {shares}; "
        f"{skips} iterations skipped and set again after a hand-over; {ran:.0f} s from the "
        "first commit to the last outcome\n"
    )
