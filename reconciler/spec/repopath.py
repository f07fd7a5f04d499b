"""Repository paths: the one check every path from the Env repo passes before Git sees it.

``split_path`` is what the promotion applies when it writes main's tree
(``reconciler.gitstore.trees``) and what the experiment loader applies to ``spec.gitops``
paths, so ``reconciler validate`` refuses exactly the paths a promotion would. Pure.
"""

from __future__ import annotations

__all__ = ["split_path"]


def split_path(path: str) -> tuple[str, ...]:
    """The components of a repository path, validated.

    Raises:
        ValueError: the path is empty or absolute, or a component is empty, ``.``,
            ``..``, ``.git``, or holds a NUL or a backslash.
    """
    parts = tuple(path.split("/"))
    for part in parts:
        if part in {"", ".", ".."} or part.lower() == ".git" or "\0" in part or "\\" in part:
            raise ValueError(f"invalid repository path {path!r}")
    return parts
