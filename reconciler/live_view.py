"""What ``reconciler watch`` shows: experiment states and the time in, rows and lines out.

Pure: no clock, no Git, no terminal. The command reads states from the state branch and
passes ``now``; this module says per experiment its phase (and whether it is paused or
waits at an approval gate), iteration k/N, age and time to the next iteration, each
version's weights (recorded, and observed when the cluster was read), its metric values
against their limits with the verdict, the last reason, the last answered command and the
outcome commit; one greppable line per state commit for output that is not a terminal;
which run of a named experiment to follow; and the exit code its end maps to. It must
never read anything itself: what it shows is exactly what it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.engine.control import CommandRecord
from reconciler.engine.evidence import MetricEvidence
from reconciler.engine.state import ExperimentState, IterationRecord, Phase
from reconciler.spec.model import Objective

EXIT_PROMOTED = 0
"""The run ended promoted (a candidate won, or a Conformance run passed)."""
EXIT_ROLLED_BACK = 1
"""The run ended rolled back (no winner, or the baseline kept)."""
EXIT_UNREADABLE = 2
"""The Env repo could not be read (its URL, credentials or main branch)."""
EXIT_NOT_PROMOTED = 3
"""The run was preempted by a newer one, or its file left main: it was never promoted."""
EXIT_TIMEOUT = 4
"""``--timeout`` passed before the run ended."""
EXIT_STOPPED = 0
"""Watching every experiment: stopped by ``--timeout`` or Ctrl-C, as asked."""
EXIT_INTERRUPTED = 130
"""Ctrl-C while following one experiment: never 0, so ``watch && deploy-next`` stops."""

_EXIT_BY_PHASE = {
    Phase.PROMOTED: EXIT_PROMOTED,
    Phase.ROLLED_BACK: EXIT_ROLLED_BACK,
    Phase.PREEMPTED: EXIT_NOT_PROMOTED,
    Phase.WITHDRAWN: EXIT_NOT_PROMOTED,
}


@dataclass(frozen=True, slots=True)
class Observed:
    """What the cluster carries for one live experiment, read when the view was made."""

    status: str
    """``traffic``'s assessment: converged, drifted, or why it could not be read."""
    weights: Mapping[str, int]
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One metric of one version in the last judged iteration."""

    metric: str
    value: float | None
    """None: no data."""
    limit: str
    """``<= 0.01``, ``>= 0.9``, both joined by ``and``; empty when it is not an objective."""
    within: bool | None
    """Whether the value is within the objective's limits; None without a limit or a value."""
    method: str
    """How the evidence judged it (``clopper-pearson``, ``point``, ``no-data``); empty: no
    evidence for this iteration."""
    bound: float | None
    """For an exact judgement, the bound on the limit's side (it must be within the limit
    for the version to pass)."""
    n: int | None


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One version of an experiment: its traffic and how it was judged."""

    version: str
    baseline: bool
    weight: int
    """Recorded (0 when the state records none)."""
    observed: int | None
    """On the cluster; None when the cluster was not read or has no value."""
    verdict: str
    """``pass``, ``fail``, ``no-data``, or empty before the first judged iteration."""
    requests: int | None
    needs: int | None
    metrics: tuple[MetricRow, ...]


@dataclass(frozen=True, slots=True)
class ExperimentView:
    """Everything the live view shows about one run."""

    id: str
    key: str
    target: str
    phase: str
    paused: str | None
    """Who paused it, when and why; None when it is not paused."""
    gate: str | None
    """The approval it waits for, since when, and when that times out."""
    held: str | None
    iteration: int
    iterations: int
    age: float
    next_in: float | None
    """Seconds to the next iteration (0: due now); None while paused, waiting at a gate,
    deciding or finished."""
    judged: int | None
    """The iteration the verdicts and metric values are from; None: none judged yet."""
    versions: tuple[VersionRow, ...]
    reason: str
    command: str | None
    """The last answered command: what, who, when, its result."""
    command_commit: str | None
    """The commit of that command: a new one is a new command."""
    winner: str | None
    outcome_commit: str | None
    observed: str | None
    """The cluster's weights in words; None when the cluster was not read."""
    final: bool
    exit_code: int | None
    updated_at: float
    commit: str | None
    """The state commit that wrote this state, when known."""

    @property
    def headline(self) -> str:
        """The phase, with ``Paused`` when it is paused."""
        return f"{self.phase}, Paused" if self.paused else self.phase


def exit_code(state: ExperimentState) -> int | None:
    """The code ``watch NAMESPACE/NAME`` exits with once this run ended; None while it runs."""
    return _EXIT_BY_PHASE.get(state.phase)


def next_iteration_in(state: ExperimentState, now: float) -> float | None:
    """Seconds until the next iteration is due (never negative; 0: due now).

    None when no iteration is coming: paused, waiting at a gate, deciding or finished.
    """
    if state.phase is not Phase.PROGRESSING or state.paused is not None or state.gate:
        return None
    due = state.last_iteration_at + state.spec.duration.interval_seconds
    return max(0.0, due - now)


def view(
    state: ExperimentState,
    now: float,
    *,
    commit: str | None = None,
    observed: Observed | None = None,
) -> ExperimentView:
    """The view of one state at ``now`` (``observed``: the cluster's weights, when read)."""
    record = state.history[-1] if state.history else None
    return ExperimentView(
        id=printable(state.id),
        key=printable(state.key),
        target=printable(state.spec.target),
        phase=state.phase.value,
        paused=None if state.paused is None else printable(_pause_text(state.paused, now)),
        gate=_maybe(gate_text(state, now)),
        held=_maybe(state.held),
        iteration=state.iteration,
        iterations=state.spec.duration.iterations,
        age=max(0.0, (state.updated_at if state.phase.final else now) - state.started_at),
        next_in=next_iteration_in(state, now),
        judged=None if record is None else record.iteration,
        versions=_versions(state, record, observed),
        reason=printable(state.reason),
        command=printable(command_text(state.commands[-1], now)) if state.commands else None,
        command_commit=state.commands[-1].commit if state.commands else None,
        winner=_maybe(state.winner),
        outcome_commit=_maybe(state.outcome_commit),
        observed=None if observed is None else printable(_observed_text(observed)),
        final=state.phase.final,
        exit_code=exit_code(state),
        updated_at=state.updated_at,
        commit=commit,
    )


def gate_text(state: ExperimentState, now: float) -> str | None:
    """The approval gate in words; None when the experiment waits at none.

    ``before promotion of v2, since 2027-01-15T08:00:00Z (5m00s ago), times out in 23h55m
    (then rollback)``.
    """
    gate = state.gate
    if gate is None:
        return None
    what = f"before {gate.before}" + (f" of {gate.winner}" if gate.winner else "")
    since = f"since {iso(gate.opened_at)} ({duration(now - gate.opened_at)} ago)"
    approval = state.spec.approval
    left = gate.opened_at + approval.timeout_seconds - now
    then = approval.on_timeout.value
    if left > 0:
        return f"{what}, {since}, times out in {duration(left)} (then {then})"
    return f"{what}, {since}, timed out {duration(-left)} ago ({then} at the next tick)"


def command_text(record: CommandRecord, now: float) -> str:
    """``abort by Ann <ann@example.com> 2m05s ago: done (why)``."""
    forced = " --force" if record.forced else ""
    why = f" ({record.why})" if record.why else ""
    given = f', reason "{record.reason}"' if record.reason else ""
    return (
        f"{record.command}{forced} by {record.author} {duration(now - record.time)} ago"
        f"{given}: {record.result}{why}"
    )


def _pause_text(record: CommandRecord, now: float) -> str:
    given = f': "{record.reason}"' if record.reason else ""
    return f"by {record.author} {duration(now - record.time)} ago{given}"


def _versions(
    state: ExperimentState, record: IterationRecord | None, observed: Observed | None
) -> tuple[VersionRow, ...]:
    objectives = {o.metric: o for o in state.spec.criteria.objectives}
    evidence = state.evidence
    if evidence is not None and (record is None or evidence.iteration != record.iteration):
        evidence = None
    judged = {v.version: v for v in evidence.versions} if evidence is not None else {}
    verdicts = dict(record.verdicts) if record is not None else {}
    seen = dict(observed.weights) if observed is not None else {}
    rows = []
    for version in state.spec.versions:
        name = version.name
        found = judged.get(name)
        by_metric = {m.metric: m for m in found.metrics} if found is not None else {}
        values = [(m, v) for n, m, v in (record.metrics if record else ()) if n == name]
        metrics = tuple(
            _metric_row(metric, value, objectives.get(metric), by_metric.get(metric))
            for metric, value in values
        )
        rows.append(
            VersionRow(
                version=printable(name),
                baseline=name == state.spec.baseline.name,
                weight=state.weight_of(name),
                observed=seen.get(name),
                verdict=verdicts.get(name, ""),
                requests=found.requests if found is not None else None,
                needs=found.needs if found is not None else None,
                metrics=metrics,
            )
        )
    return tuple(rows)


def _metric_row(
    metric: str,
    value: float | None,
    objective: Objective | None,
    evidence: MetricEvidence | None,
) -> MetricRow:
    method = "" if evidence is None else evidence.method
    bound = None
    if evidence is not None and method == "clopper-pearson" and objective is not None:
        bound = evidence.high if objective.upper_limit is not None else evidence.low
    return MetricRow(
        metric=printable(metric),
        value=value,
        limit=limit_text(objective),
        within=None if value is None or objective is None else objective.holds(value),
        method=method,
        bound=bound,
        n=None if evidence is None else evidence.n,
    )


def limit_text(objective: Objective | None) -> str:
    """``<= 0.01``, ``>= 0.9``, or both; empty without an objective."""
    if objective is None:
        return ""
    limits = []
    if objective.upper_limit is not None:
        limits.append(f"<= {number(objective.upper_limit)}")
    if objective.lower_limit is not None:
        limits.append(f">= {number(objective.lower_limit)}")
    return " and ".join(limits)


def _observed_text(observed: Observed) -> str:
    if observed.status == "converged":
        return "as recorded"
    if observed.weights and observed.status == "drifted":
        text = "drifted: " + pairs(observed.weights)
    else:
        text = observed.status
    return f"{text} ({observed.detail})" if observed.detail else text


# -- plain lines ---------------------------------------------------------------------------


def line(current: ExperimentView, previous: ExperimentView | None = None) -> str:
    """One greppable line for a state commit: ``key=value`` fields, the reason last.

    ``previous`` is the view of the run's commit before (None: the first line about it): a
    command is shown on the line of the commit that answered it, not on every later one.
    Verdicts and metric values are shown on the line of the commit that judged them.
    """
    fields = [
        iso(current.updated_at),
        current.id,
        current.phase,
        f"iteration={current.iteration}/{current.iterations}",
        *_traffic_fields(current),
    ]
    if current.judged is not None and (previous is None or previous.judged != current.judged):
        fields.extend(_judged_fields(current))
    new_command = previous is None or previous.command_commit != current.command_commit
    optional = (
        ("paused", current.paused and _token(current.paused)),
        ("gate", current.gate and _token(current.gate)),
        ("held", current.held and "yes"),
        ("command", current.command and new_command and _token(current.command)),
        ("winner", current.winner),
        ("outcome", current.outcome_commit and current.outcome_commit[:12]),
        ("state", current.commit and current.commit[:12]),
    )
    fields.extend(f"{name}={value}" for name, value in optional if value)
    text = " ".join(fields) + (f" -- {current.reason}" if current.reason else "")
    # Names and reasons come from the repo: no control character reaches a log.
    return _one_line(text)


def _traffic_fields(current: ExperimentView) -> list[str]:
    fields = []
    if any(v.weight for v in current.versions):
        fields.append("weights=" + ",".join(f"{v.version}={v.weight}" for v in current.versions))
    if current.observed is not None and current.observed != "as recorded":
        fields.append("observed=" + _token(current.observed))
    return fields


def _judged_fields(current: ExperimentView) -> list[str]:
    if not any(v.verdict for v in current.versions):
        return []
    verdicts = ",".join(f"{v.version}={v.verdict}" for v in current.versions if v.verdict)
    fields = [f"verdicts={verdicts}"]
    measured = [_metric_token(v.version, m) for v in current.versions for m in v.metrics]
    if measured:
        fields.append("metrics=" + ",".join(measured))
    return fields


def _metric_token(version: str, row: MetricRow) -> str:
    short = row.metric.rsplit("/", 1)[-1]
    value = "none" if row.value is None else number(row.value)
    limit = f"({row.limit.replace(' ', '')})" if row.limit else ""
    mark = "!" if row.within is False else ""
    return f"{version}:{short}={value}{mark}{limit}"


def _token(text: str) -> str:
    """Free text as one field: quoted, on one line."""
    return '"' + _one_line(text).replace('"', "'") + '"'


def _one_line(text: str) -> str:
    """Text without line breaks or control characters (no ANSI escape reaches a log)."""
    return " ".join(printable(text).split())


def printable(text: str) -> str:
    """``text`` with every control character (escape, line break) a space.

    Everything shown comes from the Env repo: an escape sequence in a reason or a name must
    not reach the terminal, the live view's included.
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


def _maybe(text: str | None) -> str | None:
    return None if text is None else printable(text)


# -- which run to follow -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pick:
    """What ``watch NAMESPACE/NAME`` follows now."""

    state: ExperimentState | None
    """The run's latest recorded state; None while it has not started."""
    run: str | None
    """The run's id (``namespace/name@<12 hex>``); None while no run is known at all."""
    waiting: str | None = None
    """Why there is nothing to show yet."""


def pick_run(
    key: str,
    run: str | None,
    *,
    on_main: Sequence[str],
    live: ExperimentState | None,
    archived: Sequence[ExperimentState],
) -> Pick:
    """Which run of the experiment ``key`` to follow.

    ``run``: the 12-hex suffix of a run given (or its start) or already followed (it stays
    followed);
    ``on_main``: blob ids of the files on main that define ``key`` (a run the reconciler
    may not have started yet); ``live``: its live document; ``archived``: its archived
    runs. Without a ``run``, the one main names wins (CI just pushed it: an older run of
    the same experiment, still live or archived, is not what it waits for), then the live
    one, then the latest archived one (already over).
    """
    if run is None and on_main:
        run = on_main[0][:12]
    if run is not None:
        wanted = f"{key}@{run}"
        if live is not None and live.id.startswith(wanted):
            return Pick(live, live.id)
        for state in archived:
            if state.id.startswith(wanted):
                return Pick(state, state.id)
        return Pick(None, wanted, f"{wanted} has not started yet")
    if live is not None:
        return Pick(live, live.id)
    if archived:
        latest = max(archived, key=lambda s: s.updated_at)
        return Pick(latest, latest.id)
    return Pick(None, None, f"{key} is neither live, nor on main, nor archived yet")


# -- formatting ----------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2d04h``: the two largest units (never negative)."""
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def iso(epoch: float) -> str:
    """``2027-01-15T08:00:05Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def number(value: float) -> str:
    """Four significant digits, as the state commits' evidence lines write them."""
    return f"{value:.4g}"


def pairs(weights: Mapping[str, int]) -> str:
    """``v1=70,v2=30`` (``-`` when empty)."""
    return ",".join(f"{k}={v}" for k, v in weights.items()) or "-"
