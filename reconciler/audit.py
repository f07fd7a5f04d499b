"""What the audit commands read from Git alone: an experiment's history, a dry-run recovery.

``history`` walks the state branch and returns one row per recorded transition of an
experiment (time, commit, phase, iteration, weights, verdicts, metric values), read from
the commits' trailers and the state document each commit wrote. ``recovery_plan`` says
what a fresh process would do first: the weights it would re-apply and the outcomes it
would confirm (already on main) or push. Both read only the Env repo; nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.controller import records
from reconciler.controller.outcomes import find_outcome
from reconciler.engine import experiment
from reconciler.engine.state import DUE, ExperimentState, from_json
from reconciler.gitstore.state_branch import LIVE_DIR, archive_path, live_path
from reconciler.gitstore.trailers import decode_mapping
from reconciler.ports import CommitInfo, EnvStore


@dataclass(frozen=True)
class Row:
    """One recorded transition."""

    time: str
    commit: str
    phase: str
    iteration: int
    weights: dict[str, int]
    verdicts: dict[str, str]
    metrics: dict[str, dict[str, float | None]]
    summary: str
    skipped: int | None = None
    """The iteration this transition did not judge: the cluster did not carry ``weights``."""
    observed: dict[str, int] | None = None
    """What the cluster carried instead (on a skip or a hold)."""
    held: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "time": self.time,
            "commit": self.commit,
            "phase": self.phase,
            "iteration": self.iteration,
            "weights": self.weights,
            "verdicts": self.verdicts,
            "metrics": self.metrics,
            "summary": self.summary,
            "skipped": self.skipped,
            "observed": self.observed,
            "held": self.held,
        }


def history(store: EnvStore, tip: str, key: str) -> list[Row]:
    """Every recorded transition of the experiment ``namespace/name``, oldest first.

    ``key`` may also be a full id (``namespace/name@abc123``) to select one run.
    """
    name_key, _, run = key.partition("@")
    namespace, _, name = name_key.partition("/")
    rows = []
    for commit in store.log(tip):
        if commit.trailer(records.EXPERIMENT) != name_key:
            continue
        run_id = commit.trailer(records.ID) or ""
        if run and not run_id.endswith(f"@{run}"):
            continue
        state = _state_at(store, commit.id, namespace, name, run_id.partition("@")[2])
        asked = commit.trailer(records.COMMAND)
        if asked is not None and commit.trailer(records.PHASE) is None:
            # a person's command (reconciler pause ...): it records no transition itself
            rows.append(_asked(commit, asked, state.iteration if state else 0))
            continue
        record = state.history[-1] if state and state.history else None
        current = record is not None and record.iteration == state.iteration if state else False
        rows.append(
            Row(
                time=datetime.fromtimestamp(commit.time, UTC).isoformat(),
                commit=commit.id,
                phase=commit.trailer(records.PHASE) or "",
                iteration=int(commit.trailer(records.ITERATION) or 0),
                weights={
                    k: int(v)
                    for k, v in decode_mapping(commit.trailer(records.WEIGHTS) or "").items()
                },
                verdicts=decode_mapping(commit.trailer(records.VERDICT) or ""),
                metrics=_metrics(record.metrics) if record is not None and current else {},
                summary=commit.subject,
                skipped=_int(commit.trailer(records.SKIPPED)),
                observed=_weights(commit.trailer(records.OBSERVED)),
                held=commit.trailer(records.HELD) is not None,
            )
        )
    rows.reverse()
    return rows


def _asked(commit: CommitInfo, verb: str, iteration: int) -> Row:
    """The row of a person's command commit: what was asked, by whom (the subject says)."""
    return Row(
        time=datetime.fromtimestamp(commit.time, UTC).isoformat(),
        commit=commit.id,
        phase=f"asked: {verb}",
        iteration=iteration,
        weights={},
        verdicts={},
        metrics={},
        summary=commit.subject,
        skipped=None,
        observed=None,
        held=False,
    )


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _weights(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    return {k: int(v) for k, v in decode_mapping(text).items() if v.isdigit()}


def _state_at(
    store: EnvStore, commit: str, namespace: str, name: str, suffix: str
) -> ExperimentState | None:
    for path in (live_path(namespace, name), archive_path(namespace, name, suffix or "x")):
        raw = store.read_file(commit, path)
        if raw is not None:
            try:
                return from_json(raw)
            except (ValueError, KeyError, TypeError):
                return None
    return None


def _metrics(
    values: tuple[tuple[str, str, float | None], ...],
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for version, metric, value in values:
        out.setdefault(version, {})[metric] = value
    return out


@dataclass(frozen=True)
class Step:
    """One thing a fresh process would do for one experiment."""

    experiment: str
    action: str
    """``set-weights``, ``confirm-outcome`` (already on main), ``push-outcome``, and for a
    blue/green promotion ``await-baseline`` (the winner serves until the baseline runs its
    version) or ``push-cleanup`` (the kept manifests, unless main has the cleanup)."""
    detail: dict[str, Any]


def recovery_plan(store: EnvStore, main: str | None, state_tip: str | None) -> list[Step]:
    """What a fresh process would re-apply and which outcomes it would confirm or redo."""
    steps: list[Step] = []
    if state_tip is None:
        return steps
    for path, _blob in sorted(store.list_files(state_tip, LIVE_DIR)):
        state = from_json(store.read_file(state_tip, path) or b"")
        if state.weights:
            refs = {
                v.name: f"{v.weight_obj_ref.kind}/{v.weight_obj_ref.name} "
                f"{v.weight_obj_ref.field_path}"
                for v in state.spec.versions
                if v.weight_obj_ref is not None
            }
            steps.append(
                Step(state.id, "set-weights", {"weights": dict(state.weights), "targets": refs})
            )
        if state.cleanup == DUE:
            steps.append(_cleanup_step(state))
        if not state.phase.deciding:
            continue
        outcome = experiment.outcome_of(state)
        found = find_outcome(store, main, state) if main else None
        if found is not None:
            steps.append(Step(state.id, "confirm-outcome", {"outcome": outcome, "commit": found}))
        else:
            steps.append(
                Step(state.id, "push-outcome", {"outcome": outcome, "winner": state.winner})
            )
    return steps


def _cleanup_step(state: ExperimentState) -> Step:
    """A blue/green promotion's next step: wait for the baseline, or push the cleanup."""
    if experiment.holds_traffic(state):
        readiness = [f"{ref.kind}/{ref.name}" for ref in state.spec.readiness.objects]
        return Step(state.id, "await-baseline", {"winner": state.winner, "readiness": readiness})
    return Step(state.id, "push-cleanup", {"paths": list(state.spec.blue_green_cleanup)})
