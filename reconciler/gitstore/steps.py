"""A long push's steps, sent from a second thread while the rest of its commits are built.

A push of many commits goes ahead in steps under a private ref (``Remote.push_ahead``,
``GitEnvStore._push``). Each step is sent as soon as its last commit is built and packed,
by a thread of its own, while the store goes on building the next commits: libgit2 builds
and sends a pack without Python's lock, so the two overlap. A first tick recording
10,000 transitions took 11.1 to 12.0 s with every step sent after the last commit was
built, and 8.9 to 10.1 s this way (``hack/bench.py tick``, on two cores that also ran the
git server); the process's peak grew from 435 to 471 MiB (``hack/bench.py memory``), a
step's pack being built while the next commits are staged.

One step is in flight at a time, so the steps reach the server in order and the private
ref only moves forward; the thread reads the cache through a repository handle of its own
(libgit2's handles are not shared between threads), which finds the packed objects on
disk. A step the server refuses stops the steps (the branch's own push then sends the
rest); a network or credential failure stops them too, and is raised when the store
waits for the steps before its compare-and-swap push.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pygit2

from reconciler.errors import GitError, PushRejectedError

if TYPE_CHECKING:
    from reconciler.gitstore.remote import Remote

__all__ = ["Steps"]


class Steps:
    """The steps of one push of ``branch``, sent in order by one thread (``send``, ``finish``)."""

    def __init__(self, cache: str, remote: Remote, branch: str) -> None:
        """Send through ``remote``, reading the cache at the path ``cache`` apart."""
        self._cache = cache
        self._remote = remote
        self._branch = branch
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-ahead")
        self._in_flight: Future[None] | None = None
        self.sent = False
        """Whether a step reached the server (its private ref is then there to delete)."""
        self.refused: str | None = None
        """Why the server refused a step, if it did; no step is sent after it."""
        self._failure: GitError | None = None

    def send(self, commit: str) -> None:
        """Send ``commit`` and all it needs ahead, once the step before it is done.

        Everything ``commit`` reaches must be packed in the cache already. Nothing is sent
        after a step failed or was refused.
        """
        self._wait()
        if self.refused is None and self._failure is None:
            self._in_flight = self._pool.submit(self._push, commit)

    def finish(self) -> None:
        """Wait for the step in flight.

        Raises:
            GitTemporaryError, GitPermanentError: a step could not be sent (the branch is
                untouched: the caller's compare-and-swap push must not follow).
        """
        self._wait()
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Wait for the step in flight, if any (its failure is dropped), and end the thread."""
        self._wait()
        self._pool.shutdown()

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            in_flight.result()
        except PushRejectedError as exc:
            self.refused = str(exc)
        except GitError as exc:
            self._failure = exc
        else:
            self.sent = True

    def _push(self, commit: str) -> None:
        repo = pygit2.Repository(self._cache)
        try:
            self._remote.through(repo).push_ahead(commit, self._branch)
        finally:
            repo.free()
