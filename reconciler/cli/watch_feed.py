"""What ``reconciler watch`` reads from the Env repo at each interval: states and new commits.

A ``Feed`` fetches main and the state branch and answers with a ``Poll``: the states to
show (every live experiment, or the run of the one named), each state commit that arrived
since the last poll with the document it wrote (oldest first, so output that is not a
terminal prints one line per commit), which run of a named experiment is followed and
whether it ended, and, with a cluster, the weights it carries. A failed fetch is part of
the answer, not an exception: the watch shows it and asks again next interval. It never
writes anything to the Env repo or the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from reconciler.cli.status import observe
from reconciler.controller import records
from reconciler.controller.discovery import Discovery
from reconciler.controller.isolation import describe
from reconciler.engine.state import ExperimentState, from_json
from reconciler.errors import ReconcilerError
from reconciler.gitstore.state_branch import ARCHIVE_DIR, LIVE_DIR, archive_path, live_path
from reconciler.live_view import Observed, Pick, exit_code, pick_run
from reconciler.ports import Cluster, EnvStore, Heads

WALK_LIMIT = 1000
"""State commits read per poll; older ones since the last poll are counted, not shown."""
RUN_LENGTH = 12
"""Hex digits of the spec blob in a run id (``namespace/name@3f2a9c1e07b4``)."""
FINISHED_KEPT = 10
"""Runs that ended during the watch, still shown (with their outcome) after they left."""


@dataclass(frozen=True, slots=True)
class Tracked:
    """A state, with the state commit that wrote it when known."""

    state: ExperimentState
    commit: str | None = None


@dataclass(frozen=True)
class Poll:
    """What one poll found."""

    at: float
    tip: str | None
    """The state branch's tip (None: no state branch yet)."""
    error: str | None = None
    """Why the fetch failed (the rest is what the last good poll found)."""
    states: tuple[Tracked, ...] = ()
    """What to show now: live runs (and runs that ended during the watch), or the one
    followed."""
    new: tuple[Tracked, ...] = ()
    """The state commits since the last poll, oldest first."""
    left_out: int = 0
    """State commits since the last poll past ``WALK_LIMIT``, not in ``new``."""
    pick: Pick | None = None
    """Watching one experiment: the run followed."""
    observed: dict[str, Observed] = field(default_factory=dict)
    """Run id to what the cluster carries (only with a cluster)."""
    invalid: tuple[str, ...] = ()
    """State documents that could not be read, with why."""

    @property
    def ended(self) -> int | None:
        """The exit code of the followed run once it ended (None: running, or all watched)."""
        if self.pick is None or self.pick.state is None:
            return None
        return exit_code(self.pick.state)

    @property
    def waiting(self) -> str | None:
        """What the watch waits for, if there is nothing to show yet."""
        return self.pick.waiting if self.pick is not None else None


class Feed:
    """Reads the state branch for the watch: all live experiments, or one run."""

    def __init__(
        self,
        store: EnvStore,
        *,
        key: str | None = None,
        run: str | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        """Watch every live experiment, or (``key``: ``namespace/name``) one of its runs.

        ``run``: the 12-hex suffix of the run to follow; without it the run is chosen by
        ``live_view.pick_run``. ``cluster``: read the weights it carries at every poll.
        """
        self._store = store
        self._key = key
        self._run = run
        self._cluster = cluster
        self._discovery = Discovery(store)
        self._tip: str | None = None
        self._polled = False
        self._parsed: dict[str, ExperimentState] = {}
        """Live documents by blob id: a tip change re-reads only the documents it changed."""
        self._finished: dict[str, ExperimentState] = {}
        self._commits: dict[str, str] = {}
        """Run id to the last state commit seen writing it (runs shown now only)."""
        self._last: Poll | None = None

    def poll(self, now: float, heads: Heads | None = None) -> Poll:
        """Fetch (unless ``heads`` were just fetched) and say what changed since last time."""
        try:
            heads = heads or self._store.fetch()
        except ReconcilerError as exc:
            last = self._last or Poll(now, None)
            return replace(last, at=now, error=describe(exc), new=(), left_out=0, invalid=())
        tip = heads.state
        new, left_out = self._walk(tip) if self._polled else ((), 0)
        self._commits.update((t.state.id, t.commit) for t in new if t.commit)
        invalid: list[str] = []
        pick = None
        if self._key is None:
            states = self._everything(tip, new, invalid)
        else:
            pick = self._pick(heads, invalid)
            states = () if pick.state is None else (pick.state,)
        tracked = tuple(Tracked(state, self._commits.get(state.id)) for state in states)
        self._commits = {t.state.id: t.commit for t in tracked if t.commit}
        if not self._polled:
            new = tracked  # the first lines: where each run stands when the watch starts
        self._polled, self._tip = True, tip
        live = [state for state in states if not state.archived]
        self._last = Poll(
            now,
            tip,
            states=tracked,
            new=new,
            left_out=left_out,
            pick=pick,
            observed=self._observe(live),
            invalid=tuple(invalid),
        )
        return self._last

    def _everything(
        self, tip: str | None, new: tuple[Tracked, ...], invalid: list[str]
    ) -> tuple[ExperimentState, ...]:
        """Every live run, then the runs that ended since the watch started (the latest few)."""
        live = self._live(tip, invalid)
        for tracked in new:
            if tracked.state.archived:
                self._finished[tracked.state.id] = tracked.state
        while len(self._finished) > FINISHED_KEPT:
            self._finished.pop(next(iter(self._finished)))
        ids = {state.id for state in live}
        return (*live, *(state for run, state in self._finished.items() if run not in ids))

    def _walk(self, tip: str | None) -> tuple[tuple[Tracked, ...], int]:
        """The state commits from the last tip to ``tip``, oldest first, with their documents."""
        if tip is None or tip == self._tip:
            return (), 0
        found: list[Tracked] = []
        left_out = 0
        for commit in self._store.log(tip, hide=self._tip):
            key = commit.trailer(records.EXPERIMENT)
            if key is None or (self._key is not None and key != self._key):
                continue
            if len(found) >= WALK_LIMIT:
                left_out += 1
                continue
            state = self._state_at(commit.id, key, commit.trailer(records.ID) or "")
            if state is not None:
                found.append(Tracked(state, commit.id))
        found.reverse()
        return tuple(found), left_out

    def _state_at(self, commit: str, key: str, run_id: str) -> ExperimentState | None:
        """The document a state commit wrote: its live one, or the archived one."""
        namespace, _, name = key.partition("/")
        suffix = run_id.partition("@")[2]
        try:
            paths = [live_path(namespace, name)]
            if suffix:
                paths.append(archive_path(namespace, name, suffix))
        except ValueError:
            return None
        for path in paths:
            raw = self._store.read_file(commit, path)
            if raw is None:
                continue
            try:
                state = from_json(raw)
            except (ValueError, KeyError, TypeError):
                return None
            # A live document of another run (the commit archived this one) is not it.
            if not run_id or state.id == run_id:
                return state
        return None

    def _live(self, tip: str | None, invalid: list[str]) -> tuple[ExperimentState, ...]:
        if tip is None:
            return ()
        parsed: dict[str, ExperimentState] = {}
        for path, blob in sorted(self._store.list_files(tip, LIVE_DIR)):
            state = self._parsed.get(blob)
            if state is None:
                try:
                    state = from_json(self._store.read_file(tip, path) or b"")
                except Exception as exc:  # noqa: BLE001 - a hand-edited state branch: show it, watch the rest
                    invalid.append(f"{path}: not a state document: {describe(exc)}")
                    continue
            parsed[blob] = state
        self._parsed = parsed
        return tuple(parsed.values())

    def _pick(self, heads: Heads, invalid: list[str]) -> Pick:
        key = self._key or ""
        namespace, _, name = key.partition("/")
        tip = heads.state
        live = None
        if tip is not None:
            live = self._read(tip, live_path(namespace, name), invalid)
        on_main: list[str] = []
        if self._run is None and heads.main is not None:
            scan = self._discovery.scan(heads.main)
            on_main = [found.blob for found in scan.experiments if found.spec.key == key]
        run = self._run or (on_main[0][:12] if on_main else None)
        archived = list(self._archived(tip, namespace, name, run, invalid))
        pick = pick_run(key, self._run, on_main=on_main, live=live, archived=archived)
        if pick.state is not None and pick.run is not None:
            self._run = pick.run.partition("@")[2]  # seen on the state branch: followed
        elif live is not None and pick.waiting:
            pick = Pick(None, pick.run, f"{pick.waiting} (live now: {live.id}, {live.phase})")
        return pick

    def _archived(
        self, tip: str | None, namespace: str, name: str, run: str | None, invalid: list[str]
    ) -> Iterator[ExperimentState]:
        if tip is None:
            return
        if run is not None and len(run) == RUN_LENGTH:
            state = self._read(tip, archive_path(namespace, name, run), invalid)
            if state is not None:
                yield state
            return
        for path, _blob in self._store.list_files(tip, f"{ARCHIVE_DIR}/{namespace}/{name}"):
            state = self._read(tip, path, invalid)
            if state is not None:
                yield state

    def _read(self, tip: str, path: str, invalid: list[str]) -> ExperimentState | None:
        raw = self._store.read_file(tip, path)
        if raw is None:
            return None
        try:
            return from_json(raw)
        except Exception as exc:  # noqa: BLE001 - a hand-edited state branch: say so, go on
            invalid.append(f"{path}: not a state document: {describe(exc)}")
            return None

    def _observe(self, live: list[ExperimentState]) -> dict[str, Observed]:
        if self._cluster is None or not live:
            return {}
        try:
            return observe(live, self._cluster)
        except ReconcilerError as exc:
            return {s.id: Observed("unreadable", {}, describe(exc)) for s in live}
