"""Discovery of Env repos against the real API server, as the fleet layout's ServiceAccount.

manifests/fleet's RBAC is applied and every request is made as its ServiceAccount
(impersonation): Applications and GitRepositories are listed in all namespaces, the
credentials Secrets are read by name in the reconciler's own namespace, and nothing more.
"""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster.client import Kube
from reconciler.cluster.errors import ForbiddenError
from reconciler.cluster.repo_annotations import (
    CREDENTIALS_SECRET,
    ENABLED,
    FLUX_KUSTOMIZATION,
    INTERVAL,
    STATE_BRANCH,
)
from reconciler.cluster.repo_discovery import RepoDiscovery, list_everywhere, secret_dir_name
from reconciler.cluster.resources import ObjectRef
from tests.fixtures.kube import KubeServer, apply, delete, ensure_namespace
from tests.integration.kube.manifests import RBAC_KINDS, render

pytestmark = pytest.mark.integration

FLEET = "gitops-reconciler"
"""The fleet layout's namespace: its ServiceAccount and its credentials Secrets live here."""
USER = f"system:serviceaccount:{FLEET}:gitops-reconciler"
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
HOSTS = (
    "git.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
)


@pytest.fixture
def fleet_rbac(admin: Kube) -> Iterator[str]:
    """manifests/fleet's ServiceAccount and RBAC applied; its user name."""
    ensure_namespace(admin, FLEET)
    for obj in render("fleet"):
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] in RBAC_KINDS and "gitops-reconciler/binding" not in labels:
            apply(admin, obj)
    yield USER
    # The ServiceAccount is the one manifests/base and cluster-wide use too: no other test
    # may inherit these grants.
    rbac = "rbac.authorization.k8s.io/v1"
    delete(admin, ObjectRef(rbac, "ClusterRoleBinding", "gitops-reconciler-discovery"))
    delete(admin, ObjectRef(rbac, "RoleBinding", "gitops-reconciler-credentials", FLEET))


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": FLEET},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _application(
    namespace: str, name: str, url: str, notes: dict[str, str], **source: str
) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": namespace, "annotations": notes},
        "spec": {
            "project": "default",
            "source": {"repoURL": url, "path": "apps", "targetRevision": "main", **source},
            "destination": {"namespace": namespace},
        },
    }


def _git_repository(namespace: str, name: str, url: str, notes: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": namespace, "annotations": notes},
        "spec": {"url": url, "interval": "1m", "ref": {"branch": "prod"}},
    }


def _mine(entries: tuple[dict[str, Any], ...], namespace: str) -> list[dict[str, Any]]:
    """This test's entries (the session's server holds other tests' objects)."""
    return [e for e in entries if f"/{namespace}/" in e["repo"]]


def _about(problems: tuple[str, ...], namespace: str) -> list[str]:
    """The problems with this test's objects."""
    return [p for p in problems if p.partition(": ")[0].split(" ")[-1].startswith(f"{namespace}/")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _objects(admin: Kube, namespace: str) -> tuple[str, str, str, str]:
    """Two usable Env repos, one object not annotated, four that cannot be used.

    Returns the two Secrets' names and the two repo URLs.
    """
    https_secret, ssh_secret = f"https-{namespace}", f"ssh-{namespace}"
    argo_url = f"https://git.example/{namespace}/argo.git"
    flux_url = f"ssh://git@git.example/{namespace}/flux.git"
    apply(
        admin,
        _secret(
            https_secret,
            {"username": "bot", "password": "t0ken-1", "url": f"https://git.example/{namespace}/"},
        ),
    )
    apply(admin, _secret(ssh_secret, {"identity": KEY, "known_hosts": HOSTS, "url": flux_url}))
    enabled = {ENABLED: "true", CREDENTIALS_SECRET: https_secret}
    apply(admin, _application(namespace, "argo", argo_url, {**enabled, INTERVAL: "20"}))
    apply(admin, _application(namespace, "plain", f"https://git.example/{namespace}/plain.git", {}))
    apply(admin, _application(namespace, "zz-again", argo_url.removesuffix(".git"), enabled))
    apply(
        admin,
        _git_repository(
            namespace,
            "flux",
            flux_url,
            {
                ENABLED: "true",
                CREDENTIALS_SECRET: ssh_secret,
                FLUX_KUSTOMIZATION: f"{namespace}/apps",
                STATE_BRANCH: "rollout-state",
            },
        ),
    )
    # the bad ones: a Secret that is not there, a URL the Secret does not name, a pinned tag
    apply(
        admin,
        _application(
            namespace,
            "no-secret",
            f"https://git.example/{namespace}/a.git",
            {ENABLED: "true", CREDENTIALS_SECRET: f"missing-{namespace}"},
        ),
    )
    apply(
        admin, _application(namespace, "elsewhere", f"https://evil.example/{namespace}/x", enabled)
    )
    apply(
        admin,
        _application(
            namespace,
            "pinned",
            f"https://git.example/{namespace}/p.git",
            enabled,
            targetRevision="v1.2.0",
        ),
    )
    return https_secret, ssh_secret, argo_url, flux_url


def test_discovery_as_the_fleet_account_finds_the_annotated_repos_and_writes_their_credentials(
    kube_server: KubeServer, admin: Kube, namespace: str, fleet_rbac: str, tmp_path: Path
) -> None:
    https_secret, ssh_secret, argo_url, flux_url = _objects(admin, namespace)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "not-ours").mkdir()
    kube = kube_server.connect(impersonate=fleet_rbac, namespace=FLEET)
    try:
        discovery = RepoDiscovery(kube, namespace=FLEET, secrets_dir=secrets)
        found = discovery.discover()
        https_dir = secrets / secret_dir_name(https_secret)
        ssh_dir = secrets / secret_dir_name(ssh_secret)
        assert _mine(found.entries, namespace) == [
            {
                "credentials": {"tokenFile": str(https_dir / "token"), "username": "bot"},
                "experimentPaths": ["apps"],
                "gitops": {"argocdApplication": f"{namespace}/argo"},
                "interval": 20,
                "mainBranch": "main",
                "repo": argo_url,
            },
            {
                "credentials": {
                    "knownHostsFile": str(ssh_dir / "known_hosts"),
                    "sshKeyFile": str(ssh_dir / "identity"),
                },
                "gitops": {
                    "fluxGitRepository": f"{namespace}/flux",
                    "fluxKustomization": f"{namespace}/apps",
                },
                "mainBranch": "prod",
                "repo": flux_url,
                "stateBranch": "rollout-state",
            },
        ]
        problems = "\n".join(_about(found.problems, namespace))
        assert f"argocd Application {namespace}/no-secret: the Secret {FLEET}/missing-" in problems
        assert "does not exist: create it" in problems
        assert f"argocd Application {namespace}/elsewhere: the Secret" in problems
        assert "does not name this repository in its key url" in problems
        assert f"argocd Application {namespace}/pinned: targetRevision 'v1.2.0'" in problems
        assert (
            f"argocd Application {namespace}/zz-again: its repository is already an Env repo "
            f"through argocd Application {namespace}/argo"
        ) in problems
        assert len(_about(found.problems, namespace)) == 4
        assert "plain" not in problems
        assert "t0ken-1" not in problems

        # the files: their content, private to the process
        assert (https_dir / "token").read_text() == "t0ken-1"
        assert (ssh_dir / "identity").read_text() == KEY + "\n"
        assert (ssh_dir / "known_hosts").read_text() == HOSTS + "\n"
        assert sorted(p.name for p in https_dir.iterdir()) == ["token"]
        assert {_mode(https_dir), _mode(ssh_dir)} == {0o700}
        assert {_mode(p) for d in (https_dir, ssh_dir) for p in d.iterdir()} == {0o600}

        # again, nothing changed: nothing rewritten, the same repos
        written = discovery.files_written
        assert discovery.discover().same_repos(found)
        assert discovery.files_written == written

        # a rotated token is rewritten; a repo no longer annotated loses its files
        apply(
            admin,
            _secret(
                https_secret,
                {"password": "t0ken-2", "url": f"https://git.example/{namespace}/"},
            ),
        )
        apply(admin, _git_repository(namespace, "flux", flux_url, {ENABLED: "false"}))
        again = discovery.discover()
        assert not again.same_repos(found)
        assert [e["repo"] for e in _mine(again.entries, namespace)] == [argo_url]
        assert (https_dir / "token").read_text() == "t0ken-2"
        assert discovery.files_written == written + 1
        assert not ssh_dir.exists()
        assert (secrets / "not-ours").is_dir()  # never removes what it did not write

        # Secrets: read by name only, never listed
        resource = kube.resource("v1", "Secret")
        with pytest.raises(ForbiddenError):
            kube.request("list", "GET", resource.path(FLEET), target=resource.target(FLEET))
    finally:
        kube.close()


def test_a_secret_outside_the_reconcilers_namespace_is_a_problem_not_a_read(
    kube_server: KubeServer, admin: Kube, namespace: str, fleet_rbac: str, tmp_path: Path
) -> None:
    url = f"https://git.example/{namespace}/env.git"
    apply(
        admin,
        _application(namespace, "env", url, {ENABLED: "true", CREDENTIALS_SECRET: "push"}),
    )
    kube = kube_server.connect(impersonate=fleet_rbac, namespace=FLEET)
    try:
        # Secrets are granted in its own namespace only: here, one elsewhere is asked for
        found = RepoDiscovery(kube, namespace=namespace, secrets_dir=tmp_path).discover()
    finally:
        kube.close()
    assert _mine(found.entries, namespace) == []
    assert _about(found.problems, namespace) == [
        (
            f"argocd Application {namespace}/env: the Secret {namespace}/push cannot be read: "
            f"RBAC denies get on it (grant get on secrets in {namespace}: "
            "manifests/fleet/rbac.yaml)"
        )
    ]


def test_without_rbac_each_kind_is_a_problem_and_discovery_goes_on(
    kube_server: KubeServer, tmp_path: Path
) -> None:
    kube = kube_server.connect(impersonate="system:serviceaccount:nowhere:nobody")
    try:
        found = RepoDiscovery(kube, namespace="nowhere", secrets_dir=tmp_path).discover()
    finally:
        kube.close()
    assert found.entries == ()
    assert [p.split(":")[0] for p in found.problems] == [
        "argocd Applications cannot be listed",
        "flux GitRepositories cannot be listed",
    ]
    assert all("RBAC denies list" in p and "manifests/fleet" in p for p in found.problems)


def test_a_kind_whose_crd_is_not_installed_is_simply_absent(admin: Kube) -> None:
    assert list_everywhere(admin, "example.invalid/v1", "Application") is None
    assert list_everywhere(admin, "argoproj.io/v1alpha1", "NoSuchKind") is None
    assert isinstance(list_everywhere(admin, "argoproj.io/v1alpha1", "Application"), list)
