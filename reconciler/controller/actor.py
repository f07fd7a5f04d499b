"""Who wrote each commit: the replica and its Lease term, fenced on the state branch.

With several replicas, each Env repo is acted on by the holder of its Lease. Every commit
the loop writes carries ``Rollout-Actor`` (the replica) and, under leader election,
``Rollout-Lease-Term`` (``<Lease uid>/<leaseTransitions>`` as this replica took it), so
``git log`` proves that no two replicas acted on a repo at once: along the state branch,
the terms of one Lease never go down and each term has one actor. (A Lease deleted and
made again, as in a rebuilt cluster, has a new uid and counts from 0.)

The terms also fence: before each push attempt on the state branch, the last term written
by this Lease is read from the tip back (passing over commands, which carry none). A
replica whose Lease was taken over (it has not noticed yet: a paused process, a partitioned
node) finds a newer term of the same Lease there and stops, instead of re-planning on it
after its compare-and-swap push was refused. A newer actor's write is
never overwritten (CAS) and never followed by a stale one (the fence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from reconciler.controller.isolation import LeadershipLostError
from reconciler.gitstore.trailers import add_trailers
from reconciler.ports import (
    CommitInfo,
    CommitOrigin,
    CommitSpec,
    EnvStore,
    Heads,
    Plan,
    UpdateResult,
)

ACTOR = "Rollout-Actor"
LEASE_TERM = "Rollout-Lease-Term"
FENCE_DEPTH = 64
"""State commits looked back through for the last term of our Lease (people's commands in
between carry none); bounded so a long run of commands costs a bounded walk."""


@dataclass(frozen=True)
class Actor:
    """This replica, and how to read its term on the repo's Lease."""

    identity: str
    term: Callable[[], tuple[str, int] | None] | None = None
    """Our current term while we hold the Lease, None once we may not act; no callable:
    no leader election (one replica, no term)."""

    def trailers(self) -> list[tuple[str, str]]:
        """The trailers a commit written now carries.

        Raises:
            LeadershipLostError: under leader election, we no longer hold the Lease.
        """
        found = [(ACTOR, self.identity)]
        if self.term is not None:
            term = self.term()
            if term is None:
                raise LeadershipLostError(
                    "not writing: this replica no longer holds the Env repo's Lease"
                )
            found.append((LEASE_TERM, f"{term[0]}/{term[1]}"))
        return found


def parse_term(value: str | None) -> tuple[str, int] | None:
    """``uid/N`` as (uid, N) (None: absent or not that shape)."""
    uid, sep, number = (value or "").rpartition("/")
    return (uid, int(number)) if sep and number.isascii() and number.isdigit() else None


class StampedStore:
    """An ``EnvStore`` whose commits name their actor, fenced by Lease terms."""

    def __init__(self, inner: EnvStore, actor: Actor) -> None:
        """Stamp what ``inner`` writes for ``actor``."""
        self._inner = inner
        self._actor = actor

    @property
    def main_branch(self) -> str:
        """The inner store's main branch."""
        return self._inner.main_branch

    @property
    def state_branch(self) -> str:
        """The inner store's state branch."""
        return self._inner.state_branch

    def fetch(self) -> Heads:
        """Fetch through the inner store."""
        return self._inner.fetch()

    def read_file(self, commit: str, path: str) -> bytes | None:
        """Read through the inner store."""
        return self._inner.read_file(commit, path)

    def blob_id(self, commit: str, path: str) -> str | None:
        """A blob id through the inner store."""
        return self._inner.blob_id(commit, path)

    def list_files(self, commit: str, prefix: str = "") -> Iterator[tuple[str, str]]:
        """List through the inner store."""
        return self._inner.list_files(commit, prefix)

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        """Changed paths through the inner store."""
        return self._inner.changed_paths(old, new)

    def log(self, tip: str, *, hide: str | None = None) -> Iterator[CommitInfo]:
        """History through the inner store."""
        return self._inner.log(tip, hide=hide)

    def merge_base(self, commits: Sequence[str]) -> str | None:
        """A merge base through the inner store."""
        return self._inner.merge_base(commits)

    def origin(self, tip: str, path: str, *, limit: int = 200) -> CommitOrigin | None:
        """A file's origin through the inner store."""
        return self._inner.origin(tip, path, limit=limit)

    def update_branch(self, branch: str, plan: Plan, *, fresh: bool = False) -> UpdateResult:
        """``plan``'s commits, each stamped; on the state branch, fenced by the last term on it.

        Raises:
            LeadershipLostError: the Lease is no longer ours, or a newer term wrote the tip.
        """
        fenced = branch == self._inner.state_branch

        def stamped(tip: str | None) -> list[CommitSpec]:
            trailers = self._actor.trailers()
            ours = parse_term(dict(trailers).get(LEASE_TERM))
            if fenced and tip is not None and ours is not None:
                theirs = self._last_term(tip, ours[0])
                if theirs is not None and theirs[1] > ours[1]:
                    raise LeadershipLostError(
                        f"not writing: the state branch was last written under Lease term "
                        f"{theirs[1]}, newer than ours ({ours[1]}); another replica acts now"
                    )
            return [
                spec
                if spec.author is not None
                else replace(spec, message=add_trailers(spec.message, trailers))
                for spec in plan(tip)
            ]

        return self._inner.update_branch(branch, stamped, fresh=fresh)

    def _last_term(self, tip: str, uid: str) -> tuple[str, int] | None:
        """The term of Lease ``uid`` that wrote last, up to ``FENCE_DEPTH`` commits back.

        Commits without a term (a person's command, a replica without leader election) are
        passed over: a command pushed after the new holder's commit must not let a stale
        holder write again.
        """
        for depth, info in enumerate(self._inner.log(tip)):
            if depth >= FENCE_DEPTH:
                return None
            term = parse_term(info.trailer(LEASE_TERM))
            if term is not None and term[0] == uid:
                return term
        return None
