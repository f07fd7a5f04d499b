"""The normalised experiment as plain JSON-ready data, and back.

The state document carries the normalised spec so that recovery never re-parses YAML
(DESIGN.md 4.3): ``to_data`` and ``from_data`` are exact inverses for every ``Experiment``
(source locations excepted, which only matter while the file is being read). Pure.
"""

from __future__ import annotations

from typing import Any

from reconciler.spec.model import (
    Approval,
    CopyEdit,
    Criteria,
    DeleteEdit,
    DeploymentPattern,
    Duration,
    Edit,
    Experiment,
    GateName,
    GitOps,
    Load,
    Objective,
    ObjectRef,
    OnTimeout,
    ReadinessGate,
    Replacement,
    Reward,
    SetEdit,
    TestingPattern,
    Version,
    VersionLoad,
    WeightObjRef,
    Weights,
)


def to_data(exp: Experiment) -> dict[str, Any]:
    """The experiment as JSON-ready data."""
    return {
        "apiVersion": exp.api_version,
        "name": exp.name,
        "namespace": exp.namespace,
        "path": exp.path,
        "target": exp.target,
        "testingPattern": exp.testing_pattern.value,
        "deploymentPattern": exp.deployment_pattern.value,
        "weights": {
            "maxCandidateWeight": exp.weights.max_candidate_weight,
            "maxCandidateWeightIncrement": exp.weights.max_candidate_weight_increment,
        },
        "criteria": {
            "requestCount": exp.criteria.request_count,
            "objectives": [
                {"metric": o.metric, "upperLimit": o.upper_limit, "lowerLimit": o.lower_limit}
                for o in exp.criteria.objectives
            ],
            "rewards": [
                {"metric": r.metric, "preferredDirection": r.preferred_direction}
                for r in exp.criteria.rewards
            ],
            "indicators": list(exp.criteria.indicators),
            "failureLimit": exp.criteria.failure_limit,
            "noDataLimit": exp.criteria.no_data_limit,
            "method": exp.criteria.method,
            "confidence": exp.criteria.confidence,
            "minRequestCount": exp.criteria.min_request_count,
        },
        "duration": {
            "intervalSeconds": exp.duration.interval_seconds,
            "iterationsPerLoop": exp.duration.iterations_per_loop,
            "maxLoops": exp.duration.max_loops,
        },
        "baseline": _version_data(exp.baseline),
        "candidates": [_version_data(c) for c in exp.candidates],
        "readiness": {
            "timeoutSeconds": exp.readiness.timeout_seconds,
            "objects": [
                {
                    "apiVersion": o.api_version,
                    "kind": o.kind,
                    "name": o.name,
                    "namespace": o.namespace,
                }
                for o in exp.readiness.objects
            ],
        },
        "load": None if exp.load is None else _load_data(exp.load),
        "approval": {
            "before": [g.value for g in exp.approval.before],
            "timeoutSeconds": exp.approval.timeout_seconds,
            "onTimeout": exp.approval.on_timeout.value,
            "requireSigned": exp.approval.require_signed,
        },
        "gitops": {
            "promote": [_edit_data(e) for e in exp.gitops.promote],
            "rollback": [_edit_data(e) for e in exp.gitops.rollback],
            "cleanup": list(exp.gitops.cleanup),
        },
    }


def from_data(data: dict[str, Any]) -> Experiment:
    """Rebuild the experiment from ``to_data``'s output."""
    criteria = data["criteria"]
    gitops = data["gitops"]
    return Experiment(
        name=data["name"],
        namespace=data["namespace"],
        target=data["target"],
        testing_pattern=TestingPattern(data["testingPattern"]),
        deployment_pattern=DeploymentPattern(data["deploymentPattern"]),
        criteria=Criteria(
            request_count=criteria["requestCount"],
            objectives=tuple(
                Objective(o["metric"], o["upperLimit"], o["lowerLimit"])
                for o in criteria["objectives"]
            ),
            rewards=tuple(
                Reward(r["metric"], r["preferredDirection"]) for r in criteria["rewards"]
            ),
            indicators=tuple(criteria["indicators"]),
            failure_limit=criteria["failureLimit"],
            no_data_limit=criteria["noDataLimit"],
            # Documents written before issue 17 say "wilson" and have no minRequestCount.
            method="exact" if criteria["method"] == "wilson" else criteria["method"],
            confidence=criteria["confidence"],
            min_request_count=criteria.get("minRequestCount"),
        ),
        duration=Duration(
            interval_seconds=data["duration"]["intervalSeconds"],
            iterations_per_loop=data["duration"]["iterationsPerLoop"],
            max_loops=data["duration"]["maxLoops"],
        ),
        weights=Weights(
            max_candidate_weight=data["weights"]["maxCandidateWeight"],
            max_candidate_weight_increment=data["weights"]["maxCandidateWeightIncrement"],
        ),
        baseline=_version(data["baseline"]),
        candidates=tuple(_version(c) for c in data["candidates"]),
        gitops=GitOps(
            promote=tuple(_edit(e) for e in gitops["promote"]),
            rollback=tuple(_edit(e) for e in gitops["rollback"]),
            cleanup=tuple(gitops["cleanup"]),
        ),
        readiness=ReadinessGate(
            objects=tuple(
                ObjectRef(o["apiVersion"], o["kind"], o["name"], o["namespace"])
                for o in data["readiness"]["objects"]
            ),
            timeout_seconds=data["readiness"]["timeoutSeconds"],
        ),
        approval=_approval(data.get("approval")),
        load=_load(data["load"]) if data.get("load") else None,
        api_version=data["apiVersion"],
        path=data["path"],
    )


def _load_data(load: Load) -> dict[str, Any]:
    return {
        "versions": [
            {"name": v.version, "url": v.url, "headers": [list(h) for h in v.headers], "qps": v.qps}
            for v in load.versions
        ],
        "qps": load.qps,
        "durationSeconds": load.duration_seconds,
        "requests": load.requests,
        "connections": load.connections,
        "method": load.method,
        "payload": load.payload,
        "payloadFile": load.payload_file,
        "payloadURL": load.payload_url,
        "contentType": load.content_type,
        "timeoutSeconds": load.timeout_seconds,
        "loadOnly": load.load_only,
    }


def _load(data: dict[str, Any]) -> Load:
    return Load(
        versions=tuple(
            VersionLoad(v["name"], v["url"], tuple((k, h) for k, h in v["headers"]), v["qps"])
            for v in data["versions"]
        ),
        qps=data["qps"],
        duration_seconds=data["durationSeconds"],
        requests=data["requests"],
        connections=data["connections"],
        method=data["method"],
        payload=data["payload"],
        payload_file=data["payloadFile"],
        payload_url=data.get("payloadURL"),
        content_type=data["contentType"],
        timeout_seconds=data["timeoutSeconds"],
        load_only=data["loadOnly"],
    )


def _approval(data: dict[str, Any] | None) -> Approval:
    """``spec.approval`` as a state document carries it (documents before issue 21 have none)."""
    if not data:
        return Approval()
    return Approval(
        before=tuple(GateName(g) for g in data["before"]),
        timeout_seconds=data["timeoutSeconds"],
        on_timeout=OnTimeout(data["onTimeout"]),
        require_signed=data["requireSigned"],
    )


def _version_data(version: Version) -> dict[str, Any]:
    ref = version.weight_obj_ref
    return {
        "name": version.name,
        "variables": [{"name": k, "value": v} for k, v in version.variables],
        "weightObjRef": None
        if ref is None
        else {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "fieldPath": ref.field_path,
        },
    }


def _version(data: dict[str, Any]) -> Version:
    ref = data["weightObjRef"]
    return Version(
        name=data["name"],
        variables=tuple((v["name"], v["value"]) for v in data["variables"]),
        weight_obj_ref=None
        if ref is None
        else WeightObjRef(
            api_version=ref["apiVersion"],
            kind=ref["kind"],
            name=ref["name"],
            field_path=ref["fieldPath"],
            namespace=ref["namespace"],
        ),
    )


def _edit_data(edit: Edit) -> dict[str, Any]:
    if isinstance(edit, CopyEdit):
        return {
            "copy": {
                "from": edit.source,
                "to": edit.destination,
                "replace": [{"old": r.old, "new": r.new} for r in edit.replacements],
            }
        }
    if isinstance(edit, SetEdit):
        return {
            "set": {
                "file": edit.file,
                "path": edit.path,
                "value": edit.value,
                "document": edit.document,
            }
        }
    return {"delete": list(edit.paths)}


def _edit(data: dict[str, Any]) -> Edit:
    if "copy" in data:
        body = data["copy"]
        return CopyEdit(
            source=body["from"],
            destination=body["to"],
            replacements=tuple(Replacement(r["old"], r["new"]) for r in body["replace"]),
        )
    if "set" in data:
        body = data["set"]
        return SetEdit(body["file"], body["path"], body["value"], body["document"])
    return DeleteEdit(tuple(data["delete"]))
