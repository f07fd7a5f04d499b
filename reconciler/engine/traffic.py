"""Level-triggered traffic: which live document sets which weight, and whether the cluster agrees.

Every tick the loop reads the weights of every live experiment (DESIGN.md invariant 8) and
hands the readings here. ``owners`` says which document sets each weight field when
several name one (a running experiment before a finished one on the same object);
``assess`` compares one document's recorded weights with what the cluster carries and
says ``converged``, ``drifted`` (someone else set other weights), ``missing`` (the object
is gone: a rebuilt cluster, before the GitOps operator re-creates it), ``unknown`` (it
could not be read) or ``superseded``; ``describe`` and ``fix_for`` turn a drift into the
sentence a person needs: which object and field, what it holds, who wrote it, and the fix
``reconciler doctor`` would give. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from reconciler.engine.state import ExperimentState, Pairs
from reconciler.ports import WeightReading
from reconciler.spec.model import Experiment, WeightObjRef

CONVERGED, DRIFTED, MISSING, UNKNOWN, SUPERSEDED = (
    "converged",
    "drifted",
    "missing",
    "unknown",
    "superseded",
)

FLUX_MANAGER = "kustomize-controller"
ARGOCD_MANAGERS = frozenset({"argocd-controller", "argocd-application-controller"})


def resolve(ref: WeightObjRef, spec: Experiment) -> WeightObjRef:
    """The reference with the experiment's namespace when it names none."""
    return replace(ref, namespace=ref.namespace or spec.namespace)


def weight_pairs(state: ExperimentState) -> list[tuple[WeightObjRef, int]]:
    """Each recorded weight with the (resolved) field that carries it; [] without weights."""
    if not state.weights:
        return []
    return [
        (resolve(version.weight_obj_ref, state.spec), state.weight_of(version.name))
        for version in state.spec.versions
        if version.weight_obj_ref is not None
    ]


def refs(states: Iterable[ExperimentState]) -> list[WeightObjRef]:
    """Every weight field the live documents set, once each, in a stable order."""
    return list(dict.fromkeys(ref for state in states for ref, _ in weight_pairs(state)))


def owners(states: Iterable[ExperimentState]) -> dict[WeightObjRef, str]:
    """The key of the document that sets each weight field.

    A running experiment owns its fields before a finished one whose final weights are
    still to be confirmed (it has taken the target over); among finished ones, the one
    updated last. Keys of documents without weights appear nowhere.
    """
    ranked = sorted(states, key=lambda s: (not s.phase.final, s.updated_at, s.key))
    found: dict[WeightObjRef, str] = {}
    for state in ranked:  # later ones overwrite earlier ones
        for ref, _weight in weight_pairs(state):
            found[ref] = state.key
    return found


@dataclass(frozen=True)
class Drift:
    """One weight field whose value on the cluster is not the recorded one."""

    ref: WeightObjRef
    version: str
    recorded: int
    seen: int | None
    writers: tuple[str, ...]


@dataclass(frozen=True)
class Assessment:
    """How the cluster compares with one document's recorded weights."""

    status: str
    seen: Pairs = ()
    """The weights the cluster carries, for the versions that were read."""
    drifts: tuple[Drift, ...] = ()
    error: str | None = None

    @property
    def converged(self) -> bool:
        """Whether the cluster carries exactly the recorded weights."""
        return self.status == CONVERGED


NOTHING_TO_SET = Assessment(CONVERGED)
"""A document without weights (Conformance): there is nothing the cluster could disagree on."""


def assess(
    state: ExperimentState,
    readings: Mapping[WeightObjRef, WeightReading],
    owner: Mapping[WeightObjRef, str],
) -> Assessment:
    """Compare ``state``'s recorded weights with ``readings``.

    ``superseded`` when another document owns one of its fields (``owners``); ``unknown``
    when any of them could not be read; ``missing`` when an object does not exist; else
    ``drifted`` when any value differs, ``converged`` when none does.
    """
    pairs = weight_pairs(state)
    if not pairs:
        return NOTHING_TO_SET
    if any(owner.get(ref, state.key) != state.key for ref, _ in pairs):
        return Assessment(SUPERSEDED)
    for ref, _weight in pairs:
        reading = readings.get(ref)
        if reading is None or reading.error:
            return Assessment(UNKNOWN, error=reading.error if reading else "not read")
    seen: list[tuple[str, int]] = []
    drifts: list[Drift] = []
    missing = False
    for (ref, recorded), version in zip(pairs, _weighted_versions(state), strict=True):
        reading = readings[ref]
        missing = missing or not reading.exists
        if reading.value is not None:
            seen.append((version, reading.value))
        if reading.value != recorded:
            drifts.append(Drift(ref, version, recorded, reading.value, reading.writers))
    if _removed_by_outcome(state, drifts, missing=missing):
        return Assessment(CONVERGED, tuple(seen))
    if missing:
        return Assessment(MISSING, tuple(seen), tuple(drifts))
    status = DRIFTED if drifts else CONVERGED
    return Assessment(status, tuple(seen), tuple(drifts))


def _removed_by_outcome(state: ExperimentState, drifts: list[Drift], *, missing: bool) -> bool:
    """A finished run whose outcome took away what carried its weights: nothing to set.

    Once the outcome commit is on main (and, with a GitOps operator, applied), main says
    what routes traffic: an outcome may remove a route (a segment's match route) or the
    object that carried a candidate's weight. A field that is absent then, or an object
    that is gone, is the outcome's doing; setting it again could only fail, every tick,
    and keep the document from being archived. A field that is there with another value
    is still set, as for any run.
    """
    if not (state.phase.final and state.outcome_commit and state.sync != "waiting"):
        return False
    return (missing or bool(drifts)) and all(d.seen is None for d in drifts)


def _weighted_versions(state: ExperimentState) -> list[str]:
    return [v.name for v in state.spec.versions if v.weight_obj_ref is not None]


def field_name(ref: WeightObjRef) -> str:
    """``VirtualService bookinfo/productpage .spec.http[0].route[1].weight``."""
    where = f"{ref.namespace}/" if ref.namespace else ""
    return f"{ref.kind} {where}{ref.name} {ref.field_path}"


def describe(assessment: Assessment) -> str:
    """Which fields hold what instead of the recorded weights, and who wrote them."""
    parts = []
    for drift in assessment.drifts:
        seen = "absent" if drift.seen is None else str(drift.seen)
        who = f" (written by {drift.writers[0]})" if drift.writers else ""
        parts.append(f"{field_name(drift.ref)} is {seen}, recorded {drift.recorded}{who}")
    return "; ".join(parts)


def culprits(assessment: Assessment) -> list[str]:
    """The field managers named by the drifted fields, newest writer first, once each."""
    names = [w.split(" (", 1)[0] for d in assessment.drifts for w in d.writers[:1]]
    return list(dict.fromkeys(names))


def fix_for(manager: str | None) -> str:
    """What stops ``manager`` (a ``managedFields`` manager name) from resetting the weights."""
    if manager == FLUX_MANAGER:
        return (
            "Flux server-side-applies this object from Git: annotate it in Git with "
            "'kustomize.toolkit.fluxcd.io/ssa: IfNotPresent' "
            "(reconciler doctor --flux-kustomization NS/NAME names every such object)"
        )
    if manager in ARGOCD_MANAGERS:
        return (
            "Argo CD syncs this field from Git: list it in the Application's "
            "spec.ignoreDifferences and add 'RespectIgnoreDifferences=true' to its "
            "syncOptions (reconciler doctor --argocd-application NS/NAME names what is missing)"
        )
    if manager is not None and manager.startswith("kubectl"):
        return (
            f"someone set it by hand ({manager}): while the experiment runs, its weights are "
            "the state branch's; change the experiment in Git instead"
        )
    if manager:
        return (
            f"another controller ({manager}) manages this field: stop it from setting the "
            "weights of this object while experiments run on it"
        )
    return (
        "find who writes this field (kubectl get -o yaml --show-managed-fields) and stop it "
        "from setting the weights while experiments run on it"
    )


def hold_reason(assessment: Assessment, corrections: int) -> str:
    """Why an experiment is held: what keeps changing, who does it, and the fix."""
    names = culprits(assessment)
    fix = fix_for(names[0] if names else None)
    return (
        f"the recorded weights were set {corrections} times in a row and each time something "
        f"put other weights back: {describe(assessment)}. Fix: {fix}"
    )
