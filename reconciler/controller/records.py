"""What the controller writes to Git: state commits and outcome commits, with trailers.

Pure builders: a transition becomes a ``CommitSpec`` for the state branch (the state
document under ``experiments/``, or moved to ``archive/`` when the experiment is over), an
outcome becomes the promotion or rollback ``CommitSpec`` for main. The trailers are the
ones DESIGN.md 4.3 lists, so plain ``git log --format='%(trailers:...)'`` can query them.
A state commit's document is rendered when the store reads it, not when the commit is
planned: a tick plans every transition before it writes any, and 10,000 documents held
at once (7 KB each, on top of the blobs written from them) were a fifth of its memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence

from reconciler.controller.changes import change_lines
from reconciler.controller.evidence_text import evidence_lines
from reconciler.controller.isolation import Faults
from reconciler.engine.control import IGNORED, Command, CommandRecord
from reconciler.engine.experiment import PROMOTED, Transition, outcome_of
from reconciler.engine.state import ExperimentState, to_json
from reconciler.gitstore.state_branch import archive_path, live_path
from reconciler.gitstore.trailers import encode_mapping, format_message
from reconciler.ports import CommitSpec

EXPERIMENT = "Rollout-Experiment"
ID = "Rollout-Id"
PHASE = "Rollout-Phase"
ITERATION = "Rollout-Iteration"
WEIGHTS = "Rollout-Weights"
VERDICT = "Rollout-Verdict"
WINNER = "Rollout-Winner"
OUTCOME = "Rollout-Outcome"
STATE = "Rollout-State"
CANDIDATE_COMMIT = "Rollout-Candidate-Commit"
"""On an outcome commit: the main commit its experiment was found in (the one that brought
the candidate, or a later one when no reconciler was running then)."""
OUTCOME_COMMIT = "Rollout-Outcome-Commit"
SKIPPED = "Rollout-Skipped"
"""The iteration a state commit says was not judged (the cluster did not carry the record)."""
OBSERVED = "Rollout-Observed"
"""The weights the cluster carried instead, on a commit that records a skip or a hold."""
HELD = "Rollout-Held"
CLEANUP = "Rollout-Cleanup"
"""On a blue/green promotion's cleanup commit on main: the outcome commit it follows."""
COMMAND = "Rollout-Command"
"""On a person's command commit, and on the state commit that answers it: the verb."""
COMMAND_COMMIT = "Rollout-Command-Commit"
"""On the answering state commit: the person's commit it answers."""
COMMAND_RESULT = "Rollout-Command-Result"
"""``done``, ``refused`` or ``ignored``."""
REASON = "Rollout-Reason"
"""On a command commit: the reason its author gave."""


def state_commits(
    transitions: Sequence[Transition], faults: Faults, stage: str
) -> tuple[list[Transition], list[CommitSpec]]:
    """Each transition with its state commit; one whose encoding raised is left out.

    Its fault is recorded at that experiment's boundary (``stage``), the others go on.
    """
    encoded: list[Transition] = []
    commits: list[CommitSpec] = []
    for transition in transitions:
        with faults.boundary(transition.state.key, stage):
            commits.append(state_commit(transition))
            encoded.append(transition)
    return encoded, commits


def state_commit(transition: Transition) -> CommitSpec:
    """The state-branch commit that records one transition."""
    state = transition.state
    trailers = [
        (EXPERIMENT, state.key),
        (ID, state.id),
        (PHASE, state.phase.value),
        (ITERATION, str(state.iteration)),
    ]
    if state.weights:
        trailers.append((WEIGHTS, encode_mapping(dict(state.weights))))
    last = state.history[-1] if state.history else None
    # The verdict of the iteration this run last judged: not on a commit that restarted the
    # interval (a skip, a resume) or holds the run, which judged nothing.
    judged = last is not None and last.time == state.last_iteration_at and state.held is None
    body = state.reason
    if last is not None and judged and last.iteration == state.iteration and state.iteration > 0:
        trailers.append((VERDICT, encode_mapping(dict(last.verdicts))))
        evidence = state.evidence
        if evidence is not None and evidence.iteration == state.iteration:
            text = "\n".join(evidence_lines(evidence, state.spec.criteria.objectives))
            body = f"{body}\n\n{text}" if body else text
    if state.winner:
        trailers.append((WINNER, state.winner))
    if state.outcome_commit:
        trailers.append((OUTCOME_COMMIT, state.outcome_commit))
    skip = state.skipped[-1] if state.skipped else None
    if skip is not None and skip.time == state.updated_at:
        trailers.append((SKIPPED, str(skip.iteration)))
        if skip.seen:
            trailers.append((OBSERVED, encode_mapping(dict(skip.seen))))
    if state.held is not None:
        trailers.append((HELD, "yes"))
    answers, lines = _answers(transition)
    trailers += answers
    if lines:
        body = f"{lines}\n\n{body}" if body else lines
    removed = tuple(c.path for c in transition.commands)
    return CommitSpec(
        format_message(transition.summary, trailers, body=body), _Document(state, removed)
    )


def _answers(transition: Transition) -> tuple[list[tuple[str, str]], str]:
    """The trailers and body lines of the commands a transition answers."""
    state = transition.state
    answered = state.commands[-len(transition.commands) :] if transition.commands else ()
    trailers: list[tuple[str, str]] = []
    for record in answered:
        trailers += [(COMMAND, record.command), (COMMAND_RESULT, record.result)]
        if record.commit:
            trailers.append((COMMAND_COMMIT, record.commit))
    return trailers, "\n".join(_answer_line(r) for r in answered)


def _answer_line(record: CommandRecord) -> str:
    """One answered command, for a state commit's body."""
    by = f"{record.command} by {record.author or 'unknown'}"
    commit = f" ({record.commit[:12]})" if record.commit else ""
    said = f', reason "{record.reason}"' if record.reason else ""
    forced = ", forced" if record.forced else ""
    return f"{by}{commit}{said}{forced}: {record.result}, {record.why}"


def ignored_commit(ignored: Sequence[tuple[Command, str]]) -> CommitSpec:
    """The state commit that records commands no run answers, and removes their files."""
    first = ignored[0][0]
    what = f"{first.verb or 'command'} for {first.experiment or first.path}"
    more = f" and {len(ignored) - 1} more" if len(ignored) > 1 else ""
    subject = f"commands: ignored {what}{more}"
    trailers: list[tuple[str, str]] = []
    lines = []
    for command, why in ignored:
        if command.experiment:
            trailers.append((EXPERIMENT, command.experiment))
        trailers += [(COMMAND, command.verb or "malformed"), (COMMAND_RESULT, IGNORED)]
        if command.commit:
            trailers.append((COMMAND_COMMIT, command.commit))
        by = command.author or "unknown"
        lines.append(f"{command.path} by {by}: ignored, {why}")
    changes: dict[str, bytes | None] = {command.path: None for command, _ in ignored}
    return CommitSpec(format_message(subject, trailers, body="\n".join(lines)), changes)


def live_blob(changes: Mapping[str, bytes | None]) -> str | None:
    """The Git blob id of the live state document a state commit wrote, once it was read.

    None for a commit that archives its experiment, or whose document was not rendered.
    The loop keeps what it recorded under this id, so the next tick need not parse it.
    """
    return changes.live_blob if isinstance(changes, _Document) else None


class _Document(Mapping[str, bytes | None]):
    """The file changes of a state commit; the document is rendered on each read of it."""

    __slots__ = ("_archived", "_live", "_removed", "_state", "live_blob")

    def __init__(self, state: ExperimentState, removed: tuple[str, ...] = ()) -> None:
        self._state = state
        self._removed = removed
        """Answered commands' files."""
        self.live_blob: str | None = None
        self._live = live_path(state.spec.namespace, state.spec.name)
        self._archived = (
            archive_path(state.spec.namespace, state.spec.name, state.spec_blob[:12])
            if state.archived
            else None
        )

    def __getitem__(self, path: str) -> bytes | None:
        if path == self._live:
            if self._archived is not None:
                return None
            data = to_json(self._state)
            header = b"blob %d\0" % len(data)
            self.live_blob = hashlib.sha1(header + data, usedforsecurity=False).hexdigest()
            return data
        if path == self._archived:
            return to_json(self._state)
        if path in self._removed:
            return None
        raise KeyError(path)

    def __iter__(self) -> Iterator[str]:
        yield self._live
        if self._archived is not None:
            yield self._archived
        yield from self._removed

    def __len__(self) -> int:
        return (1 if self._archived is None else 2) + len(self._removed)


def outcome_commit(
    state: ExperimentState,
    changes: Mapping[str, bytes | None],
    state_commit_id: str | None,
    before: Mapping[str, bytes | None] | None = None,
) -> CommitSpec:
    """The one commit on main that promotes the winner or rolls the candidate back.

    Its body says what changed, old -> new (``before``: the files as main had them), and
    its trailers link the main commit the experiment was found in and the deciding state
    commit.
    """
    outcome = outcome_of(state)
    short = state.spec.target.rsplit("/", 1)[-1]
    candidates = ", ".join(c.name for c in state.spec.candidates) or state.spec.baseline.name
    if outcome == PROMOTED:
        subject = f"{short}: promote {state.winner} ({state.spec.key})"
    elif state.winner:
        subject = f"{short}: keep {state.winner}, remove {candidates} ({state.spec.key})"
    else:
        subject = f"{short}: roll back {candidates} ({state.spec.key})"
    trailers = [(ID, state.id), (EXPERIMENT, state.key), (OUTCOME, outcome)]
    if state.winner:
        trailers.append((WINNER, state.winner))
    if state.source_commit:
        trailers.append((CANDIDATE_COMMIT, state.source_commit))
    if state_commit_id:
        trailers.append((STATE, state_commit_id))
    body = state.reason
    changed = change_lines(before or {}, changes)
    if changed:
        body = "\n\n".join(part for part in (body, "\n".join(changed)) if part)
    return CommitSpec(format_message(subject, trailers, body=body), dict(changes))


def cleanup_commit(state: ExperimentState, changes: Mapping[str, bytes | None]) -> CommitSpec:
    """The one commit on main that removes a blue/green winner's former manifests."""
    short = state.spec.target.rsplit("/", 1)[-1]
    subject = f"{short}: clean up after promoting {state.winner} ({state.spec.key})"
    body = (
        "The baseline runs the promoted version and serves again: the files the promotion "
        "kept while the winner served are removed."
    )
    outcome = state.outcome_commit or "unknown"
    trailers = [(ID, state.id), (EXPERIMENT, state.key), (CLEANUP, outcome)]
    return CommitSpec(format_message(subject, trailers, body=body), dict(changes))
