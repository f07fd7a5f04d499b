"""Poison files on main beside a real rollout: ``reconciler run`` stays up and promotes.

The files an attacker (or a careless commit) put on main made the whole process exit on
every restart (issue 16). Invariant 9: each is reported once, counted on /metrics, listed
by ``status``, and the valid experiment next to them is promoted as if they were not there.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.envrepo import ExperimentFile
from tests.e2e.outcomes import assert_promoted_once, finished
from tests.e2e.world import World

pytestmark = pytest.mark.e2e

POISON = {
    "apps/poison/list-api-version.yaml": (
        b"apiVersion: [iter8.tools/v2alpha2]\nkind: Experiment\nmetadata: {name: x}\n"
    ),
    "apps/poison/omap.yaml": (
        b"apiVersion: iter8.tools/v2alpha2\nkind: Experiment\n"
        b"metadata: !!omap [{name: a}, {name: b}]\n"
    ),
    "apps/poison/deep.yaml": b"apiVersion: iter8.tools/v2alpha2\nkind: Experiment\nspec: "
    + b"[" * 5000
    + b"]" * 5000
    + b"\n",
    "apps/poison/bool.yaml": (
        b"apiVersion: iter8.tools/v2alpha2\nkind: Experiment\nmetadata: {name: !!bool maybe}\n"
    ),
}


def test_poison_files_never_stop_the_process_and_the_valid_experiment_is_promoted(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.repo.commit(dict(POISON), "ci: files nobody checked")
    experiment = ExperimentFile(iterations=3)
    world.repo.add_candidate(experiment, world.namespace)
    process = world.start()
    world.wait("the experiment to finish", finished(world, experiment))
    assert process.exit_code is None, process.log_tail()
    assert_promoted_once(world, experiment, also_on_main=list(POISON))
    repo = world.repo.url
    for path in POISON:
        counted = process.metric("reconciler_experiment_errors_total", repo=repo, experiment=path)
        assert counted == 1, f"{path}: {counted}\n{process.log_tail()}"
    assert "Traceback" not in process.log_tail(400)
    status, body = process.request("/readyz")
    assert status == 200, body
