"""A run's report as values: the series, verdicts and commits one report shows.

``build`` turns what ``collect.gather`` read (the run's commits, the state document each
state commit wrote, the outcome commit on main) into a ``Report``: every iteration once
(a document keeps only the last ``HISTORY_LIMIT`` iterations, so the series is stitched
from the documents along the branch), the weights set at each iteration, each metric per
version with its objective's limits, and who and which commits started, commanded,
decided and ended the run. ``Report.as_dict`` is the JSON form (``-o report.json``) and
what the HTML is rendered from. Pure: values in, values out; no Git, no clock, no disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.controller import records
from reconciler.engine.state import ExperimentState, IterationRecord, Phase
from reconciler.gitstore.trailers import decode_mapping
from reconciler.ports import CommitInfo

__all__ = [
    "MAX_ITERATIONS",
    "PENDING",
    "CommandEntry",
    "CommitRef",
    "Iteration",
    "MetricSeries",
    "Outcome",
    "Report",
    "Sources",
    "Transition",
    "build",
]

MAX_ITERATIONS = 2_000
"""Iterations a report holds (the newest); the run's commits are bounded the same way."""
PENDING = "pending"
"""A command's status while no commit answers it."""
_DECIDING = frozenset({Phase.PROMOTING.value, Phase.ROLLING_BACK.value})
_FINAL = frozenset(p.value for p in Phase if p.final)


@dataclass(frozen=True)
class Sources:
    """One run's record as read from Git: what ``build`` needs, nothing else."""

    key: str
    """``namespace/name``."""
    run_id: str
    """The ``Rollout-Id``."""
    commits: tuple[CommitInfo, ...]
    """The run's commits on the state branch, oldest first: its state commits (they carry
    ``Rollout-Phase``) and the commands people pushed for it."""
    documents: Mapping[str, ExperimentState]
    """State commit id to the state document it wrote (oldest first)."""
    answers: tuple[CommitInfo, ...] = ()
    """Other commits of the experiment that answer commands (the loop's "ignored")."""
    outcome: CommitInfo | None = None
    """The promotion or rollback commit on main, once it landed."""
    notes: tuple[str, ...] = ()
    """What was left out or could not be read."""


@dataclass(frozen=True)
class CommitRef:
    """A commit as the report shows it: id, author, time, subject."""

    commit: str
    author: str
    time: str
    subject: str

    @classmethod
    def of(cls, info: CommitInfo) -> CommitRef:
        """The report's view of ``info``."""
        return cls(info.id, info.author, _iso(info.time), info.subject)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "commit": self.commit,
            "author": self.author,
            "time": self.time,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class Transition:
    """One state commit of the run."""

    ref: CommitRef
    phase: str
    iteration: int
    weights: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            **self.ref.as_dict(),
            "phase": self.phase,
            "iteration": self.iteration,
            "weights": self.weights,
        }


@dataclass(frozen=True)
class Iteration:
    """What one judged iteration observed and decided."""

    iteration: int
    time: str
    weights: dict[str, int]
    """The split the versions carried while they were observed."""
    verdicts: dict[str, str]
    """Version to ``pass``, ``fail`` or ``no-data``."""
    metrics: dict[str, dict[str, float | None]]
    """Version to metric to value (None: no data)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "iteration": self.iteration,
            "time": self.time,
            "weights": self.weights,
            "verdicts": self.verdicts,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class MetricSeries:
    """One metric per version over the iterations, with its objective's limits."""

    metric: str
    upper_limit: float | None
    lower_limit: float | None
    values: dict[str, list[float | None]]
    """Version to one value per entry of ``Report.iterations`` (None: no data)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metric": self.metric,
            "upperLimit": self.upper_limit,
            "lowerLimit": self.lower_limit,
            "values": self.values,
        }


@dataclass(frozen=True)
class CommandEntry:
    """A command a person pushed for the run, and its answer."""

    command: str
    commit: str
    """The person's commit ("" when the record names none)."""
    author: str
    requested_at: str | None
    """The person's commit's time, when it was found on the branch."""
    status: str
    """``done``, ``refused``, ``ignored`` or ``pending`` (no answer recorded yet)."""
    why: str
    reason: str
    forced: bool
    signer: str | None
    answered_at: str | None
    answered_in: str | None
    """The state commit that answered it."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "command": self.command,
            "commit": self.commit,
            "author": self.author,
            "requestedAt": self.requested_at,
            "status": self.status,
            "why": self.why,
            "reason": self.reason,
            "forced": self.forced,
            "signer": self.signer,
            "answeredAt": self.answered_at,
            "answeredIn": self.answered_in,
        }


@dataclass(frozen=True)
class Outcome:
    """The promotion or rollback commit on main."""

    ref: CommitRef
    outcome: str
    """``promoted`` or ``rolled-back`` (``Rollout-Outcome``)."""
    winner: str | None
    state_commit: str | None
    """The state commit that recorded the decision (``Rollout-State``)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            **self.ref.as_dict(),
            "outcome": self.outcome,
            "winner": self.winner,
            "stateCommit": self.state_commit,
        }


@dataclass(frozen=True)
class Report:
    """Everything one report shows about one run."""

    experiment: str
    run_id: str
    target: str
    testing_pattern: str
    deployment_pattern: str
    versions: tuple[str, ...]
    """Baseline first, then the candidates."""
    phase: str
    winner: str | None
    reason: str
    planned_iterations: int
    interval_seconds: int
    source_commit: str
    """The main commit the experiment was found in."""
    started_at: str
    updated_at: str
    iterations: tuple[Iteration, ...]
    weights: dict[str, list[int]]
    """Version to the weight set at each of ``weight_iterations`` (iteration 0: the start)."""
    weight_iterations: tuple[int, ...]
    metrics: tuple[MetricSeries, ...]
    started: CommitRef
    decided: CommitRef | None
    ended: CommitRef | None
    outcome: Outcome | None
    commands: tuple[CommandEntry, ...]
    transitions: tuple[Transition, ...]
    notes: tuple[str, ...]

    @property
    def baseline(self) -> str:
        """The baseline version's name."""
        return self.versions[0]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON (``reconciler report -o report.json``)."""
        return {
            "experiment": self.experiment,
            "id": self.run_id,
            "target": self.target,
            "testingPattern": self.testing_pattern,
            "deploymentPattern": self.deployment_pattern,
            "versions": list(self.versions),
            "baseline": self.baseline,
            "phase": self.phase,
            "winner": self.winner,
            "reason": self.reason,
            "plannedIterations": self.planned_iterations,
            "intervalSeconds": self.interval_seconds,
            "sourceCommit": self.source_commit,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
            "iterations": [i.as_dict() for i in self.iterations],
            "weights": {
                "iterations": list(self.weight_iterations),
                "versions": self.weights,
            },
            "metrics": [m.as_dict() for m in self.metrics],
            "commits": {
                "started": self.started.as_dict(),
                "decided": None if self.decided is None else self.decided.as_dict(),
                "ended": None if self.ended is None else self.ended.as_dict(),
                "outcome": None if self.outcome is None else self.outcome.as_dict(),
            },
            "commands": [c.as_dict() for c in self.commands],
            "transitions": [t.as_dict() for t in self.transitions],
            "notes": list(self.notes),
        }


def build(sources: Sources) -> Report:
    """The report of the run ``sources`` holds.

    Raises:
        ValueError: ``sources`` holds no state document (nothing to report from).
    """
    states = [c for c in sources.commits if c.trailer(records.PHASE) is not None]
    documents = [sources.documents[c.id] for c in states if c.id in sources.documents]
    if not states or not documents:
        raise ValueError(f"no readable state document for {sources.run_id}")
    last = documents[-1]
    notes = list(sources.notes)
    iterations = _iterations(documents)
    if len(iterations) > MAX_ITERATIONS:
        notes.append(f"only the last {MAX_ITERATIONS:,} of {len(iterations):,} iterations shown")
        iterations = iterations[-MAX_ITERATIONS:]
    versions = _versions(last, iterations)
    transitions = tuple(_transition(c) for c in states)
    weight_at: dict[int, dict[str, int]] = {}
    for state in documents:
        weight_at[state.iteration] = dict(state.weights)
    points = tuple(sorted(weight_at))
    shown = [_iteration(r) for r in iterations]
    return Report(
        experiment=sources.key,
        run_id=sources.run_id,
        target=last.spec.target,
        testing_pattern=last.spec.testing_pattern.value,
        deployment_pattern=last.spec.deployment_pattern.value,
        versions=versions,
        phase=last.phase.value,
        winner=last.winner,
        reason=last.reason,
        planned_iterations=last.spec.duration.iterations,
        interval_seconds=last.spec.duration.interval_seconds,
        source_commit=last.source_commit,
        started_at=_iso(last.started_at),
        updated_at=_iso(last.updated_at),
        iterations=tuple(shown),
        weights={v: [weight_at[i].get(v, 0) for i in points] for v in versions},
        weight_iterations=points,
        metrics=_metrics(last, shown, versions),
        started=transitions[0].ref,
        decided=_decided(transitions),
        ended=next((t.ref for t in transitions if t.phase in _FINAL), None),
        outcome=_outcome(sources.outcome),
        commands=_commands(sources, documents),
        transitions=transitions,
        notes=tuple(notes),
    )


def _iterations(documents: Iterable[ExperimentState]) -> list[IterationRecord]:
    """Every judged iteration once, in order, from the documents along the branch."""
    seen: dict[int, IterationRecord] = {}
    for state in documents:
        for record in state.history:
            seen.setdefault(record.iteration, record)
    return [seen[i] for i in sorted(seen)]


def _versions(last: ExperimentState, iterations: list[IterationRecord]) -> tuple[str, ...]:
    """The spec's versions (baseline first), then any a record names that it does not."""
    names = dict.fromkeys(v.name for v in last.spec.versions)
    for name, _ in last.weights:
        names.setdefault(name)
    for record in iterations:
        for name, _ in record.weights:
            names.setdefault(name)
    return tuple(names)


def _iteration(record: IterationRecord) -> Iteration:
    metrics: dict[str, dict[str, float | None]] = {}
    for version, metric, value in record.metrics:
        metrics.setdefault(version, {})[metric] = value
    return Iteration(
        iteration=record.iteration,
        time=_iso(record.time),
        weights=dict(record.weights),
        verdicts=dict(record.verdicts),
        metrics=metrics,
    )


def _metrics(
    last: ExperimentState, iterations: list[Iteration], versions: tuple[str, ...]
) -> tuple[MetricSeries, ...]:
    """One series per metric: the objectives first (spec order), the rewards, the rest."""
    criteria = last.spec.criteria
    objectives = {o.metric: o for o in criteria.objectives}
    order = dict.fromkeys(
        [*objectives, *(r.metric for r in criteria.rewards), *criteria.indicators]
    )
    if criteria.request_count:
        order.setdefault(criteria.request_count)
    recorded = {m for i in iterations for values in i.metrics.values() for m in values}
    for metric in sorted(recorded):
        order.setdefault(metric)
    series = []
    for metric in order:
        if metric not in recorded and metric not in objectives:
            continue
        objective = objectives.get(metric)
        series.append(
            MetricSeries(
                metric=metric,
                upper_limit=None if objective is None else objective.upper_limit,
                lower_limit=None if objective is None else objective.lower_limit,
                values={
                    v: [i.metrics.get(v, {}).get(metric) for i in iterations] for v in versions
                },
            )
        )
    return tuple(series)


def _transition(commit: CommitInfo) -> Transition:
    return Transition(
        ref=CommitRef.of(commit),
        phase=commit.trailer(records.PHASE) or "",
        iteration=_int(commit.trailer(records.ITERATION)),
        weights={k: _int(v) for k, v in _mapping(commit.trailer(records.WEIGHTS)).items()},
    )


def _decided(transitions: tuple[Transition, ...]) -> CommitRef | None:
    """The commit that recorded the decision: the last deciding one, else the first final."""
    deciding = [t.ref for t in transitions if t.phase in _DECIDING]
    if deciding:
        return deciding[-1]
    return next((t.ref for t in transitions if t.phase in _FINAL), None)


def _outcome(commit: CommitInfo | None) -> Outcome | None:
    if commit is None:
        return None
    return Outcome(
        ref=CommitRef.of(commit),
        outcome=commit.trailer(records.OUTCOME) or "",
        winner=commit.trailer(records.WINNER),
        state_commit=commit.trailer(records.STATE),
    )


def _commands(sources: Sources, documents: list[ExperimentState]) -> tuple[CommandEntry, ...]:
    """The run's commands: the documents' records, then what only the branch shows.

    A record in a document is the loop's answer and is authoritative. A person's command
    commit that no document records is shown with the answer a commit gave it (an
    ignored one is recorded in a commit of its own), or as pending.
    """
    asked = {
        c.id: c
        for c in sources.commits
        if c.trailer(records.PHASE) is None and c.trailer(records.COMMAND)
    }
    answered: dict[str, tuple[CommitInfo, str]] = {}
    for commit in (*sources.commits, *sources.answers):
        for cited, result in _answers(commit):
            answered.setdefault(cited, (commit, result))
    entries: dict[str, CommandEntry] = {}
    for state in documents:
        for record in state.commands:
            key = record.commit or f"{record.command}@{record.time}"
            if key in entries:
                continue
            person = asked.get(record.commit)
            answer = answered.get(record.commit)
            entries[key] = CommandEntry(
                command=record.command,
                commit=record.commit,
                author=record.author,
                requested_at=None if person is None else _iso(person.time),
                status=record.result,
                why=record.why,
                reason=record.reason,
                forced=record.forced,
                signer=record.signer,
                answered_at=_iso(record.time),
                answered_in=None if answer is None else answer[0].id,
            )
    for commit in asked.values():
        if commit.id in entries:
            continue
        answer = answered.get(commit.id)
        entries[commit.id] = CommandEntry(
            command=commit.trailer(records.COMMAND) or "",
            commit=commit.id,
            author=commit.author,
            requested_at=_iso(commit.time),
            status=PENDING if answer is None else answer[1] or "answered",
            why="" if answer is None else answer[0].subject,
            reason=commit.trailer(records.REASON) or "",
            forced=False,
            signer=None,
            answered_at=None if answer is None else _iso(answer[0].time),
            answered_in=None if answer is None else answer[0].id,
        )
    return tuple(sorted(entries.values(), key=lambda e: e.requested_at or e.answered_at or ""))


def _answers(commit: CommitInfo) -> list[tuple[str, str]]:
    """(person's commit, result) for each command ``commit`` answers, from its trailers."""
    found = []
    result = ""
    for key, value in commit.trailers:
        lowered = key.lower()
        if lowered == records.COMMAND.lower():
            result = ""
        elif lowered == records.COMMAND_RESULT.lower():
            result = value
        elif lowered == records.COMMAND_COMMIT.lower():
            found.append((value, result))
    return found


def _mapping(text: str | None) -> dict[str, str]:
    try:
        return decode_mapping(text or "")
    except ValueError:
        return {}  # a hand-made commit's malformed trailer: shown as no weights


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
