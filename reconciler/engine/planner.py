"""The plan across an Env repo's experiments: what each one does next, as one pure function.

Everything it needs is passed in, already observed by the loop (``controller.loop``): the
live state documents, the experiment files on main (with the run each names, whether that
run was archived, and for a fixed split the weights the cluster carries), what this tick
saw of each live experiment (weights confirmed or not, an open episode, readiness,
metrics, the GitOps operator's sync) and the time. It returns the transitions, in order,
and the faults of the experiments whose step raised (invariant 9: the others are planned
as if nothing happened); the loop records the transitions, then acts. As Argo Rollouts'
``assessRunStatus``, it persists nothing and reads nothing, so its rules are tested
without Git or a cluster:

- one actor per target: a run whose target has an outcome pending does not start, and a
  finished run's traffic is archived once another run sets the target's traffic;
- the latest file wins: of several new files for one target, the last in path order
  starts; a running experiment whose target (or own file) has a newer run is preempted;
- a run whose file left main, or changed, is withdrawn;
- nothing is judged on weights the cluster was not seen carrying (invariant 8): an
  experiment off the record records what happened once its weights are back, is held
  when something keeps changing them, and is stepped only when confirmed;
- a blue/green winner keeps its traffic after its promotion until the outcome is applied
  (or ``sync_timeout`` passed) and every readiness object is ready;
- a person's commands come first: those for a running run are answered in one transition
  that tick (``engine.commands``), the others (another run's id, a run that is over, no
  run, a malformed file) are ignored and said so; a paused run does nothing automatic, and
  a gate nobody answered in time rolls back (or proceeds, as ``spec.approval`` says).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from reconciler.engine import commands, experiment
from reconciler.engine.control import Command
from reconciler.engine.experiment import Observations, Transition
from reconciler.engine.state import ExperimentState, Phase
from reconciler.engine.traffic import DRIFTED, Assessment
from reconciler.spec.model import DeploymentPattern, Experiment

__all__ = ["Candidate", "Inputs", "OffRecord", "Plan", "Seen", "plan"]


@dataclass(frozen=True)
class Candidate:
    """An experiment file on main: the run it names and what the loop found about it."""

    spec: Experiment
    blob: str
    run_id: str | None
    """The run's id (None: it could not be named, a fault the loop recorded: never started)."""
    archived: bool = False
    """Whether the state branch archived this run already (it never runs again)."""
    current: Mapping[str, int] | None = None
    """For a fixed split, the weights the cluster carries now (None: unknown)."""


@dataclass(frozen=True)
class OffRecord:
    """Since the experiment's last iteration, the cluster did not carry its weights."""

    found: Assessment
    """What was seen: the first drift (other weights, and who wrote them), else missing."""
    counts: bool
    """Someone else's doing (confirmed weights changed), towards a hold."""


@dataclass(frozen=True)
class Seen:
    """What this tick saw of one live experiment (the loop observed it before the plan)."""

    confirmed: bool = False
    """The cluster is known to carry the recorded weights now."""
    assessed: Assessment | None = None
    """This tick's reading of its weights against the record."""
    off_record: OffRecord | None = None
    resumable: bool = False
    """Held, and its weights stayed as recorded for a full interval."""
    waiting: str | None = None
    """Why it is not ready (None: ready, or not asked)."""
    ready: bool = False
    """Every readiness object was seen ready this tick (asked for a blue/green winner
    still serving: the baseline must run its version before traffic returns to it)."""
    synced: str | None = None
    """The revision the GitOps operator reports applied, for one waiting for it."""
    observations: Observations | None = None
    """Metrics measured this tick (only for a due experiment on confirmed weights)."""


@dataclass(frozen=True)
class Inputs:
    """Everything one plan depends on."""

    states: Mapping[str, ExperimentState]
    """Live state documents, by experiment key."""
    files: Sequence[Candidate]
    """The experiment files on main, in path order."""
    seen: Mapping[str, Seen]
    """By experiment key; a key without an entry was seen as nothing (unconfirmed)."""
    main: str
    """Main's tip, which a decision taken now is taken on."""
    now: float
    sync_timeout: float = 120.0
    """Seconds an outcome waits for the GitOps operator before it is settled anyway."""
    commands: Mapping[str, Sequence[Command]] = field(default_factory=dict)
    """Pending commands by the experiment key their folder names, oldest first."""


@dataclass
class Plan:
    """The transitions to record, in order, and the faults met on the way."""

    transitions: list[Transition] = field(default_factory=list)
    faults: list[tuple[str, str, Exception]] = field(default_factory=list)
    """(experiment key, step, what it raised): that experiment skips the step this tick."""
    shadowed: list[tuple[str, str, str]] = field(default_factory=list)
    """(target, file starting, file ignored) where several new files name one target."""
    ignored: list[tuple[Command, str]] = field(default_factory=list)
    """Commands no run answers, and why: recorded as such, their files removed."""


_NOTHING = Seen()


def plan(inputs: Inputs) -> Plan:
    """What every experiment does next (see the module's doc for the rules)."""
    out = Plan()
    to_start = _new_runs(inputs, out)
    on_main = {f.spec.key: f for f in inputs.files}
    running = {s.spec.target for s in inputs.states.values() if not s.phase.final}
    busy: set[str] = set()
    answered = _answer_commands(inputs, out)
    for key in sorted(inputs.states):
        state = inputs.states[key]
        if answered.get(key, state).phase.deciding:
            busy.update((key, state.spec.target))
        if key in answered:  # a person's commands are this tick's step
            continue
        if state.phase.deciding:
            continue
        try:
            planned = _next(state, inputs, to_start, on_main, running)
        except Exception as exc:  # noqa: BLE001 - invariant 9: this experiment's alone
            out.faults.append((key, "planning its next step", exc))
            continue
        if planned is not None:
            out.transitions.append(planned)
    _start(to_start, busy, inputs, out)
    return out


def _start(to_start: Mapping[str, Candidate], busy: set[str], inputs: Inputs, out: Plan) -> None:
    """Start the new runs whose target has no outcome pending."""
    for found in to_start.values():
        if found.spec.key in busy or found.spec.target in busy:
            continue  # starts once the pending outcome for its target has landed
        try:
            current = None
            if found.spec.deployment_pattern is DeploymentPattern.FIXED_SPLIT:
                current = found.current
            started = experiment.start(
                found.spec, spec_blob=found.blob, source_commit=inputs.main, now=inputs.now,
                current=current,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - invariant 9
            out.faults.append((found.spec.key, "starting it", exc))
            continue
        out.transitions.append(started)


def _answer_commands(inputs: Inputs, out: Plan) -> dict[str, ExperimentState]:
    """Answer the commands pending for running runs; the new states of the runs that did."""
    for key in sorted(set(inputs.commands) - set(inputs.states)):
        for command in inputs.commands[key]:
            out.ignored.append((command, command.problem or f"no live run of {key}"))
    answered: dict[str, ExperimentState] = {}
    for key in sorted(set(inputs.commands) & set(inputs.states)):
        state = inputs.states[key]
        mine = _commands_for(state, inputs.commands[key], out)
        if not mine:
            continue
        answered[key] = state
        seen = inputs.seen.get(key, _NOTHING)
        try:
            transition = commands.answer(state, mine, inputs.now, confirmed=seen.confirmed)
        except Exception as exc:  # noqa: BLE001 - invariant 9: this experiment's alone
            out.faults.append((key, "answering a command", exc))
            continue
        out.transitions.append(transition)
        answered[key] = transition.state
    return answered


def _commands_for(state: ExperimentState, pending: Sequence[Command], out: Plan) -> list[Command]:
    """The commands this run answers; the others go to ``out.ignored`` with the reason."""
    mine: list[Command] = []
    for command in pending:
        if command.problem is not None:
            out.ignored.append((command, command.problem))
        elif command.run_id != state.id:
            why = f"it is for run {command.run_id}; the live run is {state.id}"
            out.ignored.append((command, why))
        elif not commands.running(state):
            out.ignored.append((command, f"the run is over ({state.phase.value})"))
        else:
            mine.append(command)
    return mine


def _new_runs(inputs: Inputs, out: Plan) -> dict[str, Candidate]:
    """Files on main whose run is neither live nor archived, by target; the last one wins."""
    live_ids = {s.id for s in inputs.states.values()}
    to_start: dict[str, Candidate] = {}
    for found in inputs.files:
        if found.run_id is None or found.run_id in live_ids or found.archived:
            continue
        previous = to_start.get(found.spec.target)
        if previous is not None:
            out.shadowed.append((found.spec.target, found.spec.key, previous.spec.key))
        to_start[found.spec.target] = found
    return to_start


def _next(
    state: ExperimentState,
    inputs: Inputs,
    to_start: Mapping[str, Candidate],
    on_main: Mapping[str, Candidate],
    running: set[str],
) -> Transition | None:
    """The next transition of a live experiment: settled, synced, preempted, withdrawn, stepped."""
    now = inputs.now
    seen = inputs.seen.get(state.key, _NOTHING)
    if state.settling:  # finished, its final weights set: archived once another run acts
        if state.spec.target in running or state.spec.target in to_start:
            return experiment.traffic_settled(
                state, now, why="another run sets the target's traffic now"
            )
        return None
    if state.phase.final:  # waiting for the GitOps operator to apply its outcome
        applied = seen.synced is not None or now - state.updated_at >= inputs.sync_timeout
        if applied and experiment.holds_traffic(state) and not seen.ready:
            return None  # a blue/green winner serves until the baseline runs its version
        if applied:
            return experiment.sync_settled(
                state, now, revision=seen.synced, confirmed=seen.confirmed
            )
        return None
    return _running(state, seen, inputs, to_start, on_main)


def _running(
    state: ExperimentState,
    seen: Seen,
    inputs: Inputs,
    to_start: Mapping[str, Candidate],
    on_main: Mapping[str, Candidate],
) -> Transition | None:
    """A running experiment: preempted by a newer run, withdrawn, or stepped."""
    key, now = state.key, inputs.now
    newer = to_start.get(state.spec.target) or next(
        (f for f in to_start.values() if f.spec.key == key), None
    )
    if newer is not None and newer.run_id is not None:
        return experiment.preempt(state, newer.run_id, now)
    if key not in on_main or on_main[key].blob != state.spec_blob:
        return experiment.withdraw(state, now, confirmed=seen.confirmed)
    if state.held is not None or not seen.confirmed or seen.off_record is not None:
        return _off_record(state, seen, now)
    if state.paused is not None:
        return None  # frozen until a resume: no iteration, no timeout
    if state.phase is Phase.AWAITING_APPROVAL:
        return commands.gate_timeout(state, now)
    stepped = None
    if seen.waiting is not None:
        if now - state.started_at >= state.spec.readiness.timeout_seconds:
            stepped = experiment.not_ready(state, now, seen.waiting, confirmed=True)
    elif seen.observations is not None:
        stepped = experiment.step(state, seen.observations, now)
    if stepped is not None and stepped.state.phase.deciding:
        stepped = replace(stepped, state=replace(stepped.state, decided_on=inputs.main))
    return stepped


def _off_record(state: ExperimentState, seen: Seen, now: float) -> Transition | None:
    """A running experiment whose cluster is (or was, since its last iteration) off the record.

    Held: it resumes once the weights stayed for a full interval. Someone else's weights
    that would be the ``HOLD_AFTER``-th correction in a row: it is held now. Otherwise,
    once the recorded weights are back on the cluster, what happened is recorded (the
    iteration due waits a full interval); until then, and while the weights cannot be
    read, nothing is recorded and nothing judged.
    """
    if state.held is not None:
        return experiment.resume(state, now) if seen.resumable else None
    episode = seen.off_record
    if episode is None:
        return None  # unreadable: nothing is judged on weights nobody saw
    found = seen.assessed
    if (
        found is not None
        and found.status == DRIFTED
        and experiment.would_hold(state, counts=episode.counts)
    ):
        return experiment.drifted(state, found, now, counts=True)
    if not seen.confirmed:
        return None
    return experiment.drifted(state, episode.found, now, counts=episode.counts)
