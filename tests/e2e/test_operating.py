"""A person aborts a running canary from their laptop: one command, no cluster credentials.

``reconciler abort`` runs as its own process with only the Env repo's URL; the reconciler
(``reconciler run``, its own process too) acts on its next tick: with a push webhook at
once, otherwise at its next fetch. The test prints how long each took (the figures of the
closing note), and asserts what the person sees: traffic back on the baseline, one
rollback commit on main naming them, their command answered on the state branch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.e2e.envrepo import BASELINE, CANDIDATE, ExperimentFile
from tests.e2e.outcomes import assert_rolled_back_once
from tests.e2e.world import World

SECRET = b"e2e webhook secret"


@pytest.mark.parametrize("via", ["webhook", "polling"])
def test_abort_from_the_cli_returns_traffic_and_pushes_the_rollback(
    make_world: Callable[..., World], via: str
) -> None:
    world = make_world()
    secret_file = world.tmp / "webhook-secret"
    secret_file.write_bytes(SECRET + b"\n")
    # With the webhook, an hour between fetches: only the push event can make it act.
    interval = 3600 if via == "webhook" else 2
    process = world.start(interval=interval, extra=["--webhook-secret-file", str(secret_file)])
    experiment = ExperimentFile(iterations=40, max_weight=60)
    world.repo.add_candidate(experiment, world.namespace)
    body, headers = world.github_push(secret=SECRET)
    assert process.request("/webhook", body=body, headers=headers)[0] == 202
    key = experiment.key(world.namespace)
    world.wait(
        "the candidate to carry traffic",
        lambda: (world.weights() or {}).get(CANDIDATE, 0) > 0,
    )

    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "reconciler", "abort", key,
            "--repo", world.repo.url,
            "--author", "Pat Oncall <pat@example.com>",
            "--reason", "error budget burning",
            "--cache-dir", str(world.tmp / "cli-cache"),
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    pushed = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert "abort for" in done.stdout
    if via == "webhook":
        assert process.request("/webhook", body=body, headers=headers)[0] == 202
    world.wait(
        "traffic back on the baseline",
        lambda: world.weights() == {BASELINE: 100, CANDIDATE: 0},
        timeout=30,
    )
    on_baseline = time.monotonic()
    world.wait("the rollback on main", world.repo.outcomes, timeout=30)
    on_main = time.monotonic()
    sys.stdout.write(
        f"\nabort via {via}: command pushed in {pushed - started:.2f} s; traffic on the "
        f"baseline {on_baseline - started:.2f} s, rollback on main {on_main - started:.2f} s "
        f"after the command started\n"
    )

    world.wait(
        "the run archived",
        lambda: world.repo.archived(world.namespace, experiment.name),
        timeout=30,
    )
    outcome = assert_rolled_back_once(world, experiment)
    message = subprocess.run(
        ["git", "--git-dir", str(world.repo.path), "log", "-1", "--format=%B", outcome.id],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "aborted by Pat Oncall <pat@example.com>: error budget burning" in message
    answers = [c for c in world.repo.log("reconciler-state") if c.get("Rollout-Command-Result")]
    assert [c.get("Rollout-Command-Result") for c in answers] == ["done"]
    asked = [c for c in world.repo.log("reconciler-state") if c.get("Rollout-Command") == "abort"]
    assert len(asked) == 2  # the person's command and the reconciler's answer
    assert world.repo.files("reconciler-state") == [
        f for f in world.repo.files("reconciler-state") if not f.startswith("commands/")
    ]
