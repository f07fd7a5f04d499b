"""What one tick saw and did, and how each recorded transition is announced.

``TickReport`` goes to the runner (logs, /metrics), the demo and the tests. ``announce``
is the one place a recorded transition is logged and sent as a Kubernetes Event (on the
object that carries the experiment's weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from reconciler.controller.isolation import Fault
from reconciler.engine import traffic
from reconciler.engine.experiment import Transition
from reconciler.engine.state import ExperimentState, Phase
from reconciler.ports import EventSink, Heads
from reconciler.spec.loader import Problem
from reconciler.spec.model import ObjectRef

log = structlog.get_logger("reconciler.controller")

__all__ = ["TickReport", "announce", "event_object"]


@dataclass
class TickReport:
    """What one tick saw and did (for logs, the demo's progress and tests)."""

    heads: Heads
    recorded: list[tuple[Transition, str]] = field(default_factory=list)
    """Each transition with the state commit that records it, in order."""
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    """(experiment id, outcome commit on main) for outcomes landed or confirmed."""
    problems: list[Problem] = field(default_factory=list)
    """Problems in experiment files seen for the first time by this process."""
    errors: list[str] = field(default_factory=list)
    pushes: list[tuple[str, int]] = field(default_factory=list)
    """(branch, attempts) of every accepted push; attempts above 1 were conflicts."""
    live: dict[str, int] = field(default_factory=dict)
    """Live experiments by phase at the start of the tick."""
    corrections: list[tuple[str, str]] = field(default_factory=list)
    """(experiment key, what the cluster carried) each time recorded weights were set again."""
    held: int = 0
    """Live experiments held because something keeps putting other weights back."""
    faults: list[Fault] = field(default_factory=list)
    """Steps that raised for one experiment or file, first seen this tick (invariant 9)."""
    experiments: set[str] = field(default_factory=set)
    """Keys of the live experiments at the start of the tick."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds each phase of the tick took (``server.telemetry.TICK_PHASES``)."""


def announce(
    transition: Transition, commit: str, report: TickReport, events: EventSink | None
) -> None:
    """Add a recorded transition to ``report``; log it, and send it as an Event."""
    report.recorded.append((transition, commit))
    state = transition.state
    if events is not None:
        about = event_object(state)
        if about is not None:
            rolled_back = state.phase in {Phase.ROLLING_BACK, Phase.ROLLED_BACK}
            failed = rolled_back or state.failures > 0
            events.record(about, f"Rollout{state.phase.value}", transition.summary, warning=failed)
    log.info(
        "transition_recorded",
        experiment=state.id,
        phase=state.phase.value,
        iteration=state.iteration,
        weights=dict(state.weights),
        commit=commit,
        summary=transition.summary,
    )


def event_object(state: ExperimentState) -> ObjectRef | None:
    """The object an experiment's Events are about: the one carrying its weights."""
    for version in state.spec.versions:
        ref = version.weight_obj_ref
        if ref is not None:
            resolved = traffic.resolve(ref, state.spec)
            return ObjectRef(resolved.api_version, resolved.kind, resolved.name, resolved.namespace)
    return None
