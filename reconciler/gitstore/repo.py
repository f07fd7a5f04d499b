"""``GitEnvStore``: the Env repo seen through a private bare clone, with pygit2 only.

It fetches main and the state branch in one fetch, reads files, trees, diffs and history
at any fetched commit, and adds commits to a branch with a compare-and-swap push: the
commits are built in memory on the last fetched tip, pushed without ``+``, and on
rejection the branch is fetched again and the caller's plan re-run on the new tip, a
bounded number of times with exponential backoff and jitter. New objects are held in
memory until the push is done, then written as one pack (``staging``), not as thousands
of loose files. Network faults become
``GitTemporaryError`` (fetches are retried), refused credentials or certificates
``GitPermanentError`` (never retried). It must never force a push, never write a working
tree, never call the ``git`` program, and never show credentials or a URL with userinfo.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2
import structlog
from pygit2.enums import ObjectType, SortMode
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reconciler.errors import GitError, GitPermanentError, GitTemporaryError, PushRejectedError
from reconciler.gitstore.credentials import (
    Credentials,
    check_usable,
    redact_url,
    split_login,
    url_scheme,
)
from reconciler.gitstore.names import held
from reconciler.gitstore.native_heap import fix_malloc_thresholds
from reconciler.gitstore.remote import REMOTE, SCHEMES, Remote, tracking_ref
from reconciler.gitstore.staging import Staging
from reconciler.gitstore.steps import Steps
from reconciler.gitstore.trailers import parse_trailers
from reconciler.gitstore.treeedit import TreeEditor, commit_bytes, object_id
from reconciler.gitstore.trees import diff_paths
from reconciler.ports import (
    DEFAULT_STATE_BRANCH,
    CommitInfo,
    CommitOrigin,
    Heads,
    UpdateResult,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from reconciler.ports import CommitSpec, Plan

__all__ = ["CacheStats", "GitEnvStore"]

log = structlog.get_logger(__name__)

_TREES_KEPT = 4
"""Root trees of the last commits read, kept (commits never change): main's and the state
branch's tips, and the ones a tick moves between."""
PUSH_STEP = 1000
"""A push of more commits than this goes in steps of this many (``GitEnvStore._push``).

The steps go from a thread of their own while the later commits are built (``steps``), so
what a tick waits for is the last step and the commits after it. At 10,000 transitions
(``hack/bench.py tick``), first tick and running tick: steps of 1,000 8.9-10.1 s and
8.2-8.7 s (4 runs), of 2,000 9.1-12.5 s (9.6 median) and 8.5-10.6 s (8 runs), of 500
9.2-9.3 s and 10.0-10.3 s (each step also walks the remote tip's whole tree). Sent after
the last commit was built, steps of 2,000 had been the faster (push 2.9-3.4 s against
3.2-3.6)."""


@dataclass(frozen=True)
class CacheStats:
    """The cache on disk, and what its upkeep did since the store was opened."""

    bytes: int
    """Bytes of its packs."""
    packs: int
    merges: int
    """Times small packs were merged into one."""
    repacks: int
    """Times everything reachable was written as one pack and the rest dropped."""
    failures: int
    """Upkeep that failed (a full volume, say): the cache was left as it was."""
    repacking: bool = False
    """A repack is being written, in a process of its own, or waits to be applied."""
    repack_peak_mib: float = 0.0
    """The largest peak resident memory of a repack's process so far (it is not this one's)."""


class GitEnvStore:
    """The Env repo (``EnvStore``) through a bare clone in ``cache_dir``; one per repo."""

    def __init__(
        self,
        repo: pygit2.Repository,
        url: str,
        *,
        main_branch: str,
        state_branch: str,
        author: tuple[str, str],
        credentials: Credentials | None,
        max_push_attempts: int,
        backoff_initial: float,
        backoff_max: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        push_step: int = PUSH_STEP,
    ) -> None:
        """Use ``GitEnvStore.open``; this wires an already opened cache."""
        self._repo = repo
        self._staging = Staging(repo)
        self._upkeep: Counter[str] = Counter()
        self._trees: dict[str, pygit2.Tree] = {}
        self._url = url
        self._remote = Remote(repo, url, credentials)
        self._main = main_branch
        self._state = state_branch
        self._author = author
        self._max_push_attempts = max_push_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._clock = clock
        self._push_step = push_step
        self._push_ahead = True
        """Whether long pushes go in steps (``_push``); off once a server refused them."""

    @classmethod
    def open(
        cls,
        url: str,
        cache_dir: Path,
        *,
        main_branch: str = "main",
        state_branch: str = DEFAULT_STATE_BRANCH,
        author: tuple[str, str],
        credentials: Credentials | None = None,
        max_push_attempts: int = 5,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        push_step: int = PUSH_STEP,
    ) -> GitEnvStore:
        """Open (or create) the bare cache at ``cache_dir`` for the Env repo at ``url``.

        ``url`` is anything libgit2 speaks (``https://``, ``ssh://``, ``git@host:path``,
        ``git://``, ``file://``) or a local path, made absolute. The cache's ``origin``
        remote is pointed at ``url`` without the token its userinfo may hold (the cache's
        config is on disk; the token stays in memory). Nothing is fetched yet.

        Raises:
            GitPermanentError: the credentials cannot serve ``url``, or ``cache_dir``
                holds something other than a bare repository.
            ValueError: a branch name or the author is invalid, or attempts or
                ``push_step`` < 1.
        """
        for branch in (main_branch, state_branch):
            _check_branch(branch)
        if max_push_attempts < 1:
            raise ValueError("max_push_attempts must be at least 1")
        if push_step < 1:
            raise ValueError("push_step must be at least 1")
        pygit2.Signature(*author)  # fails early on an unusable name or email
        if url_scheme(url) not in SCHEMES:
            raise GitPermanentError(
                f"{redact_url(url)}: unsupported transport {url_scheme(url)!r} "
                f"(use one of {', '.join(sorted(SCHEMES))}, or a path)"
            )
        if url_scheme(url) == "file" and "://" not in url:
            url = os.path.abspath(url)  # noqa: PTH100 - keep the path as given, no symlink resolution
        check_usable(credentials, url)
        stored, _ = split_login(url)
        bound_memory()
        read_without_rehashing()
        if pygit2.settings.server_timeout == 0:  # not set by the process (bound_network)
            bound_network()
        repo = _open_cache(Path(cache_dir))
        if REMOTE in repo.remotes.names():
            if repo.remotes[REMOTE].url != stored:
                repo.remotes.set_url(REMOTE, stored)
        else:
            repo.remotes.create(REMOTE, stored)
        return cls(
            repo,
            url,
            main_branch=main_branch,
            state_branch=state_branch,
            author=author,
            credentials=credentials,
            max_push_attempts=max_push_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            sleep=sleep,
            clock=clock,
            push_step=push_step,
        )

    @property
    def main_branch(self) -> str:
        """Name of the branch the GitOps operator syncs."""
        return self._main

    @property
    def state_branch(self) -> str:
        """Name of the orphan state branch."""
        return self._state

    @property
    def url(self) -> str:
        """The remote's address without userinfo (safe to log)."""
        return redact_url(self._url)

    def close(self) -> None:
        """Release the cache's file handles; the store is unusable afterwards.

        A repack under way is waited for first, so that no thread writes into the cache
        after it is closed.
        """
        self.wait_upkeep()
        self._trees.clear()
        self._repo.free()

    def tip(self, branch: str) -> str | None:
        """``branch``'s tip on the remote as last fetched or pushed (None: absent)."""
        ref = self._repo.references.get(held(tracking_ref(branch)))
        if ref is None:
            return None
        return str(ref.resolve().target)

    # -- fetching ---------------------------------------------------------------------

    def fetch(self) -> Heads:
        """Fetch main and the state branch in one fetch; return their tips.

        A branch absent on the remote (or deleted there since) is None.

        Raises:
            GitTemporaryError: the server or network failed, after bounded retries.
            GitPermanentError: credentials or the certificate / host key were refused.
        """
        self._forget_parsed()
        self._remote.fetch((self._main, self._state))
        self._merge_packs()
        return Heads(main=self.tip(self._main), state=self.tip(self._state))

    def _forget_parsed(self) -> None:
        """Drop the objects libgit2 parsed for this repo so far (a tick's, at its start).

        libgit2 keeps every commit and tree it parses, up to ``CACHED_BYTES`` counted as
        raw bytes, while the memory they take is 2.5 to 4.7 times that (mallinfo2), and a
        tick's objects are seldom read by the next: the soak's resident memory grew with
        the cache, towards 40 to 75 MiB at that bound (``hack/bench.py soak``). Freed at each
        fetch, the cache holds one tick's objects, which its push reads back. libgit2
        frees the cache with the handles to the object database, which the staging area
        gives back.
        """
        self._repo.free()
        self._staging.reopen()

    def branches(self) -> list[str]:
        """The Env repo's branch names, as its server lists them now."""
        return self._remote.branches()

    # -- reading ----------------------------------------------------------------------

    def _tree(self, commit: str) -> pygit2.Tree:
        # Reading a tip's 1,000 state documents resolves the same commit 1,000 times.
        found = self._trees.get(commit)
        if found is not None:
            return found
        try:
            obj = self._repo.get(commit)
        except ValueError:
            obj = None
        if obj is None or obj.type != ObjectType.COMMIT:
            raise GitPermanentError(
                f"commit {commit!r} is not in the local cache; fetch first", ref=self.url
            )
        tree = obj.peel(pygit2.Tree)
        if len(self._trees) >= _TREES_KEPT:
            self._trees.pop(next(iter(self._trees)))
        self._trees[commit] = tree
        return tree

    def _entry(self, commit: str, path: str) -> pygit2.Object | None:
        tree = self._tree(commit)
        path = path.strip("/")
        if not path:
            return tree
        try:
            return tree[held(path)]
        except KeyError:
            return None

    def read_file(self, commit: str, path: str) -> bytes | None:
        """Content of the file ``path`` at ``commit``, or None when absent (or a directory)."""
        entry = self._entry(commit, path)
        return entry.data if isinstance(entry, pygit2.Blob) else None

    def blob_id(self, commit: str, path: str) -> str | None:
        """Blob id of the file ``path`` at ``commit``, or None when it is no file there."""
        entry = self._entry(commit, path)
        return str(entry.id) if isinstance(entry, pygit2.Blob) else None

    def exists(self, commit: str, path: str) -> bool:
        """Whether ``path`` (a file or a directory) exists at ``commit``."""
        return self._entry(commit, path) is not None

    def read_blob(self, blob_id: str) -> bytes:
        """Content of a blob found by ``list_files`` or ``blob_id``."""
        try:
            obj = self._repo.get(blob_id)
        except ValueError:
            obj = None
        if not isinstance(obj, pygit2.Blob):
            raise GitPermanentError(f"blob {blob_id!r} is not in the local cache", ref=self.url)
        return obj.data

    def list_files(self, commit: str, prefix: str = "") -> Iterator[tuple[str, str]]:
        """Recursively list ``(path, blob id)`` under the directory ``prefix`` at ``commit``.

        Only the subtree under ``prefix`` is read. An absent prefix lists nothing.
        """
        prefix = prefix.strip("/")
        entry = self._entry(commit, prefix)
        if isinstance(entry, pygit2.Tree):
            yield from _walk(entry, f"{prefix}/" if prefix else "")

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        """Paths added, modified or deleted from ``old`` to ``new`` (all of ``new`` if None).

        A tree diff: subtrees with the same id on both sides are skipped unread.
        """
        old_tree = self._tree(old) if old is not None else None
        return sorted(diff_paths(old_tree, self._tree(new)))

    def merge_base(self, commits: Sequence[str]) -> str | None:
        """The best common ancestor of ``commits`` (None: none, or one is not cached)."""
        try:
            for commit in commits:
                self._tree(commit)
        except GitPermanentError:
            return None
        if len(set(commits)) == 1:
            return commits[0]
        found = self._repo.merge_base_many([pygit2.Oid(hex=c) for c in commits])
        return str(found) if found is not None else None

    def log(self, tip: str, *, hide: str | None = None) -> Iterator[CommitInfo]:
        """Commits reachable from ``tip``, newest first, without ``hide``'s ancestry.

        Newest first means topological: libgit2 reads every commit the walk can reach
        before it yields the first, so an unbounded walk costs main's whole history even
        when the caller stops early. Give ``hide`` whenever a floor is known.
        """
        self._tree(tip)
        walker = self._repo.walk(tip, SortMode.TOPOLOGICAL | SortMode.TIME)
        if hide is not None:
            self._tree(hide)
            walker.hide(hide)
        for commit in walker:
            message = commit.message
            yield CommitInfo(
                id=str(commit.id),
                message=message,
                time=commit.commit_time,
                trailers=parse_trailers(message),
                author=f"{commit.author.name} <{commit.author.email}>",
            )

    def origin(self, tip: str, path: str, *, limit: int = 200) -> CommitOrigin | None:
        """The commit that added ``path``, walking first parents back from ``tip``.

        A command's file is added by one commit and removed by the one that answers it, so
        the walk is short; ``limit`` bounds it. None when ``path`` is absent at ``tip`` or
        was added more than ``limit`` commits back.
        """
        commit = self._repo[tip].peel(pygit2.Commit)
        blob = self.blob_id(tip, path)
        if blob is None:
            return None
        for _ in range(limit):
            parent = commit.parents[0] if commit.parents else None
            if parent is None or self.blob_id(str(parent.id), path) != blob:
                signature, signed = commit.gpg_signature  # (None, None) when unsigned
                author = commit.author
                return CommitOrigin(
                    id=str(commit.id),
                    author=f"{author.name} <{author.email}>",
                    signature=signature,
                    signed=signed or b"",
                )
            commit = parent
        return None

    # -- writing ----------------------------------------------------------------------

    def update_branch(self, branch: str, plan: Plan, *, fresh: bool = False) -> UpdateResult:
        """Add ``plan(tip)``'s commits to ``branch`` with a compare-and-swap push.

        ``tip`` is the branch's last fetched (or pushed) tip, None when absent: the first
        commit is then an orphan; with ``fresh`` the branch is fetched first (a branch that
        others push to, whose tip from earlier in the tick is likely stale: the first push
        would be refused). On rejection the branch alone is fetched again and ``plan``
        called with the new tip; at most ``max_push_attempts`` pushes, exponential
        backoff with jitter between them. Never forces. The default waits (0.2, 0.4, 0.8,
        1.6 s, each plus up to 0.2 s) outlast most bursts of a CI job pushing back to back
        to catch up (``hack/bench.py race`` at 5 commits/s: 98-99 of 100 promotions landed
        in 5 attempts; 92-98 with waits from 50 ms, 87-89 from 10 ms).

        Raises:
            PushRejectedError: every attempt lost the race.
            GitTemporaryError: the network failed during a push (not retried here: the
                push may have landed, so the caller re-reads the branch first).
            GitPermanentError: credentials or the certificate / host key were refused.
            ValueError: the plan named an invalid path.
        """
        _check_branch(branch)
        retrying = Retrying(
            stop=stop_after_attempt(self._max_push_attempts),
            # tenacity >= 9.2 names the initial wait ``multiplier``; jitter of the same size
            # keeps two writers that collided from colliding again in lockstep.
            wait=wait_exponential_jitter(
                multiplier=self._backoff_initial,
                max=self._backoff_max,
                jitter=self._backoff_initial,
            ),
            retry=retry_if_exception_type(PushRejectedError),
            sleep=self._sleep,
            reraise=True,
        )
        result = UpdateResult(branch=branch, commits=(), tip=None, attempts=0)
        if fresh:
            self._remote.fetch((branch,))
        try:
            for attempt in retrying:
                with attempt:
                    result = self._update_once(branch, plan, attempt.retry_state.attempt_number)
        except PushRejectedError as exc:
            raise PushRejectedError(
                f"still rejected after {self._max_push_attempts} attempts; last: {exc}",
                ref=branch,
            ) from None
        return result

    def _update_once(self, branch: str, plan: Plan, attempt: int) -> UpdateResult:
        if attempt > 1:
            # This branch only: every millisecond between reading its tip and the push's
            # own reading of it is one in which another writer can move it.
            self._remote.fetch((branch,))
        tip = self.tip(branch)
        specs = list(plan(tip))
        if not specs:
            return UpdateResult(branch=branch, commits=(), tip=tip, attempts=attempt - 1)
        # The new objects are packed during the push, not before it: the push reads them
        # from memory, and the time between reading the tip and the push (when another
        # writer can win the race) stays as short as it can be. A long push's steps go
        # ahead while the later commits are built (``_push``).
        steps = None
        if self._push_ahead and len(specs) > self._push_step:
            steps = Steps(self._repo.path, self._remote, branch)
        try:
            commits = self._build_commits(tip, specs, pack=False, steps=steps)
            new_tip = commits[-1]
            with self._packing():
                self._push(branch, commits, tip, steps)
        except PushRejectedError as exc:
            log.info("git_push_rejected", branch=branch, attempt=attempt, reason=str(exc))
            raise
        finally:
            if steps is not None:
                steps.close()
                if steps.sent:
                    self._drop_ahead(branch)
        self._repo.references.create(tracking_ref(branch), new_tip, force=True)
        log.info("git_pushed", branch=branch, tip=new_tip, commits=len(commits), attempt=attempt)
        self._merge_packs()
        return UpdateResult(branch=branch, commits=tuple(commits), tip=new_tip, attempts=attempt)

    def _push(
        self, branch: str, commits: Sequence[str], tip: str | None, steps: Steps | None
    ) -> None:
        """Push ``commits`` (oldest first) onto ``branch`` at ``tip``, after ``steps``.

        libgit2 builds a push's pack by walking each new commit's trees, looking up every
        subtree, and keeps what it parses in its object cache (``CACHED_BYTES``); once the
        cache is full, it evicts at random and the lookups read the packs again, so a push's
        cost grew faster than its commits. So every ``push_step`` (``PUSH_STEP``) commits
        are sent ahead under a private ref while the next are built (``steps``, by
        ``_build_commits``), each step by a handle on the cache of its own, whose cache
        starts empty, its walk stopping at the last step; the branch's compare-and-swap
        push comes last and alone moves the branch, as a single push would. A server that
        refuses the private ref gets single pushes from then on.

        Raises:
            GitTemporaryError, GitPermanentError: a step could not be sent; the branch
                was not pushed.
        """
        if steps is not None:
            steps.finish()
            if steps.refused is not None:
                self._push_ahead = False
                log.warning("git_push_steps_refused", branch=branch, reason=steps.refused)
            if steps.sent:
                self._forget_parsed()
        self._remote.push(branch, commits[-1], tip)

    def _drop_ahead(self, branch: str) -> None:
        """Delete the private ref a stepped push moved (logged, never raised)."""
        try:
            self._remote.drop_ahead(branch)
        except GitError as exc:
            log.warning("git_push_ahead_left", branch=branch, error=str(exc))

    def _build_commits(
        self,
        tip: str | None,
        specs: Sequence[CommitSpec],
        *,
        pack: bool = True,
        steps: Steps | None = None,
    ) -> list[str]:
        """Write ``specs`` as commits on ``tip``; return their ids, oldest first.

        Their objects are packed before returning, unless ``pack`` is False: the caller
        then packs them, whatever happens next. With ``steps``, every ``push_step``
        commits but the last are packed and sent ahead (``Steps.send``).
        """
        base = self._tree(tip).id.raw if tip is not None else None
        editor = TreeEditor(self._repo, self._staging, base)
        parent = bytes.fromhex(tip) if tip is not None else None
        commits: list[str] = []
        for spec in specs:
            tree_id = editor.apply(spec.changes)
            when = int(self._clock())
            # A person's commit (a command) is theirs as author and committer.
            author = pygit2.Signature(*(spec.author or self._author), when, 0)
            parents = [parent] if parent is not None else []
            if spec.sign is None:
                content = commit_bytes(tree_id, parents, author, author, spec.message)
                parent = object_id(ObjectType.COMMIT, content)
                self._staging.add(ObjectType.COMMIT, content, parent)
            else:
                # pygit2's stub says Oid; libgit2 returns the commit's text (a str).
                text = str(
                    self._repo.create_commit_string(
                        author,
                        author,
                        spec.message,
                        pygit2.Oid(raw=tree_id),
                        [pygit2.Oid(raw=p) for p in parents],
                    )
                )
                signature = spec.sign(text.encode())
                parent = self._repo.create_commit_with_signature(text, signature.decode()).raw
            commits.append(parent.hex())
            step = len(commits) % self._push_step == 0 and len(commits) < len(specs)
            if steps is not None and step:
                self._pack()  # the step's thread reads packs only
                steps.send(commits[-1])
            elif self._staging.over_limit:
                self._pack()
        if pack:
            self._pack()
        return commits

    def _pack(self) -> None:
        """Move the objects staged in memory into a pack of the cache."""
        try:
            self._staging.pack()
        except OSError as exc:
            raise GitTemporaryError(
                f"cannot write new objects to the cache: {exc}", ref=self.url
            ) from None

    def _merge_packs(self) -> None:
        """Keep the cache's packs few and its size bounded (``Staging.start_repack``, ``merge``).

        Called after a fetch and after a push, when every object still needed is reachable
        from the remote-tracking references (the staged ones stay in memory). A repack
        runs in a thread of its own (``Staging.start_repack``) and is applied by a later
        call once written: a tick that records 5,000 transitions sets one off, which took
        4 to 5 s between its push and setting the weights. A failure (a full volume, say)
        leaves the cache as it was, only slower to read and larger: logged, never raised;
        the next fetch or push tries again.
        """
        try:
            if self._staging.repacking:
                self._finish_repack(wait=False)
                if self._staging.repacking:
                    return  # still writing: no merge under it
            if self._staging.should_repack():
                self._staging.start_repack(self._reference_tips())
                return
            self._merge()
        except (OSError, ValueError) as exc:
            self._upkeep_failed(exc)

    def _merge(self) -> None:
        """Merge the smallest packs if the cache holds too many (``Staging.merge``); counted.

        Raises:
            OSError, ValueError: as ``Staging.merge`` (nothing is lost).
        """
        merged = self._staging.merge()
        if merged:
            self._upkeep["merges"] += 1
            log.info("git_cache_packs_merged", packs=merged)

    def _upkeep_failed(self, exc: Exception) -> None:
        """Count and log an upkeep step that failed: the cache stays as it was, only larger."""
        self._upkeep["failures"] += 1
        log.warning("git_cache_upkeep_failed", error=str(exc), retried="after the next fetch")

    def _reference_tips(self) -> list[pygit2.Oid]:
        """What the cache's references point at: everything a repack must keep."""
        tips = [ref.resolve().target for ref in self._repo.references.objects]
        return [tip for tip in tips if isinstance(tip, pygit2.Oid)]

    def _finish_repack(self, *, wait: bool) -> None:
        """Apply the repack under way once written (``Staging.finish_repack``).

        Raises:
            OSError: it could not be written (the old packs all stay).
        """
        written = self._staging.finish_repack(wait=wait)
        if written is not None:
            self._upkeep["repacks"] += 1
            stats = self.cache_stats()
            log.info(
                "git_cache_repacked",
                objects=written,
                bytes=stats.bytes,
                repack_peak_mib=round(stats.repack_peak_mib, 1),
            )

    def wait_upkeep(self) -> None:
        """Wait for the cache's repack under way, if any, apply it, and merge what came meanwhile.

        Packs written while a repack ran (or queued behind another repo's) stay unmerged
        until it is applied (``_merge_packs``); the merge here makes them few again. A
        failure is logged, never raised, as in ``_merge_packs``.
        """
        try:
            self._finish_repack(wait=True)
            self._merge()
        except (OSError, ValueError) as exc:
            self._upkeep_failed(exc)

    def cache_stats(self) -> CacheStats:
        """The cache's size and pack count now, and its upkeep so far (a directory listing)."""
        packs = self._staging.packs()
        return CacheStats(
            bytes=sum(size for _index, size in packs),
            packs=len(packs),
            merges=self._upkeep["merges"],
            repacks=self._upkeep["repacks"],
            failures=self._upkeep["failures"],
            repacking=self._staging.repacking,
            repack_peak_mib=self._staging.repack_peak / 2**20,
        )

    @contextlib.contextmanager
    def _packing(self) -> Iterator[None]:
        """Pack the staged objects while the block runs (see ``Staging.packing``)."""
        try:
            with self._staging.packing():
                yield
        except OSError as exc:
            raise GitTemporaryError(
                f"cannot write new objects to the cache: {exc}", ref=self.url
            ) from None


def _walk(tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, str]]:
    for entry in tree:
        path = f"{prefix}{entry.name}"
        if isinstance(entry, pygit2.Tree):
            yield from _walk(entry, f"{path}/")
        elif isinstance(entry, pygit2.Blob):
            yield path, str(entry.id)


CACHED_BYTES = 32 * 1024 * 1024
"""libgit2's cache of parsed commits and trees, process-wide, in raw bytes (libgit2's
default: 256 MiB, which a long-running process reading new commits every tick fills, never
frees). Each store also drops its repo's share at every fetch (``_forget_parsed``), so only
a big push comes near it. A step of 1,000 commits over full trees (a tick of a process that
already holds 10,000 experiments) holds up to 27 MiB, each tree counted twice (the raw
object libgit2 read, and the parsed one); at 16 MiB libgit2 evicted at random and read the
trees again, and that push took 9.5 s instead of 4.6 (``hack/bench.py tick``). A first
tick's steps hold at most 18 MiB, so its peak (``hack/bench.py memory``) did not change."""
MAPPED_BYTES = 64 * 1024 * 1024
"""Pack data libgit2 keeps mapped at most (default 8 GiB); least recently used windows go."""
OPEN_PACKS = 64
"""Pack files libgit2 keeps open at most (default: no limit)."""
CACHED_TREE_BYTES = 64 * 1024
"""Trees up to this size are kept in libgit2's cache (libgit2's default: 4 KiB). A push walks
every new commit's whole tree, and looks up each subtree of each directory it enters: with
``experiments/`` holding 100 namespaces of 100 documents (trees of 4 to 5 KiB), the push of
a 3,000-transition tick parsed the same trees again and again (3.5 s; 1.4 s once cached,
``hack/bench.py tick``). ``CACHED_BYTES`` still bounds the cache."""


NETWORK_TIMEOUT = 30.0
"""Seconds a Git server may stay silent before an operation fails (libgit2's default: no
limit, so a server that accepts and never answers held a tick, and a fleet's worker,
forever). The runner sets its ``git_timeout`` setting instead (``bound_network``)."""


def bound_network(seconds: float = NETWORK_TIMEOUT) -> None:
    """Fail a connection, or a read or write in a fetch or push, silent for ``seconds``.

    Process-wide in libgit2, for every transport (git, HTTP(S), SSH).
    """
    milliseconds = max(1, round(seconds * 1000))
    pygit2.settings.server_connect_timeout = milliseconds
    pygit2.settings.server_timeout = milliseconds


def bound_memory() -> None:
    """Bound libgit2's process-wide caches, and fix when freed memory goes back to the system.

    libgit2's: parsed objects, mapped pack windows, open packs; the C library's thresholds:
    ``native_heap.fix_malloc_thresholds``.
    """
    fix_malloc_thresholds()
    pygit2.settings.cache_max_size(CACHED_BYTES)
    pygit2.settings.cache_object_limit(ObjectType.TREE, CACHED_TREE_BYTES)
    pygit2.settings.mwindow_mapped_limit = MAPPED_BYTES
    pygit2.settings.mwindow_file_limit = OPEN_PACKS


def read_without_rehashing() -> None:
    """Let libgit2 read objects without computing their ids again (process-wide).

    libgit2 hashes every object it reads to check it against its id; git itself does not
    (only ``fsck`` and ``index-pack`` do). Every object in the cache was hashed when it came
    in: a fetched pack's ids are computed from its content by libgit2's indexer, and each
    object the store writes gets the id of its content (``staging``, ``treeedit``), so a
    read could only find a mismatch on a corrupted disk, whose pack data zlib's own checksum
    still catches. The check was a quarter of the push of a 1,000-transition tick, which
    reads back every tree it packs (push 0.43 -> 0.37 s, ``hack/bench.py tick``).
    """
    pygit2.settings.enable_strict_hash_verification(False)  # noqa: FBT003 - positional


def object_cache() -> tuple[int, int]:
    """libgit2's cache of parsed objects now, process-wide: (bytes held, ``CACHED_BYTES``)."""
    held, limit = pygit2.settings.cached_memory
    return int(held), int(limit)


def _check_branch(branch: str) -> None:
    if not branch or not pygit2.reference_is_valid_name(f"refs/heads/{branch}"):
        raise ValueError(f"invalid branch name {branch!r}")


def _open_cache(cache_dir: Path) -> pygit2.Repository:
    if cache_dir.exists() and any(cache_dir.iterdir()):
        try:
            repo = pygit2.Repository(str(cache_dir))
        except pygit2.GitError as exc:
            raise GitPermanentError(f"{cache_dir} is not a Git repository: {exc}") from None
        if not repo.is_bare:
            raise GitPermanentError(f"{cache_dir} is not a bare repository")
    else:
        repo = pygit2.init_repository(str(cache_dir), bare=True)
    _pack_settings(repo)
    return repo


PACK_WINDOW_BYTES = 32 * 1024
"""Object data libgit2's delta search keeps in its window (``pack.windowMemory``; default:
no limit, a window of 10 objects). A state commit's trees are 2 to 5 KiB, so the window
holds the 3 or so nearest versions of a tree rather than 10: the push of a tick of 1,000
transitions took 0.41 s with half of it in the delta search, 0.31 s with this bound, for a
pack of 0.80 MB instead of 0.66 MB (``hack/bench.py tick``); a repack is faster by as much
and its pack as much larger."""


def _pack_settings(repo: pygit2.Repository) -> None:
    """Set the cache's ``pack.windowMemory`` (libgit2 reads it for every pack it builds).

    A config that cannot be written leaves libgit2's default: slower packs, nothing else.
    """
    with contextlib.suppress(KeyError, ValueError, pygit2.GitError):
        if repo.config.get_int("pack.windowMemory") == PACK_WINDOW_BYTES:
            return
    try:
        repo.config["pack.windowMemory"] = PACK_WINDOW_BYTES
    except (pygit2.GitError, OSError) as exc:
        log.warning("git_cache_config_unwritable", error=str(exc), setting="pack.windowMemory")
