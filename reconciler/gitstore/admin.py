"""Create an Env repository from nothing (for the demo, tests and benchmarks).

The reconciler itself never creates the Env repo: it only fetches and pushes. This is
the one helper that makes a new bare repository with a given initial branch.
"""

from __future__ import annotations

from pathlib import Path

import pygit2


def init_bare_repository(path: Path, initial_branch: str = "main") -> Path:
    """Create an empty bare repository at ``path`` whose HEAD names ``initial_branch``."""
    pygit2.init_repository(str(path), bare=True, initial_head=initial_branch)
    return path
