"""Outcomes on main: all due ones in one push, one commit each, exactly once, bad ones apart."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from reconciler.controller.outcomes import find_outcome, push_outcomes
from reconciler.demo import scenario
from reconciler.engine import experiment
from reconciler.engine.state import ExperimentState, Phase
from reconciler.gitstore.admin import init_bare_repository
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import CommitInfo, CommitSpec, EnvStore
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import DeleteEdit, GitOps
from reconciler.testing import constant

AUTHOR = ("tests", "tests@example.invalid")
APP = "apps/bookinfo"


DEMO = load_experiments(f"{APP}/experiment.yaml", scenario.demo_file("experiment.yaml"))
SPEC = DEMO.experiments[0]


def deciding(name: str, gitops: GitOps, main: str, *, winner: str | None) -> ExperimentState:
    """A recorded decision of the demo experiment renamed ``name``."""
    spec = replace(SPEC, name=name, gitops=gitops)
    blob = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()
    state = experiment.start(spec, spec_blob=blob, source_commit=main, now=1.8e9).state
    phase = Phase.PROMOTING if winner else Phase.ROLLING_BACK
    return replace(state, phase=phase, winner=winner, decided_on=main)


def git(remote: str, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", remote, *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def store(tmp_path: Path) -> GitEnvStore:
    remote = init_bare_repository(tmp_path / "env.git")
    ci = GitEnvStore.open(str(remote), tmp_path / "ci.git", author=AUTHOR)
    ci.fetch()
    for message, files in scenario.app_commits():
        ci.update_branch("main", constant([CommitSpec(message, dict(files))]))
    ci.update_branch("main", constant([CommitSpec("notes", {f"{APP}/notes.md": b"x\n"})]))
    return GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)


def test_due_outcomes_land_in_one_push_each_on_the_tree_the_one_before_left(
    store: GitEnvStore,
) -> None:
    main = store.fetch().main
    assert main is not None
    demo = SPEC.gitops
    first = deciding(
        "a", demo, main, winner="productpage-candidate"
    )  # copies, then deletes the candidate
    # the same copy again: its source is gone from the tree the first one left
    second = deciding("b", demo, main, winner="productpage-candidate")
    third = deciding("c", GitOps(rollback=(DeleteEdit((f"{APP}/notes.md",)),)), main, winner=None)

    pushed = push_outcomes(store, [(first, None), (second, None), (third, None)])

    assert pushed.result.attempts == 1
    assert len(pushed.result.commits) == 2  # one push, one commit per outcome that applies
    assert set(pushed.commits) == {first.id, third.id}
    assert "productpage-candidate.yaml' is not on main" in pushed.failed[second.id]
    subjects = git(store.url, "log", "--format=%s", "main", "-3").splitlines()
    assert subjects[:2] == [
        "productpage: roll back productpage-candidate (bookinfo/c)",
        "productpage: promote productpage-candidate (bookinfo/a)",
    ]
    files = git(store.url, "ls-tree", "-r", "--name-only", "main").split()
    assert f"{APP}/productpage-candidate.yaml" not in files
    assert f"{APP}/notes.md" not in files
    # exactly once: pushed again, nothing new lands, and the commits already there are named
    again = push_outcomes(store, [(first, None), (third, None)])
    assert again.result.commits == ()
    assert again.commits == pushed.commits


def test_an_outcome_is_found_again_when_runs_decided_at_different_points_of_main(
    store: GitEnvStore, tmp_path: Path
) -> None:
    ci = GitEnvStore.open(store.url, tmp_path / "ci2.git", author=AUTHOR)
    ci.fetch()
    for i in range(300):  # a long-lived main: CI has committed for a while
        ci.update_branch("main", constant([CommitSpec(f"ci {i}", {"ci.log": f"{i}\n".encode()})]))
    older = store.fetch().main
    assert older is not None
    first = deciding("a", SPEC.gitops, older, winner="productpage-candidate")
    landed = push_outcomes(store, [(first, None)])
    assert set(landed.commits) == {first.id}
    for i in range(5):  # CI goes on after the first outcome, then a second run decides
        ci.update_branch("main", constant([CommitSpec(f"more {i}", {"ci.log": b"more\n"})]))
    newer = store.fetch().main
    assert newer is not None
    rollback = GitOps(rollback=(DeleteEdit((f"{APP}/notes.md",)),))
    second = deciding("b", rollback, newer, winner=None)

    both = push_outcomes(store, [(first, None), (second, None)])

    # the first run's outcome is found again (never pushed twice), the second one lands
    assert both.commits[first.id] == landed.commits[first.id]
    assert len(both.result.commits) == 1
    assert both.result.attempts == 1


class _Walks:
    """The store, with every walk it was asked for noted: (tip, hide)."""

    def __init__(self, store: GitEnvStore) -> None:
        self._store = store
        self.walks: list[tuple[str, str | None]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def log(self, tip: str, *, hide: str | None = None) -> Iterator[CommitInfo]:
        self.walks.append((tip, hide))
        return self._store.log(tip, hide=hide)


def test_the_search_for_an_outcome_spans_what_main_gained_since_the_decision_only(
    store: GitEnvStore, tmp_path: Path
) -> None:
    # The worst phase of a tick (architecture.md): libgit2 sorts every commit a walk can
    # reach before it yields one, so a walk from main's tip costs main's whole history
    # unless the commits before the decision are hidden.
    ci = GitEnvStore.open(store.url, tmp_path / "ci2.git", author=AUTHOR)
    ci.fetch()
    for i in range(300):
        ci.update_branch("main", constant([CommitSpec(f"ci {i}", {"ci.log": f"{i}\n".encode()})]))
    decided_on = store.fetch().main
    assert decided_on is not None
    run = deciding("a", SPEC.gitops, decided_on, winner="productpage-candidate")
    for i in range(5):
        ci.update_branch("main", constant([CommitSpec(f"more {i}", {"ci.log": b"more\n"})]))
    tip = store.fetch().main
    assert tip is not None
    walks = _Walks(store)

    assert find_outcome(cast("EnvStore", walks), tip, run) is None

    history = int(git(store.url, "rev-list", "--count", tip))
    assert history > 300
    for walk_tip, hide in walks.walks:
        span = [walk_tip, f"^{hide}"] if hide else [walk_tip]
        assert int(git(store.url, "rev-list", "--count", *span)) <= 6
