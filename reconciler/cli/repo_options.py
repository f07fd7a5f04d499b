"""Options shared by every command that opens the Env repo, and the store they build.

They are ``run``'s settings (``config.options.REPO``): the same flags, the same
``RECONCILER_*`` variables (``RECONCILER_REPO`` works for ``status`` as for ``run``), the
same defaults. Only the cache differs: these commands read, so by default they use a
scratch directory of their own rather than a running process's cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler import config
from reconciler.cli.settings import settings_from
from reconciler.config.options import REPO
from reconciler.errors import ReconcilerError
from reconciler.gitstore.credentials import Credentials
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import Heads

F = TypeVar("F", bound=Callable[..., Any])


def repo_options(command: F) -> F:
    """Add ``--repo``, the branches and the credential options to a command."""
    command = config.with_settings(REPO)(command)
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Bare cache of the Env repo (default: a temporary directory, removed afterwards).",
    )(command)


def open_store(options: dict[str, Any], scratch: Path) -> GitEnvStore:
    """Open the Env repo named by ``repo_options``' values.

    Without ``--cache-dir`` the cache goes under ``scratch``, a directory the caller removes.
    """
    settings = settings_from(options, REPO)
    try:
        credentials = Credentials.from_settings(settings.credentials)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return GitEnvStore.open(
        settings.repo.url,
        options.get("cache_dir") or scratch / "cache.git",
        main_branch=settings.repo.main_branch,
        state_branch=settings.repo.state_branch,
        author=settings.repo.author,
        credentials=credentials,
    )


def fetch_heads(store: GitEnvStore) -> Heads:
    """Fetch main and the state branch, both of which must exist.

    A missing one is an error that names the branches the server has: a misspelt
    ``--state-branch`` must not read as "no experiments".

    Raises:
        click.ClickException: a branch is missing, or Git failed (its message).
    """
    try:
        heads = store.fetch()
        require_branches(store, heads)
    except ReconcilerError as exc:
        raise click.ClickException(str(exc)) from exc
    return heads


def require_branches(store: GitEnvStore, heads: Heads, *, state: bool = True) -> None:
    """Refuse ``heads`` without main (or, with ``state``, without the state branch).

    Raises:
        click.ClickException: a branch is missing; it lists the branches the server has.
        ReconcilerError: listing them failed.
    """
    missing = [
        (option, branch)
        for option, branch, tip, needed in (
            ("--main-branch", store.main_branch, heads.main, True),
            ("--state-branch", store.state_branch, heads.state, state),
        )
        if needed and tip is None
    ]
    if not missing:
        return
    existing = store.branches()
    option, branch = missing[0]
    shown = ", ".join(existing[:20]) + (", ..." if len(existing) > 20 else "")  # noqa: PLR2004
    hint = (
        "; the reconciler creates it when it records its first experiment"
        if option == "--state-branch"
        else ""
    )
    raise click.ClickException(
        f"{store.url} has no branch {branch!r} ({option}); its branches: {shown or 'none'}{hint}"
    )
