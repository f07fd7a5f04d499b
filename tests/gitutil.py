"""Helpers for tests that need real Git repositories and the git program.

The reconciler itself never runs ``git``; tests do, to prepare remotes and to check what
the store wrote the way a person would. Every ``git`` here runs with a clean environment
(no system or user configuration, a private HOME, fixed author and committer) so results
do not depend on the machine. The benchmarks (``hack/bench.py``) use ``git_env`` too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Mapping

AUTHOR = ("Test Writer", "writer@example.test")
_HOME = Path(tempfile.mkdtemp(prefix="gitutil-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)


def require_binary(name: str, debian_package: str, *, extra_dirs: tuple[str, ...] = ()) -> str:
    """Path of the program ``name``; skips the test without it, but FAILS when ``CI`` is set.

    ``extra_dirs`` are searched too (``sshd`` lives in /usr/sbin, often not on PATH).
    """
    found = shutil.which(name) or next(
        (str(Path(d, name)) for d in extra_dirs if Path(d, name).is_file()), None
    )
    if found:
        return found
    message = f"`{name}` is missing: install the Debian package {debian_package}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_git() -> str:
    """Path of ``git``; the test FAILS without it (every Git test needs it)."""
    found = shutil.which("git")
    if not found:
        pytest.fail("`git` is missing: install the Debian package git (hack/system-deps)")
    return found


def git_env(home: Path | None = None, *, author: tuple[str, str] = AUTHOR) -> dict[str, str]:
    """A clean environment for ``git``: no system/user config, fixed identity, no prompts.

    ``home`` (created when absent) defaults to a private directory of this process;
    ``author`` is the identity of the commits ``git`` makes.
    """
    home = home or _HOME
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": author[0],
        "GIT_AUTHOR_EMAIL": author[1],
        "GIT_COMMITTER_NAME": author[0],
        "GIT_COMMITTER_EMAIL": author[1],
        # An automatic gc in the background would still be writing into a temporary clone
        # while it is removed (a flaky "Directory not empty"): run it in the foreground.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "gc.autoDetach",
        "GIT_CONFIG_VALUE_0": "false",
    }
    if "SYSTEMROOT" in os.environ:  # pragma: no cover - only on Windows
        env["SYSTEMROOT"] = os.environ["SYSTEMROOT"]
    return env


def git(*args: str | Path, cwd: Path | None = None, check: bool = True) -> str:
    """Run ``git args`` in a clean environment; return stdout (stripped)."""
    done = subprocess.run(
        [require_git(), *map(str, args)],
        cwd=cwd,
        env=git_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"git {' '.join(map(str, args))} failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()


def write_files(root: Path, files: Mapping[str, bytes | str | None]) -> None:
    """Write (or delete, for None) ``files`` under ``root``, creating directories."""
    for path, content in files.items():
        target = root / path
        if content is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        target.write_bytes(data)


def make_bare_repo(
    path: Path,
    files: Mapping[str, bytes | str],
    *,
    branch: str = "main",
    message: str = "initial commit",
) -> str:
    """Create a bare repository at ``path`` whose ``branch`` has one commit of ``files``.

    Returns the commit id.
    """
    git("init", "--quiet", "--bare", f"--initial-branch={branch}", path)
    return commit_files(path, files, message=message, branch=branch)


def commit_files(
    remote: Path | str,
    files: Mapping[str, bytes | str | None],
    *,
    message: str,
    branch: str = "main",
) -> str:
    """Commit ``files`` on top of ``branch`` of ``remote`` through a fresh clone, and push.

    ``branch`` is created when absent. Returns the pushed commit id.
    """
    with tempfile.TemporaryDirectory(prefix="gitutil-clone-") as tmp:
        work = Path(tmp, "work")
        git("clone", "--quiet", remote, work)
        if git("ls-remote", "--heads", "origin", branch, cwd=work):
            git("checkout", "--quiet", "-B", branch, f"origin/{branch}", cwd=work)
        else:
            git("checkout", "--quiet", "--orphan", branch, cwd=work)
            git("rm", "-r", "-f", "--quiet", "--ignore-unmatch", ".", cwd=work)
        write_files(work, files)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)


def rev_parse(repo: Path, rev: str) -> str | None:
    """Commit id of ``rev`` in the (bare) repository ``repo``, or None when it is absent."""
    out = git(
        "--git-dir", repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False
    )
    return out or None


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` in ``repo``."""
    done = subprocess.run(
        [
            require_git(),
            "--git-dir",
            str(repo),
            "merge-base",
            "--is-ancestor",
            ancestor,
            descendant,
        ],
        env=git_env(),
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def show_file(repo: Path, rev: str, path: str) -> str | None:
    """Content of ``path`` at ``rev`` as git shows it, or None when absent."""
    done = subprocess.run(
        [require_git(), "--git-dir", str(repo), "show", f"{rev}:{path}"],
        env=git_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def ls_tree(repo: Path, rev: str) -> list[str]:
    """Every file path at ``rev``, recursively, as ``git ls-tree`` lists them."""
    out = git("--git-dir", repo, "ls-tree", "-r", "--name-only", rev)
    return out.splitlines() if out else []
