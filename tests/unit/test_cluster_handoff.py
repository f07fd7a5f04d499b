import pytest

from reconciler.cluster.handoff import (
    ArgoCDApp,
    FluxSync,
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
    app = {"status": {"sync": {"revision": "a", "revisions": ["b", "c"]}}}
    assert synced_revision(ArgoCDApp("env"), app) == ["a", "b", "c"]
    assert synced_revision(ArgoCDApp("env"), None) == []
    kustomization = {"status": {"lastAppliedRevision": "main@sha1:x"}}
    assert synced_revision(FluxSync("env", "apps"), kustomization) == ["main@sha1:x"]


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
