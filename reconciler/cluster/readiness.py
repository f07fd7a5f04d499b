"""When is a version ready: Deployments by their rollout status, anything else by ``Ready``.

``assess`` is pure: a Deployment is ready when its controller has seen the latest spec
(``observedGeneration``), every replica is updated and available, and its progress
deadline has not passed (what ``kubectl rollout status`` checks); any other object (a
Knative Service, ...) when its ``Ready`` condition is ``True`` for its latest
generation. ``wait_ready`` polls until every object is ready or a deadline passes; the
clock and ``sleep`` are passed in, so tests drive time. Nothing here writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler.cluster.resources import ObjectRef
from reconciler.errors import PermanentError
from reconciler.ports import Readiness


class NotReadyError(PermanentError):
    """Versions were still not ready when the experiment's deadline passed."""

    def __init__(self, waiting: Mapping[ObjectRef, Readiness], timeout: float) -> None:
        reasons = "; ".join(f"{ref}: {r.reason}" for ref, r in waiting.items())
        super().__init__(f"not ready after {timeout:g} s: {reasons}")
        self.waiting = dict(waiting)
        self.timeout = timeout


def assess(obj: Mapping[str, Any] | None) -> Readiness:
    """Whether ``obj`` (a decoded object, None when absent) is ready, and why not."""
    if obj is None:
        return Readiness(ready=False, reason="does not exist")
    if obj.get("kind") == "Deployment" and str(obj.get("apiVersion", "")).startswith("apps/"):
        return _deployment(obj)
    return _ready_condition(obj)


def _generation_seen(obj: Mapping[str, Any]) -> Readiness | None:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return Readiness(
            ready=False,
            reason=f"its controller has not seen generation {generation} yet (at {observed})",
        )
    return None


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in found if isinstance(c, Mapping)}


def _deployment(obj: Mapping[str, Any]) -> Readiness:  # noqa: PLR0911 - one reason each
    status = obj.get("status") or {}
    if "observedGeneration" not in status:
        return Readiness(ready=False, reason="no status yet")
    stale = _generation_seen(obj)
    if stale is not None:
        return stale
    progressing = _conditions(obj).get("Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Readiness(ready=False, reason="its rollout exceeded its progress deadline")
    wanted = (obj.get("spec") or {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    replicas = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < wanted:
        return Readiness(ready=False, reason=f"{updated} of {wanted} replicas updated")
    if replicas > updated:
        return Readiness(ready=False, reason=f"{replicas - updated} old replicas still running")
    if available < updated:
        return Readiness(ready=False, reason=f"{available} of {updated} replicas available")
    return Readiness(ready=True, reason=f"{available} of {wanted} replicas available")


def _ready_condition(obj: Mapping[str, Any]) -> Readiness:
    stale = _generation_seen(obj)
    if stale is not None:
        return stale
    ready = _conditions(obj).get("Ready")
    if ready is None:
        return Readiness(ready=False, reason="no Ready condition yet")
    if str(ready.get("status")) == "True":
        return Readiness(ready=True, reason="Ready")
    why = ready.get("message") or ready.get("reason") or f"Ready is {ready.get('status')}"
    return Readiness(ready=False, reason=str(why))


def wait_ready(
    check: Callable[[ObjectRef], Readiness],
    refs: Sequence[ObjectRef],
    *,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    interval: float = 1.0,
) -> dict[ObjectRef, Readiness]:
    """Poll ``check`` until every ref is ready; return their verdicts.

    Raises:
        NotReadyError: naming each object still waiting, and why, once ``timeout`` seconds
            (on ``clock``) have passed.
    """
    deadline = clock() + timeout
    verdicts: dict[ObjectRef, Readiness] = {}
    while True:
        for ref in refs:
            if ref not in verdicts or not verdicts[ref].ready:
                verdicts[ref] = check(ref)
        waiting = {ref: v for ref, v in verdicts.items() if not v.ready}
        if not waiting:
            return verdicts
        remaining = deadline - clock()
        if remaining <= 0:
            raise NotReadyError(waiting, timeout)
        sleep(min(interval, remaining))
