"""Names handed to pygit2's lookups, interned, because pygit2 keeps every one it is given.

pygit2 1.21.0 (with libgit2 1.9.7) never releases the string it is passed by
``Tree.__getitem__``, ``Tree.__contains__`` and the reference lookups (``References.get``,
``[]``, ``delete``): ``sys.getrefcount`` of the name grows by one per call, str or bytes.
A name built afresh for each call (``f"refs/remotes/origin/{branch}"``, a path read every
tick) is therefore never freed: a soak of ``reconciler run`` kept three such strings a
tick (about 0.9 MB an hour at one tick a second; a path per state document read, with
1,000 live experiments). Passing the same interned object instead costs a count, not
memory: what stays is one string per distinct name (the repository's paths and refs),
not one per call. Every name this package passes to those calls goes through ``held``.
"""

from __future__ import annotations

import sys

__all__ = ["held"]


def held(name: str) -> str:
    """``name`` as the one interned string of its value (see the module's doc)."""
    return sys.intern(name)
