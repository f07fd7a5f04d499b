"""What a report is made of, read from the Env repo: one run's commits, documents, outcome.

``gather`` walks the state branch once, keeps the commits of one run of an experiment
(its state commits and the commands people pushed for it), reads the state document
each state commit wrote, and looks the run's outcome commit up on main. Everything goes
through the ``EnvStore`` port: nothing here knows pygit2, and nothing is written. The
walk and the documents read are bounded, so a run with a very long history costs a
known amount; what was left out is said in ``Sources.notes``.
"""

from __future__ import annotations

from reconciler.controller import records
from reconciler.controller.outcomes import find_outcome
from reconciler.engine.state import ExperimentState, from_json
from reconciler.errors import PermanentError
from reconciler.gitstore.state_branch import archive_path, check_name, live_path
from reconciler.ports import CommitInfo, EnvStore, Heads
from reconciler.report.model import Sources

__all__ = ["MAX_RUN_COMMITS", "MAX_WALK", "ReportNotFoundError", "gather"]

MAX_RUN_COMMITS = 2_000
"""Commits of one run read (the newest ones); each state commit's document is parsed."""
MAX_WALK = 200_000
"""Commits of the state branch walked looking for the run's."""


class ReportNotFoundError(PermanentError):
    """The experiment, or the run asked for, has nothing recorded on the state branch."""


def gather(store: EnvStore, heads: Heads, key: str, run: str | None = None) -> Sources:
    """The commits, documents and outcome of one run of ``key`` (``namespace/name``).

    ``run`` is a ``Rollout-Id`` (``namespace/name@abc123``) or its part after ``@``;
    without it, the live run, else the one recorded last.

    Raises:
        ReportNotFoundError: ``key`` is not ``namespace/name``, nothing is recorded for
            it, or not for ``run``.
    """
    namespace, name = _split(key)
    if heads.state is None:
        raise ReportNotFoundError(f"{key}: the state branch {store.state_branch} does not exist")
    wanted = _run_suffix(key, run) if run else _live_run(store, heads.state, namespace, name)
    found = _Run(key, wanted)
    for walked, commit in enumerate(store.log(heads.state)):
        if walked == MAX_WALK:
            found.notes.append(f"stopped walking {store.state_branch} after {MAX_WALK:,} commits")
            break
        if not found.take(commit):
            break
    if found.suffix is None or not any(c.trailer(records.PHASE) for c in found.mine):
        which = f"run {key}@{wanted}" if run else key
        raise ReportNotFoundError(f"nothing recorded for {which} on {store.state_branch}")
    mine = found.mine[::-1]
    documents = _documents(store, mine, namespace, name, found)
    if not documents:
        raise ReportNotFoundError(f"no readable state document for {found.id}")
    return Sources(
        key,
        found.id,
        tuple(mine),
        documents,
        tuple(found.answers[::-1]),
        _outcome(store, heads.main, documents),
        tuple(found.notes),
    )


class _Run:
    """The commits of one run met on a walk of the state branch (newest first)."""

    def __init__(self, key: str, suffix: str | None) -> None:
        self.key = key
        self.suffix = suffix
        """The run's id after ``@``; None until the newest recorded run is met."""
        self.mine: list[CommitInfo] = []
        self.answers: list[CommitInfo] = []
        """Other commits of the experiment that answer commands (possibly this run's)."""
        self.notes: list[str] = []
        self._newer: list[CommitInfo] = []
        """Commands met before the run is known, newer than its state commits."""

    @property
    def id(self) -> str:
        """The run's ``Rollout-Id``."""
        return f"{self.key}@{self.suffix}"

    def take(self, commit: CommitInfo) -> bool:
        """Keep ``commit`` when it is the run's, or may answer a command; False: stop."""
        if commit.trailer(records.EXPERIMENT) != self.key:
            return True
        run_id = commit.trailer(records.ID) or ""
        if self.suffix is None:
            if commit.trailer(records.PHASE) is None:
                self._newer.append(commit)
                return True
            self.suffix = run_id.partition("@")[2]  # the newest run recorded
            for seen in self._newer:
                (self.mine if seen.trailer(records.ID) == run_id else self.answers).append(seen)
        if run_id == self.id:
            if len(self.mine) >= MAX_RUN_COMMITS:
                self.notes.append(
                    f"only the newest {MAX_RUN_COMMITS:,} commits of this run were read; "
                    "older ones are left out"
                )
                return False
            self.mine.append(commit)
        elif commit.trailer(records.COMMAND_COMMIT) and len(self.answers) < MAX_RUN_COMMITS:
            self.answers.append(commit)
        return True


def _split(key: str) -> tuple[str, str]:
    namespace, sep, name = key.partition("/")
    if not sep:
        raise ReportNotFoundError(f"{key!r} is not an experiment: expected NAMESPACE/NAME")
    try:
        check_name("namespace", namespace)
        check_name("name", name)
    except ValueError as exc:
        raise ReportNotFoundError(f"{key!r} is not an experiment: {exc}") from None
    return namespace, name


def _run_suffix(key: str, run: str) -> str:
    """The part of a Rollout-Id after ``@``; a full id must be one of ``key``'s."""
    if "@" not in run:
        return run
    of, _, suffix = run.partition("@")
    if of != key:
        raise ReportNotFoundError(f"run {run} is not a run of {key}")
    return suffix


def _live_run(store: EnvStore, tip: str, namespace: str, name: str) -> str | None:
    """The suffix of the live run's id, when the tip holds a readable live document."""
    raw = store.read_file(tip, live_path(namespace, name))
    if raw is None:
        return None
    try:
        return from_json(raw).id.partition("@")[2]
    except (ValueError, KeyError, TypeError):
        return None  # the walk finds the newest recorded run instead


def _documents(
    store: EnvStore, commits: list[CommitInfo], namespace: str, name: str, run: _Run
) -> dict[str, ExperimentState]:
    """The document each of the run's state commits wrote; a bad one is noted in ``run``."""
    documents: dict[str, ExperimentState] = {}
    for commit in commits:
        if commit.trailer(records.PHASE) is None:
            continue
        state, problem = _document(store, commit.id, namespace, name, run.suffix or "")
        if state is not None:
            documents[commit.id] = state
        elif problem:
            run.notes.append(f"state commit {commit.id[:12]}: {problem}")
    return documents


def _document(
    store: EnvStore, commit: str, namespace: str, name: str, suffix: str
) -> tuple[ExperimentState | None, str]:
    """The state document a state commit wrote (live, or archived when the run ended)."""
    try:
        paths = (live_path(namespace, name), archive_path(namespace, name, suffix))
    except ValueError as exc:
        return None, str(exc)
    for path in paths:
        raw = store.read_file(commit, path)
        if raw is None:
            continue
        try:
            state = from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"{path} is not a state document ({type(exc).__name__}: {exc})"
        if state.spec_blob[:12] == suffix:
            return state, ""
    return None, ""  # another run's document (a restart, a preemption): nothing to read here


def _outcome(
    store: EnvStore,
    main: str | None,
    documents: dict[str, ExperimentState],
) -> CommitInfo | None:
    """The run's outcome commit on main (by ``Rollout-Id``), with its author and time."""
    if main is None or not documents:
        return None
    last = list(documents.values())[-1]  # in the commits' order, oldest first
    if last.outcome_commit is None and last.decided_on is None:
        return None  # no decision yet: nothing to look for on main
    found = last.outcome_commit or find_outcome(store, main, last)
    if found is None:
        return None
    for commit in store.log(main, hide=last.decided_on):
        if commit.id == found:
            return commit
    return None
