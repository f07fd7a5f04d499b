"""Which load plans may run: each checked on its own, then all of them against the caps.

``plan_problem`` says why one plan cannot run (a target, a header or a method refused by
``targets``, a rate, payload or connection count over the configuration's caps, a value
that makes no sense). ``admit`` then adds the plans up against the total rate cap: the
runs already loading keep their place, the new ones are let in in run-id order while they
fit, so a newcomer never pushes out a run that is loading. A plan counts its peak rate,
``qps`` times its versions, paused or not (a paused run keeps its place for its resume).

What it must never do: I/O, or admit a plan it cannot say is within every cap.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from reconciler.ports import LoadPlan
from reconciler.spec.targets import check_headers, check_method, check_target

__all__ = ["Caps", "admit", "payload_of", "plan_problem", "plan_qps"]


@dataclass(frozen=True)
class Caps:
    """The configuration's bounds on the built-in load (``load.*`` settings)."""

    max_qps_per_experiment: float = 100.0
    max_qps_total: float = 1000.0
    max_payload_bytes: int = 1 << 20
    max_connections: int = 16
    allowed_namespaces: tuple[str, ...] = ()


def payload_of(plan: LoadPlan) -> bytes | None:
    """The body each request carries: the payload file's bytes, else the inline payload."""
    if plan.payload is not None:
        return plan.payload
    if plan.load.payload is not None:
        return plan.load.payload.encode()
    return None


def plan_qps(plan: LoadPlan) -> float:
    """The plan's peak rate: each version's ``qps`` (the load's, unless it names its own)."""
    return sum(v.qps or plan.load.qps for v in plan.load.versions)


def plan_problem(plan: LoadPlan, caps: Caps) -> str | None:  # noqa: PLR0911 - one reason each
    """Why ``plan`` may not run on its own (None: it may, if the total leaves room)."""
    load = plan.load
    if not load.versions:
        return "the load names no version"
    names = [v.version for v in load.versions]
    if len(set(names)) != len(names):
        return "a version is named twice in the load"
    why = _targets_problem(plan, caps)
    if why:
        return why
    why = check_method(load.method) or _numbers_problem(plan)
    if why:
        return why
    if plan_qps(plan) > caps.max_qps_per_experiment:
        return (
            f"{plan_qps(plan):g} requests a second in all (to {len(load.versions)} versions) "
            f"is over load.maxQpsPerExperiment ({caps.max_qps_per_experiment:g})"
        )
    if load.connections > caps.max_connections:
        return (
            f"{load.connections} connections to each version is over load.maxConnections "
            f"({caps.max_connections})"
        )
    body = payload_of(plan)
    if body is not None and len(body) > caps.max_payload_bytes:
        return (
            f"a payload of {len(body)} bytes is over load.maxPayloadBytes "
            f"({caps.max_payload_bytes})"
        )
    return None


def admit(
    plans: Mapping[str, LoadPlan], running: Collection[str], caps: Caps
) -> tuple[dict[str, LoadPlan], dict[str, str]]:
    """The plans that may run, and why each of the others may not (by run id).

    ``running`` are the run ids loading now: they are counted first.
    """
    refused: dict[str, str] = {}
    admitted: dict[str, LoadPlan] = {}
    total = 0.0
    order = sorted(plans, key=lambda run_id: (run_id not in running, run_id))
    for run_id in order:
        plan = plans[run_id]
        why = plan_problem(plan, caps)
        if why is None and total + plan_qps(plan) > caps.max_qps_total:
            why = (
                f"{plan_qps(plan):g} more requests a second would put the reconciler's load "
                f"over load.maxQpsTotal ({caps.max_qps_total:g}; {total:g} in use)"
            )
        if why is None:
            admitted[run_id] = plan
            total += plan_qps(plan)
        else:
            refused[run_id] = why
    return admitted, refused


def _targets_problem(plan: LoadPlan, caps: Caps) -> str | None:
    """Why a version's URL, its headers or the payload's URL may not be used."""
    for version in plan.load.versions:
        why = check_target(version.url, plan.namespace, caps.allowed_namespaces)
        why = why or check_headers(version.headers)
        if why:
            return f"version {version.version}: {why}"
    if plan.load.payload_url is not None:
        why = check_target(plan.load.payload_url, plan.namespace, caps.allowed_namespaces)
        if why:
            return f"payloadURL: {why}"
    return None


def _numbers_problem(plan: LoadPlan) -> str | None:  # noqa: PLR0911 - one reason each
    load = plan.load
    for qps in (load.qps, *(v.qps for v in load.versions if v.qps is not None)):
        if not (qps > 0 and math.isfinite(qps)):
            return f"qps must be above 0 (got {qps:g}; 0, Iter8's 'as fast as possible', is not)"
    if load.connections < 1:
        return f"connections must be at least 1 (got {load.connections})"
    if not (load.timeout_seconds > 0 and math.isfinite(load.timeout_seconds)):
        return f"the timeout must be above 0 seconds (got {load.timeout_seconds:g})"
    if not (plan.interval_seconds > 0 and math.isfinite(plan.interval_seconds)):
        return f"the interval must be above 0 seconds (got {plan.interval_seconds:g})"
    if load.duration_seconds is not None and not load.duration_seconds > 0:
        return f"the duration must be above 0 seconds (got {load.duration_seconds:g})"
    if load.requests is not None and load.requests < 1:
        return f"the request count must be at least 1 (got {load.requests})"
    return None
