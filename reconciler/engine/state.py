"""An experiment's state as the state branch records it, and its JSON form.

One ``ExperimentState`` is one state document (``experiments/<ns>/<name>.json``). JSON,
pretty-printed with sorted keys, one field per line, so ``git diff`` reads well and 1,000
of them parse in milliseconds (DESIGN.md 4.3 gives the measurements). The document carries
the normalised spec, so recovery never re-reads the experiment's YAML. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from reconciler.engine import control
from reconciler.engine.control import CommandRecord, Gate
from reconciler.engine.evidence import Evidence
from reconciler.engine.evidence import from_data as evidence_from_data
from reconciler.engine.evidence import to_data as evidence_to_data
from reconciler.spec import codec
from reconciler.spec.model import Experiment

SCHEMA = 1
HISTORY_LIMIT = 20
"""Iterations kept in the live document; the full record is the branch's history."""
DUE = "due"
"""``ExperimentState.cleanup`` while the cleanup commit is still to be pushed."""


class Phase(StrEnum):
    """Where an experiment stands."""

    PROGRESSING = "Progressing"
    AWAITING_APPROVAL = "AwaitingApproval"
    """Waits at an approval gate (``spec.approval``): weights hold, nothing is judged."""
    PROMOTING = "Promoting"
    """A winner is recorded; the promotion commit on main may not exist yet."""
    ROLLING_BACK = "RollingBack"
    """No winner is recorded; the rollback commit on main may not exist yet."""
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    PREEMPTED = "Preempted"
    """A newer experiment for the same target took over; never promoted."""
    WITHDRAWN = "Withdrawn"
    """The experiment file left main while the experiment ran; never promoted."""

    @property
    def final(self) -> bool:
        """Whether the experiment is over (its document goes to ``archive/``)."""
        return self in _FINAL

    @property
    def deciding(self) -> bool:
        """Whether an outcome commit on main is recorded as due."""
        return self in {Phase.PROMOTING, Phase.ROLLING_BACK}


_FINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.PREEMPTED, Phase.WITHDRAWN})

Pairs = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """What one iteration observed and decided."""

    iteration: int
    time: float
    weights: Pairs
    """Weights the versions carried while they were observed."""
    verdicts: tuple[tuple[str, str], ...]
    """Version name to ``pass``, ``fail`` or ``no-data``."""
    metrics: tuple[tuple[str, str, float | None], ...]
    """(version, metric, value or None for no data)."""
    chances: tuple[tuple[str, float], ...] = ()
    """Candidate to the probability that it beats the baseline on the first reward."""


@dataclass(frozen=True, slots=True)
class SkipRecord:
    """An iteration that was not judged when it was due, and why."""

    iteration: int
    """The iteration that waits (a full interval, from ``time``)."""
    time: float
    seen: Pairs
    """The weights the cluster carried instead of the recorded ones."""
    reason: str


SKIPPED_LIMIT = 20
"""Skipped iterations kept in the live document; every one is also a commit of its own."""


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """The whole recorded state of one experiment."""

    spec: Experiment
    spec_blob: str
    """Blob id of the experiment file on main: with the key it names this run."""
    source_commit: str
    """The main commit the experiment was found in."""
    phase: Phase
    iteration: int
    weights: Pairs
    """Weights the cluster carries (or is about to): write-ahead of every change."""
    started_at: float
    updated_at: float
    last_iteration_at: float
    failures: int = 0
    """Consecutive failed iterations."""
    no_data: int = 0
    """Consecutive iterations without enough data."""
    history: tuple[IterationRecord, ...] = ()
    winner: str | None = None
    reason: str = ""
    decided_on: str | None = None
    """Main's tip when the outcome was decided: the search for it on main stops there."""
    outcome_commit: str | None = None
    preempted_by: str | None = None
    sync: str | None = None
    """After an outcome: ``waiting`` for the GitOps operator to apply it, then ``synced`` or
    ``timeout``; None when no operator is configured."""
    applied: bool = True
    """Whether the cluster was seen carrying ``weights`` (read back, or set without error)
    when this document was written; False while they are recorded but not yet confirmed
    (write-ahead: a document that changes the weights is pushed before they are set). A
    finished document stays live until its final weights are confirmed."""
    applied_at: float | None = None
    """When ``weights`` were confirmed on the cluster (None: not yet, or no weights)."""
    corrections: int = 0
    """Times in a row the cluster was found carrying other weights since the last judged
    iteration (someone else writes them: a sync, a person, a second controller)."""
    held: str | None = None
    """Why the experiment is held (another writer keeps setting its weights: which object,
    which field, who, and the fix); None when it is not."""
    skipped: tuple[SkipRecord, ...] = ()
    """Iterations that were not judged because the cluster did not carry the recorded
    weights (the last ``SKIPPED_LIMIT``)."""
    evidence: Evidence | None = None
    """What the last judged iteration's verdicts rest on (counts, bounds, probabilities);
    each state commit carries its own, so the branch holds every iteration's."""
    cleanup: str | None = None
    """A blue/green promotion's cleanup commit on main (it removes the candidate's
    manifests once the baseline runs the winner and serves again): ``due`` until it is
    pushed, then its id (``done``: nothing was left to remove); None: no cleanup."""
    paused: CommandRecord | None = None
    """The ``reconciler pause`` that froze it (weights hold, no iteration) until a resume."""
    gate: Gate | None = None
    """The approval it waits for (phase ``AwaitingApproval``)."""
    commands: tuple[CommandRecord, ...] = ()
    """The commands answered for this run (the last ``COMMANDS_LIMIT``), oldest first."""

    @property
    def archived(self) -> bool:
        """Whether the document belongs under ``archive/`` (over, and nothing to wait for)."""
        return self.phase.final and self.sync != "waiting" and self.applied and self.cleanup != DUE

    @property
    def settling(self) -> bool:
        """Finished; its final weights are still to be set, or its cleanup to be pushed."""
        return (
            self.phase.final
            and self.sync != "waiting"
            and (not self.applied or self.cleanup == DUE)
        )

    @property
    def id(self) -> str:
        """``namespace/name@<12 hex of the spec blob>``, the ``Rollout-Id`` trailer."""
        return experiment_id(self.spec, self.spec_blob)

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return self.spec.key

    def weight_of(self, version: str) -> int:
        """The recorded weight of one version (0 when absent)."""
        return dict(self.weights).get(version, 0)


def experiment_id(spec: Experiment, spec_blob: str) -> str:
    """The id of a run: the experiment's key plus the first 12 hex of its file's blob."""
    return f"{spec.key}@{spec_blob[:12]}"


def to_json(state: ExperimentState) -> bytes:
    """The state document's bytes: sorted keys, two-space indent, trailing newline.

    The iteration records and the spec are the same from one document of an experiment
    to the next (an iteration adds one record): each is rendered once and its text reused.
    """
    try:
        history = [_Raw(_record_text(r)) for r in state.history]
        out: list[str] = []
        _render(_document(state, history, _Raw(_spec_text(state.spec))), out, "\n")
        text = "".join(out)
    except _NotPlain:
        plain = _document(
            state, [_record_data(r) for r in state.history], codec.to_data(state.spec)
        )
        text = json.dumps(plain, indent=2, sort_keys=True)
    return (text + "\n").encode()


def _document(state: ExperimentState, history: list[Any], spec: Any) -> dict[str, Any]:  # noqa: ANN401 - rendered or plain
    return {
        "schema": SCHEMA,
        "id": state.id,
        "experiment": state.key,
        "target": state.spec.target,
        "specBlob": state.spec_blob,
        "sourceCommit": state.source_commit,
        "phase": state.phase.value,
        "iteration": state.iteration,
        "iterations": state.spec.duration.iterations,
        "weights": dict(state.weights),
        "versionOrder": [name for name, _ in state.weights],
        "failures": state.failures,
        "noData": state.no_data,
        "winner": state.winner,
        "reason": state.reason,
        "decidedOn": state.decided_on,
        "outcomeCommit": state.outcome_commit,
        "preemptedBy": state.preempted_by,
        "sync": state.sync,
        "applied": state.applied,
        "appliedAt": None if state.applied_at is None else _iso(state.applied_at),
        "corrections": state.corrections,
        "held": state.held,
        "skipped": [_skip_data(r) for r in state.skipped],
        "evidence": None if state.evidence is None else evidence_to_data(state.evidence),
        "cleanup": state.cleanup,
        "paused": None if state.paused is None else control.record_data(state.paused, _iso),
        "gate": None if state.gate is None else control.gate_data(state.gate, _iso),
        "commands": [control.record_data(c, _iso) for c in state.commands],
        "startedAt": _iso(state.started_at),
        "updatedAt": _iso(state.updated_at),
        "lastIterationAt": _iso(state.last_iteration_at),
        "history": history,
        "spec": spec,
    }


def _record_data(r: IterationRecord) -> dict[str, Any]:
    return {
        "iteration": r.iteration,
        "time": _iso(r.time),
        "weights": dict(r.weights),
        "verdicts": dict(r.verdicts),
        "metrics": _nest(r.metrics),
        "chances": dict(r.chances),
    }


def _skip_data(r: SkipRecord) -> dict[str, Any]:
    return {
        "iteration": r.iteration,
        "time": _iso(r.time),
        "seen": dict(r.seen),
        "reason": r.reason,
    }


class _Raw(str):
    """JSON text already rendered at the indentation where it goes."""

    __slots__ = ()


_HISTORY_ITEM = "\n    "
"""Where an iteration record sits: an item of the top-level ``history`` list."""
_TOP_VALUE = "\n  "
"""Where the spec sits: the value of a top-level key."""


@functools.lru_cache(maxsize=32_768)
def _record_text(record: IterationRecord) -> str:
    """An iteration record rendered as an item of ``history`` (records never change)."""
    out: list[str] = []
    _render(_record_data(record), out, _HISTORY_ITEM)
    return "".join(out)


_SPECS_KEPT = 16_384
_spec_texts: dict[int, tuple[Experiment, str]] = {}


def _spec_text(spec: Experiment) -> str:
    """The spec rendered as the value of ``spec``; kept while the same spec object lives.

    Keyed by identity (a spec holds mappings, so it has no hash), with the object kept
    beside its text so that an id reused by another object is never mistaken for it.
    """
    cached = _spec_texts.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    out: list[str] = []
    _render(codec.to_data(spec), out, _TOP_VALUE)
    text = "".join(out)
    if len(_spec_texts) >= _SPECS_KEPT:
        _spec_texts.pop(next(iter(_spec_texts)))
    _spec_texts[id(spec)] = (spec, text)
    return text


def as_recorded(state: ExperimentState) -> ExperimentState:
    """``state`` as its document reads back: ``from_json(to_json(state))``, without parsing.

    Documents keep times to the millisecond; everything else reads back as it was.
    """

    def time(epoch: float) -> float:
        return _epoch(_iso(epoch))

    history = tuple(
        record if time(record.time) == record.time else replace(record, time=time(record.time))
        for record in state.history
    )
    return replace(
        state,
        started_at=time(state.started_at),
        updated_at=time(state.updated_at),
        last_iteration_at=time(state.last_iteration_at),
        history=history,
        applied_at=None if state.applied_at is None else time(state.applied_at),
        skipped=tuple(replace(r, time=time(r.time)) for r in state.skipped),
        paused=None
        if state.paused is None
        else replace(state.paused, time=time(state.paused.time)),
        gate=None
        if state.gate is None
        else replace(state.gate, opened_at=time(state.gate.opened_at)),
        commands=tuple(replace(c, time=time(c.time)) for c in state.commands),
    )


def from_json(raw: bytes) -> ExperimentState:
    """Parse a state document written by ``to_json``.

    Raises:
        ValueError: when the bytes are not a state document of a schema we know.
    """
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"not a state document of schema {SCHEMA}")
    order = data["versionOrder"]
    weights = data["weights"]
    spec = codec.from_data(data["spec"])
    names = [v.name for v in spec.versions]
    return ExperimentState(
        spec=spec,
        spec_blob=data["specBlob"],
        source_commit=data["sourceCommit"],
        phase=Phase(data["phase"]),
        iteration=data["iteration"],
        weights=tuple([(sys.intern(name), int(weights[name])) for name in order]),
        started_at=_epoch(data["startedAt"]),
        updated_at=_epoch(data["updatedAt"]),
        last_iteration_at=_epoch(data["lastIterationAt"]),
        failures=data["failures"],
        no_data=data["noData"],
        history=tuple([_record(r) for r in data["history"]]),
        winner=data["winner"],
        reason=data["reason"],
        decided_on=data["decidedOn"],
        outcome_commit=data["outcomeCommit"],
        preempted_by=data["preemptedBy"],
        sync=data["sync"],
        applied=data.get("applied", True),
        applied_at=_epoch(data["appliedAt"]) if data.get("appliedAt") else None,
        corrections=data.get("corrections", 0),
        held=data.get("held"),
        skipped=tuple(
            [
                SkipRecord(
                    iteration=r["iteration"],
                    time=_epoch(r["time"]),
                    seen=_in_order(r["seen"], names),
                    reason=r["reason"],
                )
                for r in data.get("skipped", ())
            ]
        ),
        evidence=(evidence_from_data(data["evidence"], names) if data.get("evidence") else None),
        cleanup=data.get("cleanup"),
        paused=control.record_from(data["paused"], _epoch) if data.get("paused") else None,
        gate=control.gate_from(data["gate"], _epoch) if data.get("gate") else None,
        commands=tuple(control.record_from(c, _epoch) for c in data.get("commands", ())),
    )


def _in_order(mapping: dict[str, Any], names: list[str]) -> Pairs:
    """``mapping``'s (version, weight) pairs in the spec's order (its JSON keys are sorted)."""
    rank = {name: index for index, name in enumerate(names)}
    ordered = sorted(mapping.items(), key=lambda item: rank.get(item[0], len(rank)))
    return tuple((sys.intern(n), int(w)) for n, w in ordered)


def _record(data: dict[str, Any]) -> IterationRecord:
    # Version and metric names and verdicts recur in every record of every document:
    # interned, a process holding 10,000 states keeps one copy of each.
    intern = sys.intern
    return IterationRecord(
        iteration=data["iteration"],
        time=_epoch(data["time"]),
        weights=tuple([(intern(n), int(w)) for n, w in data["weights"].items()]),
        verdicts=tuple([(intern(n), intern(v)) for n, v in data["verdicts"].items()]),
        metrics=tuple(
            [
                (intern(version), intern(metric), value)
                for version, values in data["metrics"].items()
                for metric, value in values.items()
            ]
        ),
        chances=tuple([(intern(n), c) for n, c in data["chances"].items()]),
    )


def _pretty(data: dict[str, Any]) -> str:
    """``json.dumps(data, indent=2, sort_keys=True)``, byte for byte, in a third of its time.

    With ``indent`` the standard library encodes in pure Python through nested
    generators; a tick of 1,000 transitions spent most of its record phase there. This
    renderer appends to one list instead, and lets the C string encoder do the strings.
    Data it was not written for (a key that is not a string, a value of another type) is
    handed to ``json.dumps`` whole.
    """
    out: list[str] = []
    try:
        _render(data, out, "\n")
    except _NotPlain:
        return json.dumps(data, indent=2, sort_keys=True)
    return "".join(out)


class _NotPlain(Exception):  # noqa: N818 - a private signal, not an error
    """The data holds something ``_render`` leaves to ``json.dumps``."""


_encode_string = json.encoder.encode_basestring_ascii


def _render(value: object, out: list[str], newline: str) -> None:
    """Append ``value`` at the indentation ``newline`` ends with; scalars are not recursed."""
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key in sorted(value):
            if not isinstance(key, str):
                raise _NotPlain
            item = value[key]
            head = separator + _encode_string(key) + ": "
            if isinstance(item, dict | list | tuple):
                out.append(head)
                _render(item, out, inner)
            else:
                out.append(head + _scalar(item))
            separator = "," + inner
        out.append(newline + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            if isinstance(item, dict | list | tuple):
                out.append(separator)
                _render(item, out, inner)
            else:
                out.append(separator + _scalar(item))
            separator = "," + inner
        out.append(newline + "]")
    else:
        out.append(_scalar(value))


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value if type(value) is _Raw else _encode_string(value)
    if isinstance(value, float):
        return _float(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    raise _NotPlain


def _float(value: float) -> str:
    """A float as ``json`` writes it (``allow_nan``: NaN and the infinities as names)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _nest(metrics: tuple[tuple[str, str, float | None], ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for version, metric, value in metrics:
        out.setdefault(version, {})[metric] = value
    return out


# Every document of a tick carries the tick's time, and most iterations of a fleet were
# taken at the same few ticks: converting each time once saves a tenth of load and record.
@functools.lru_cache(maxsize=4096)
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=4096)
def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
