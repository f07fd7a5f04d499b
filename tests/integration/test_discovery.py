"""Discovery of experiments on main, against a real repository."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.controller.discovery import Discovery
from reconciler.demo import scenario
from reconciler.gitstore import GitEnvStore
from reconciler.spec.loader import load_experiments
from tests.gitutil import make_bare_repo

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")


def test_discovery_takes_known_specs_only_for_the_whole_file(tmp_path: Path) -> None:
    experiment = scenario.demo_file("experiment.yaml")
    second = experiment.replace(b"name: productpage-canary", b"name: productpage-second")
    assert second != experiment
    remote = tmp_path / "env.git"
    make_bare_repo(
        remote,
        {
            "apps/one/experiment.yaml": experiment,
            "apps/two/experiment.yaml": experiment + b"---\n" + second,
        },
    )
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    main = store.fetch().main
    assert main is not None
    plain = Discovery(store, ("",)).scan(main)
    assert len(plain.experiments) == 3

    one = store.blob_id(main, "apps/one/experiment.yaml")
    two = store.blob_id(main, "apps/two/experiment.yaml")
    assert one is not None
    assert two is not None
    recorded = load_experiments("apps/one/experiment.yaml", experiment).experiments[0]
    marked = replace(recorded, name="as-recorded")
    only_first = load_experiments("apps/two/experiment.yaml", experiment).experiments[0]
    scan = Discovery(store, ("",)).scan(main, known=[(one, marked), (two, only_first)])
    names = sorted((f.spec.path, f.spec.name) for f in scan.experiments)
    # A file whose every experiment a state recorded is taken from the record; a file
    # holding one more experiment than recorded is parsed, so none of it is missed.
    assert names == [
        ("apps/one/experiment.yaml", "as-recorded"),
        ("apps/two/experiment.yaml", "productpage-canary"),
        ("apps/two/experiment.yaml", "productpage-second"),
    ]
