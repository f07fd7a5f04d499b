"""Which runs the built-in load generator sends requests for, told to it every tick.

Every live run whose spec asks for load (``spec.load``, or Iter8's ``metrics/collect``) gets
a ``LoadPlan``: active while it runs and is neither paused, held nor at an approval gate;
kept (its stats too) while it is stopped that way; dropped once the run is over. A payload
file is read from main at the commit the run was found in, once per run, bounded in size.
What the generator refuses (a target that is not an allowed in-cluster Service, a cap) is
that run's fault, recorded at its boundary; the run's built-in metrics then have no data,
which the engine never takes for a pass. Level-triggered like the traffic: a process that
restarts sends load again from its first tick, counting from there.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.controller.isolation import Faults
from reconciler.engine.state import ExperimentState, Phase
from reconciler.errors import ReconcilerError
from reconciler.ports import EnvStore, LoadGenerator, LoadPlan, MetricValue
from reconciler.spec.model import BUILTIN_LOAD_METRICS, Experiment

__all__ = ["ITER8_SYSTEM", "LoadRefusedError", "Loads", "measured_by_load"]

ITER8_SYSTEM = "iter8-system"
PAYLOAD_LIMIT = 1 << 20
"""Bytes of a payload file read from the Env repo; the generator has its own cap too."""


class LoadRefusedError(ReconcilerError):
    """The load generator will not send this run's load (why is the message)."""


def measured_by_load(spec: Experiment, metric: str) -> str | None:
    """The built-in metric ``metric`` names when ``spec``'s own load measures it, else None."""
    if spec.load is None or spec.load.load_only:
        return None
    scope, _, name = metric.rpartition("/")
    if scope == ITER8_SYSTEM and name in BUILTIN_LOAD_METRICS:
        return name
    return None


class Loads:
    """Keeps the generator's runs in step with the live documents."""

    def __init__(self, generator: LoadGenerator, store: EnvStore, faults: Faults) -> None:
        """Tell ``generator``; read payload files from ``store``; faults go to ``faults``."""
        self._generator = generator
        self._store = store
        self._faults = faults
        self._payloads: dict[str, bytes | None] = {}
        """Payload file contents by run id (None: the file is missing or too large)."""

    def converge(self, states: Mapping[str, ExperimentState]) -> None:
        """Send load for exactly the live runs that ask for it; record what is refused."""
        plans: dict[str, LoadPlan] = {}
        for key, state in states.items():
            load = state.spec.load
            if load is None or state.phase.final or state.phase.deciding:
                continue
            with self._faults.boundary(key, "planning its load"):
                plans[state.id] = LoadPlan(
                    run_id=state.id,
                    namespace=state.spec.namespace,
                    load=load,
                    interval_seconds=float(state.spec.duration.interval_seconds),
                    payload=self._payload(state),
                    active=_active(state),
                )
        self._payloads = {run: self._payloads[run] for run in plans if run in self._payloads}
        refused = self._generator.converge(plans)
        for key, state in states.items():
            why = refused.get(state.id)
            if why is not None:
                self._faults.record(key, "sending its load", LoadRefusedError(why))

    def observe(self, state: ExperimentState, version: str, name: str) -> MetricValue:
        """One built-in metric of one version, as the generator measured it."""
        return self._generator.observe(state.id, version, name)

    def _payload(self, state: ExperimentState) -> bytes | None:
        load = state.spec.load
        if load is None or load.payload_file is None:
            return None
        if state.id not in self._payloads:
            raw = self._store.read_file(state.source_commit, load.payload_file)
            if raw is None:
                raise LoadRefusedError(
                    f"payload file {load.payload_file} is not on main at {state.source_commit[:12]}"
                )
            if len(raw) > PAYLOAD_LIMIT:
                raise LoadRefusedError(
                    f"payload file {load.payload_file} is {len(raw):,} bytes; at most "
                    f"{PAYLOAD_LIMIT:,} are sent"
                )
            self._payloads[state.id] = raw
        return self._payloads[state.id]


def _active(state: ExperimentState) -> bool:
    """Whether the run sends requests now (not paused, held, or waiting for an approval)."""
    return state.phase is Phase.PROGRESSING and state.paused is None and state.held is None
