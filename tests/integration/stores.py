"""A store on a fresh cache over a fresh Env repo: the start of the cache and pack tests."""

from __future__ import annotations

from pathlib import Path

from reconciler.gitstore import GitEnvStore
from tests.gitutil import make_bare_repo

AUTHOR = ("gitops-reconciler", "reconciler@example.test")


def fetched_store(tmp_path: Path) -> tuple[Path, Path, GitEnvStore]:
    """An Env repo of one file, and a store that fetched it: (remote, cache, store)."""
    remote, cache = tmp_path / "env.git", tmp_path / "cache.git"
    make_bare_repo(remote, {"README.md": "env\n"})
    store = GitEnvStore.open(str(remote), cache, author=AUTHOR)
    store.fetch()
    return remote, cache, store
