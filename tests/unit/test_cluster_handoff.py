from typing import Any

import pytest

from reconciler.cluster.handoff import (
    ArgoCDApp,
    FluxSync,
    commit_id,
    names_commit,
    synced_revision,
    target_from_settings,
)
from reconciler.config import GitOpsSettings

COMMIT = "3f2a9c1e07b4d5e6f708192a3b4c5d6e7f809112"


@pytest.mark.parametrize(
    "revision",
    [
        COMMIT,
        f"main@sha1:{COMMIT}",
        f"main/{COMMIT}",
        f"refs/heads/main@sha1:{COMMIT}",
        COMMIT.upper(),
    ],
)
def test_revisions_that_name_the_commit(revision: str) -> None:
    assert names_commit(revision, COMMIT)
    assert names_commit(revision, COMMIT[:12])


@pytest.mark.parametrize("revision", ["", "main@sha1:0000000", f"main@sha1:{COMMIT[:-1]}0"])
def test_revisions_that_do_not(revision: str) -> None:
    assert not names_commit(revision, COMMIT)


def test_too_short_a_commit_names_nothing() -> None:
    assert not names_commit(COMMIT, COMMIT[:4])


def test_synced_revisions_are_read_from_argocd_and_flux_status() -> None:
    app = {"status": {"sync": {"status": "Synced", "revision": "a", "revisions": ["b", "c"]}}}
    assert synced_revision(ArgoCDApp("env"), app) == ["a", "b", "c"]
    assert synced_revision(ArgoCDApp("env"), None) == []
    kustomization = {"status": {"lastAppliedRevision": "main@sha1:x"}}
    assert synced_revision(FluxSync("env", "apps"), kustomization) == ["main@sha1:x"]


@pytest.mark.parametrize(
    ("status", "applied"),
    [
        # compared with the commit, the cluster behind it: a sync is yet to run
        ({"sync": {"status": "OutOfSync", "revision": "new"}}, []),
        ({"sync": {"revision": "new"}}, []),
        # a sync to it is running, or failed
        (
            {
                "sync": {"status": "OutOfSync", "revision": "new"},
                "operationState": {"phase": "Running", "syncResult": {"revision": "new"}},
            },
            [],
        ),
        ({"operationState": {"phase": "Failed", "syncResult": {"revision": "new"}}}, []),
        # the sync to it succeeded, though something else keeps the app OutOfSync
        (
            {
                "sync": {"status": "OutOfSync", "revision": "new"},
                "operationState": {"phase": "Succeeded", "syncResult": {"revision": "new"}},
            },
            ["new"],
        ),
        # synced at the commit with no operation (nothing of the app's changed)
        (
            {
                "sync": {"status": "Synced", "revision": "new"},
                "operationState": {"phase": "Succeeded", "syncResult": {"revision": "old"}},
            },
            ["new", "old"],
        ),
        (
            {
                "operationState": {
                    "phase": "Succeeded",
                    "syncResult": {"revisions": ["a", "b"]},
                }
            },
            ["a", "b"],
        ),
    ],
)
def test_argocd_reports_a_revision_applied_once_synced_or_its_sync_succeeded(
    status: dict[str, Any], applied: list[str]
) -> None:
    assert synced_revision(ArgoCDApp("env"), {"status": status}) == applied


def test_targets_come_from_namespace_slash_name_settings() -> None:
    argocd = GitOpsSettings(argocd_application="argocd/env")
    assert target_from_settings(argocd) == ArgoCDApp("env", "argocd")
    flux = GitOpsSettings(flux_gitrepository="flux-system/env", flux_kustomization="apps/env")
    assert target_from_settings(flux) == FluxSync("env", "env", "flux-system", "apps")
    assert target_from_settings(GitOpsSettings()) is None


@pytest.mark.parametrize(
    "settings",
    [("argocd/env", "flux-system/env", None), (None, "flux-system/env", None), ("env", None, None)],
)
def test_inconsistent_target_settings_are_refused(settings: tuple[str | None, ...]) -> None:
    argocd, source, applier = settings
    named = GitOpsSettings(
        argocd_application=argocd, flux_gitrepository=source, flux_kustomization=applier
    )
    with pytest.raises(ValueError, match=r"namespace/name|not both|needs both"):
        target_from_settings(named)


@pytest.mark.parametrize(
    ("revision", "found"),
    [
        (f"main@sha1:{COMMIT}", COMMIT),
        (f"main/{COMMIT}", COMMIT),
        (COMMIT, COMMIT),
        (COMMIT.upper(), COMMIT),
        ("main@sha1:3f2a9c1", None),
        (f"v1.2.3@sha256:{COMMIT}{COMMIT[:24]}", None),
        ("", None),
    ],
)
def test_the_commit_a_reported_revision_names(revision: str, found: str | None) -> None:
    assert commit_id(revision) == found
