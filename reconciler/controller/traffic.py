"""Level-triggered traffic for the loop: every tick, the cluster is brought to the record.

``Traffic.observe`` reads the weights of every live document once per tick (one read per
kind and namespace, ``Cluster.read_weights``) and assesses each against what the state
branch records (``engine.traffic``). ``converge`` then sets the recorded weights wherever
the cluster carries others, in the same tick, whoever changed them; a write that fails is
tried again every tick, without new commits. What went wrong between two iterations is an
*episode* (other weights seen, or the object missing): once the cluster carries the record
again, the plan records it once (the iteration that was due is not judged, and waits a
full interval) and closes it. Something that keeps putting other weights back is not
fought: after ``engine.experiment.HOLD_AFTER`` corrections in a row the plan holds the
experiment, and ``converge`` only probes it, at pauses that double, until the recorded
weights stay. ``set`` is the one place weights are written. Corrections are counted in
the tick's report and logged once per episode. It never sets weights the state branch
does not record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from reconciler.controller.isolation import Faults
from reconciler.engine import commands, experiment, traffic
from reconciler.engine.state import ExperimentState, Pairs
from reconciler.engine.traffic import DRIFTED, MISSING, UNKNOWN, Assessment
from reconciler.errors import ReconcilerError
from reconciler.ports import Cluster, WeightReading
from reconciler.spec.model import WeightObjRef

log = structlog.get_logger("reconciler.controller")

PROBE_MAX_SECONDS = 300.0
"""Longest pause between two probes of a held experiment (the pause doubles from its
interval): a probe sets the recorded weights once, to see whether they now stay."""


@dataclass
class TrafficReport:
    """What one tick did to the cluster's weights."""

    corrections: list[tuple[str, str]] = field(default_factory=list)
    """(experiment key, what was wrong) each time someone else's weights were set back."""
    errors: list[str] = field(default_factory=list)
    held: int = 0
    """Live experiments held at the end of the tick."""


@dataclass
class Episode:
    """Since ``started``, the cluster has not carried an experiment's recorded weights."""

    started: float
    found: Assessment
    """What was seen: the first drift (other weights, and who wrote them), else missing."""
    confirmed: bool
    """Whether the recorded weights had been confirmed on the cluster when it began."""
    corrected: bool = False
    """Whether the correction was logged and counted already (retries are not)."""

    @property
    def counts(self) -> bool:
        """Whether it is someone else's doing: confirmed weights were changed.

        Not our own write still due, nor an object that is only missing.
        """
        return self.confirmed and self.found.status == DRIFTED


@dataclass
class _Hold:
    """Probing of one held experiment, in this process."""

    next_probe: float
    pause: float
    converged_since: float | None = None


class Traffic:
    """Reads, assesses and sets the weights of one Env repo's live experiments."""

    def __init__(
        self, cluster: Cluster, *, guard: Callable[[str], None], faults: Faults | None = None
    ) -> None:
        """Use ``cluster``; ``guard(what)`` raises when this replica may not write.

        ``faults`` holds each experiment's errors at its boundary (invariant 9).
        """
        self._cluster = cluster
        self._faults = faults or Faults()
        self._guard = guard
        self._readings: Mapping[WeightObjRef, WeightReading] = {}
        self._owners: dict[WeightObjRef, str] = {}
        self._assessed: dict[str, tuple[ExperimentState, Assessment]] = {}
        """This tick's assessments, by key, with the document each was made for."""
        self._converged: set[str] = set()
        self._known: dict[str, Pairs] = {}
        """Weights this process saw on the cluster, or set there, since the last drift."""
        self._episodes: dict[str, Episode] = {}
        self._unseen: dict[str, str] = {}
        """Experiments whose weights could not be read or are missing, with why (logged once)."""
        self._failed: dict[str, str] = {}
        """The last failure to set an experiment's weights (logged once until it changes)."""
        self._holds: dict[str, _Hold] = {}
        self.report = TrafficReport()

    # -- observing ---------------------------------------------------------------------

    def observe(self, states: Mapping[str, ExperimentState], now: float) -> None:
        """Read every live document's weights and assess them (the start of every tick)."""
        self.report = TrafficReport()
        live = list(states.values())
        self._readings = self._read(live)
        self._owners = traffic.owners(live)
        self._assessed = {}
        self._converged = set()
        for state in live:
            with self._faults.boundary(state.key, "reading its weights"):
                found = self.assess(state)
                if found.converged:
                    self._confirm(state)
                if found.status in {DRIFTED, MISSING}:
                    self._note_episode(state, found, now)
                if found.status in {UNKNOWN, MISSING}:
                    self._unseen_once(state, found)
                if state.held is not None:
                    self._track_hold(state, found, now)
        for memory in (self._known, self._episodes, self._unseen, self._failed, self._holds):
            for key in set(memory) - set(states):
                del memory[key]

    def _read(self, live: list[ExperimentState]) -> Mapping[WeightObjRef, WeightReading]:
        """All live documents' weights in one read; one read each if that one raised.

        A reference that makes the adapter raise (rather than report an error in its
        reading) is then that experiment's fault alone: the others are read without it.
        """
        wanted = traffic.refs(live)
        if not wanted:
            return {}
        with self._faults.boundary("weights of all live experiments", "reading them") as batch:
            return self._cluster.read_weights(wanted)
        readings: dict[WeightObjRef, WeightReading] = {}
        for state in live if batch.failed else []:
            with self._faults.boundary(state.key, "reading its weights"):
                own = traffic.refs([state])
                readings.update(self._cluster.read_weights(own) if own else {})
        return readings

    def assess(self, state: ExperimentState) -> Assessment:
        """How the cluster compares with ``state``'s recorded weights, as this tick read it.

        Made once per document and tick: ``converge`` and the plan ask again for the same
        documents, and the readings do not change until the next ``observe``.
        """
        cached = self._assessed.get(state.key)
        if cached is not None and cached[0] is state:
            return cached[1]
        found = traffic.assess(state, self._readings, self._owners)
        self._assessed[state.key] = (state, found)
        return found

    def converged(self, key: str) -> bool:
        """Whether the cluster is known to carry the experiment's recorded weights now."""
        return key in self._converged

    def episode(self, state: ExperimentState) -> Episode | None:
        """What went wrong since ``state``'s last iteration (None: nothing this process saw)."""
        found = self._episodes.get(state.key)
        return found if found is not None and found.started > state.last_iteration_at else None

    def resumable(self, state: ExperimentState, now: float) -> bool:
        """A held experiment whose weights have stayed as recorded for a full interval."""
        hold = self._holds.get(state.key)
        since = hold.converged_since if hold is not None else None
        return since is not None and now - since >= state.spec.duration.interval_seconds

    # -- writing -----------------------------------------------------------------------

    def set(self, state: ExperimentState) -> bool:
        """Set ``state``'s recorded weights; whether the cluster now carries them."""
        pairs = traffic.weight_pairs(state)
        if not pairs:
            self._confirm(state)
            return True
        self._guard("set weights")
        try:
            self._cluster.set_weights(pairs)
        except ReconcilerError as exc:
            self._converged.discard(state.key)
            error = f"{state.id}: setting weights failed: {exc}"
            self.report.errors.append(error)
            if self._failed.get(state.key) != str(exc):
                self._failed[state.key] = str(exc)
                log.error(
                    "weights_failed", experiment=state.id, error=str(exc), retried="every tick"
                )
            return False
        if self._failed.pop(state.key, None) is not None:
            log.info("weights_set_after_failures", experiment=state.id)
        self._confirm(state)
        log.info("weights_set", experiment=state.id, weights=dict(state.weights))
        return True

    def converge(self, states: Mapping[str, ExperimentState], now: float) -> None:
        """Set the recorded weights wherever the cluster was seen carrying others.

        Not for a running experiment whose next correction would hold it (the plan records
        the hold instead), and a held one only when a probe is due: the recorded weights
        are set once, then again after a pause twice as long, up to ``PROBE_MAX_SECONDS``.
        """
        for state in states.values():
            with self._faults.boundary(state.key, "setting its recorded weights again"):
                self._converge_one(state, now)
        self.report.held = sum(1 for s in states.values() if s.held is not None)

    def _converge_one(self, state: ExperimentState, now: float) -> None:
        """``converge`` for one live document."""
        found = self.assess(state)
        if found.status != DRIFTED:
            return
        episode = self._episodes.get(state.key)
        if state.held is not None:
            hold = self._holds[state.key]
            if now >= hold.next_probe:
                hold.next_probe = now + hold.pause
                hold.pause = min(2 * hold.pause, PROBE_MAX_SECONDS)
                log.info("weights_probed", experiment=state.id, found=traffic.describe(found))
                self.report.corrections.append((state.key, traffic.describe(found)))
                self.set(state)
            return
        counts = episode is not None and episode.counts
        if commands.running(state) and experiment.would_hold(state, counts=counts):
            return
        if episode is not None and counts and not episode.corrected:
            episode.corrected = True
            self.report.corrections.append((state.key, traffic.describe(found)))
            log.warning(
                "weights_corrected",
                experiment=state.id,
                found=traffic.describe(found),
                recorded=dict(state.weights),
                writers=traffic.culprits(found),
            )
        self.set(state)

    # -- bookkeeping -------------------------------------------------------------------

    def _confirm(self, state: ExperimentState) -> None:
        self._converged.add(state.key)
        self._known[state.key] = state.weights
        if self._unseen.pop(state.key, None) is not None:
            log.info("weights_readable", experiment=state.id)

    def _note_episode(self, state: ExperimentState, found: Assessment, now: float) -> None:
        """Open an episode (or make an open one say more), then forget what was confirmed."""
        current = self.episode(state)
        if current is None:
            confirmed = state.applied or self._known.get(state.key) == state.weights
            self._episodes[state.key] = Episode(now, found, confirmed)
        elif found.status == DRIFTED and current.found.status != DRIFTED:
            current.found = found  # missing, then re-created with other weights: say which
        self._known.pop(state.key, None)

    def _unseen_once(self, state: ExperimentState, found: Assessment) -> None:
        why = found.error or "the object that carries its weights does not exist"
        if self._unseen.get(state.key) == why:
            return
        self._unseen[state.key] = why
        self.report.errors.append(f"{state.id}: weights not readable: {why}")
        log.warning(
            "weights_unknown",
            experiment=state.id,
            status=found.status,
            error=why,
            meaning="the experiment does not advance until its weights can be read",
        )

    def _track_hold(self, state: ExperimentState, found: Assessment, now: float) -> None:
        interval = float(state.spec.duration.interval_seconds)
        hold = self._holds.setdefault(state.key, _Hold(next_probe=now + interval, pause=interval))
        if found.converged:
            if hold.converged_since is None:
                hold.converged_since = now
        else:
            hold.converged_since = None
