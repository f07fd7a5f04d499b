"""Options shared by every command that opens the Env repo, and the store they build."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler.gitstore.credentials import Credentials
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import DEFAULT_STATE_BRANCH

F = TypeVar("F", bound=Callable[..., Any])
AUTHOR = ("gitops-reconciler", "reconciler@localhost")

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def repo_options(command: F) -> F:
    """Add ``--repo`` and the credential options to a command."""
    options = [
        click.option(
            "--repo",
            required=True,
            help="The Env repo: any URL libgit2 speaks (https, ssh, git, file) or a path.",
        ),
        click.option("--main-branch", default="main", show_default=True),
        click.option("--state-branch", default=DEFAULT_STATE_BRANCH, show_default=True),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Bare cache of the Env repo (default: a temporary directory).",
        ),
        click.option("--token-file", type=_FILE, help="HTTPS token, read from this file."),
        click.option(
            "--username",
            default="x-access-token",
            show_default=True,
            help="HTTPS user name sent with the token.",
        ),
        click.option("--ssh-key-file", type=_FILE, help="SSH private key file."),
        click.option(
            "--known-hosts-file",
            type=_FILE,
            help="known_hosts file with the SSH server's host key.",
        ),
        click.option("--ca-file", type=_FILE, help="Extra CA bundle for HTTPS."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def open_store(options: dict[str, Any], scratch: Path) -> GitEnvStore:
    """Open the Env repo named by ``repo_options``' values (popped from ``options``).

    Without ``--cache-dir`` the cache goes under ``scratch``, a directory the caller removes.
    """
    secrets = {
        "token_file": options.pop("token_file"),
        "username": options.pop("username"),
        "ssh_key_file": options.pop("ssh_key_file"),
        "ssh_known_hosts_file": options.pop("known_hosts_file"),
        "ca_file": options.pop("ca_file"),
    }
    configured = any(v for k, v in secrets.items() if k != "username")
    credentials = Credentials(**secrets) if configured else None
    cache = options.pop("cache_dir") or scratch / "cache.git"
    return GitEnvStore.open(
        options.pop("repo"),
        cache,
        main_branch=options.pop("main_branch"),
        state_branch=options.pop("state_branch"),
        author=AUTHOR,
        credentials=credentials,
    )
