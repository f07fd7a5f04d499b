"""Argo CD and Flux hand-off: the right annotations, then a bounded wait for the revision."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.cluster.client import MERGE_PATCH, Kube
from reconciler.cluster.handoff import (
    ARGOCD_REFRESH,
    FLUX_REQUESTED_AT,
    ArgoCDApp,
    FluxSync,
    GitOpsHandoff,
    RepoHandoff,
    SyncTimeoutError,
)
from reconciler.cluster.resources import ObjectRef
from tests.fixtures.kube import apply, write_status

pytestmark = pytest.mark.integration

COMMIT = "3f2a9c1e07b4d5e6f708192a3b4c5d6e7f809112"
OLD = "0000000000000000000000000000000000000001"


def _application(namespace: str, name: str = "env") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/env.git", "path": "apps"},
            "destination": {"server": "https://kubernetes.default.svc"},
        },
        "status": {"sync": {"status": "Synced", "revision": OLD}},
    }


def _flux_objects(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "env", "namespace": namespace},
            "spec": {"url": "https://git.example/env.git", "interval": "5m"},
        },
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": namespace},
            "spec": {
                "interval": "10m",
                "prune": True,
                "path": "./apps",
                "sourceRef": {"kind": "GitRepository", "name": "env"},
            },
        },
    ]


def _later(delay: float, action: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_argocd_refresh_is_requested_and_the_wait_ends_when_the_app_names_the_commit(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _application(namespace))
    target = ArgoCDApp("env", namespace)
    app_ref = target.application
    handoff = GitOpsHandoff(admin)

    def argocd_syncs() -> None:
        # Argo CD's CRD has no status subresource: the controller writes the whole object
        app = admin.get(app_ref)
        assert app is not None
        assert app["metadata"]["annotations"][ARGOCD_REFRESH] == "normal"
        admin.patch(
            app_ref,
            {"status": {"sync": {"status": "Synced", "revision": COMMIT}}},
            content_type=MERGE_PATCH,
        )

    syncer = _later(0.3, argocd_syncs)
    try:
        synced = handoff.hand_off(target, COMMIT, timeout=10, interval=0.05)
    finally:
        syncer.join()
    assert synced.revision == COMMIT
    assert synced.commit == COMMIT
    assert "Application" in synced.object


def test_the_loop_facing_handoff_requests_and_reports_without_waiting(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _application(namespace, "bound"))
    repo = RepoHandoff(GitOpsHandoff(admin), ArgoCDApp("bound", namespace))
    repo.request_sync(COMMIT)
    assert repo.synced(COMMIT) is None  # still at the old revision
    application = ArgoCDApp("bound", namespace).application
    # Argo CD compared with the commit and found the cluster behind: not applied yet
    admin.patch(
        application,
        {"status": {"sync": {"status": "OutOfSync", "revision": COMMIT}}},
        content_type=MERGE_PATCH,
    )
    assert repo.synced(COMMIT) is None
    # its sync to the commit finished (the live state may still differ elsewhere)
    admin.patch(
        application,
        {"status": {"operationState": {"phase": "Succeeded", "syncResult": {"revision": COMMIT}}}},
        content_type=MERGE_PATCH,
    )
    assert repo.synced(COMMIT) == COMMIT


def test_argocd_wait_times_out_when_the_app_never_names_the_commit(
    admin: Kube, namespace: str
) -> None:
    apply(admin, _application(namespace, "stuck"))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    handoff = GitOpsHandoff(admin, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(SyncTimeoutError) as raised:
        handoff.hand_off(ArgoCDApp("stuck", namespace), COMMIT, timeout=60)
    assert now[0] == 60
    assert raised.value.seen == OLD
    assert "3f2a9c1e07b4" in str(raised.value)


def test_flux_reconcile_is_requested_on_both_objects_and_the_wait_reads_last_applied(
    admin: Kube, namespace: str
) -> None:
    for obj in _flux_objects(namespace):
        apply(admin, obj)
    stamp = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
    target = FluxSync("env", "apps", namespace)
    handoff = GitOpsHandoff(admin, now=lambda: stamp)
    kustomization = ObjectRef("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "apps", namespace)
    write_status(admin, kustomization, {"lastAppliedRevision": f"main@sha1:{OLD}"})

    def flux_applies() -> None:
        write_status(admin, kustomization, {"lastAppliedRevision": f"main@sha1:{COMMIT}"})

    applier = _later(0.3, flux_applies)
    try:
        synced = handoff.hand_off(target, COMMIT, timeout=10, interval=0.05)
    finally:
        applier.join()
    assert synced.revision == f"main@sha1:{COMMIT}"
    for ref in (target.source, target.applier):
        annotated = admin.get(ref)
        assert annotated is not None
        assert (
            annotated["metadata"]["annotations"][FLUX_REQUESTED_AT] == "2025-01-31T12:00:00.123456Z"
        )


def test_flux_wait_times_out(admin: Kube, namespace: str) -> None:
    for obj in _flux_objects(namespace):
        apply(admin, obj)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    handoff = GitOpsHandoff(admin, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(SyncTimeoutError):
        handoff.hand_off(FluxSync("env", "apps", namespace), COMMIT, timeout=20)
    assert now[0] == 20
