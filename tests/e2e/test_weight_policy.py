"""An experiment that points at another namespace's traffic: refused, and the others go on.

Through ``reconciler run`` against the real API server (see ``world.py``), whose weight
policy allows the world's namespace only (``RECONCILER_WEIGHT_NAMESPACES``): a committed
experiment that names a VirtualService elsewhere (its ``metadata.namespace`` too, as an
attacker would write it) never has that object read or written, the refusal is logged with
the object, the field and the setting, and a good experiment beside it is promoted.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from reconciler.spec.weightpolicy import NAMESPACES_SETTING
from tests.e2e.envrepo import STATE, ExperimentFile
from tests.e2e.outcomes import finished
from tests.e2e.world import World, virtual_service
from tests.fixtures.kube import apply, ensure_namespace

pytestmark = pytest.mark.e2e


def test_an_experiment_weighting_another_namespace_is_refused_and_the_good_one_is_promoted(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    victim = f"{world.namespace}-victim"
    ensure_namespace(world.admin, victim)
    original = world.admin.get(virtual_service(world.namespace))
    assert original is not None
    apply(
        world.admin,
        {
            "apiVersion": original["apiVersion"],
            "kind": original["kind"],
            "metadata": {"name": original["metadata"]["name"], "namespace": victim},
            "spec": original["spec"],
        },
    )
    before = world.admin.get(virtual_service(victim))
    assert before is not None

    good = ExperimentFile(iterations=3)
    world.repo.add_candidate(good, world.namespace)
    hostile = ExperimentFile(name="hostile", file="hostile-experiment.yaml")
    world.repo.commit(
        {hostile.path: hostile.render(victim)}, "ci: an experiment for another team's traffic"
    )

    process = world.start()
    world.wait("the good experiment to finish", finished(world, good))
    (outcome,) = world.repo.outcomes()
    assert outcome.trailers["Rollout-Experiment"] == good.key(world.namespace)
    assert outcome.trailers["Rollout-Outcome"] == "promoted"
    # the hostile one never got past its start: its weights were never applied
    text = world.repo.show(STATE, f"experiments/{hostile.key(victim)}.json")
    assert text is not None
    state = json.loads(text)
    assert (state["phase"], state["iteration"], state["applied"]) == ("Progressing", 0, False)

    after = world.admin.get(virtual_service(victim))
    assert after is not None
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert process.request("/healthz") == (200, b"ok\n")
    log = process.log.read_text()
    assert "refused by the reconciler's weight policy" in log
    assert f"VirtualService {victim}/productpage" in log
    assert NAMESPACES_SETTING in log
