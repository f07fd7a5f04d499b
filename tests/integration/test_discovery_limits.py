"""Discovery reads at most ``max_experiment_files`` experiment files, live ones first."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.controller.discovery import Discovery
from reconciler.demo import scenario
from reconciler.gitstore import GitEnvStore
from reconciler.spec.limits import Limits
from reconciler.spec.loader import load_experiments
from tests.gitutil import make_bare_repo

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")


def test_experiment_files_past_the_limit_are_reported_and_not_read(tmp_path: Path) -> None:
    experiment = scenario.demo_file("experiment.yaml")
    files = {
        f"apps/{name}/experiment.yaml": experiment.replace(
            b"name: productpage-canary", f"name: {name}".encode()
        )
        for name in ("a", "b", "c")
    }
    files["apps/poison.yaml"] = b"apiVersion: [x]\nkind: Experiment\n"
    remote = tmp_path / "env.git"
    make_bare_repo(remote, files)
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    main = store.fetch().main
    assert main is not None

    live = store.blob_id(main, "apps/c/experiment.yaml")
    assert live is not None
    (recorded,) = load_experiments(
        "apps/c/experiment.yaml", files["apps/c/experiment.yaml"]
    ).experiments
    discovery = Discovery(store, ("",), Limits(max_experiment_files=2))
    scan = discovery.scan(main, known=[(live, recorded)])
    # The live experiment is read first, then files in path order up to the limit.
    assert sorted(f.spec.name for f in scan.experiments) == ["a", "c"]
    refused = {p.location.file: p.message for _, p in scan.problems}
    assert set(refused) == {"apps/b/experiment.yaml", "apps/poison.yaml"}
    assert all(
        "max_experiment_files" in m and "--max-experiment-files" in m for m in refused.values()
    )

    whole = Discovery(store, ("",)).scan(main)
    assert len(whole.experiments) == 3
    (poison,) = [p for _, p in whole.problems if p.location.file == "apps/poison.yaml"]
    assert str(poison).startswith("apps/poison.yaml:1:1: error: 'apiVersion' must be one of")
