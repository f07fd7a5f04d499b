"""Fixtures for tests against a real kube-apiserver and etcd (``hack/kube-test-server``).

Once per session: build the binaries if they are not cached (showing the build's
progress), start the server with ``hack/kube-test-server up`` (the same code as by hand),
install our CRDs from ``tests/crds``, and stop everything at the end. The server follows
this process: if pytest dies, it stops too. A binary that cannot be built or started
fails the tests with the reason; it never skips them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler.cluster.client import MERGE_PATCH, Kube, KubeSettings, RetryPolicy, connect
from reconciler.cluster.errors import NotFoundError
from reconciler.cluster.resources import ObjectRef

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "kube-test-server"
CRDS = ROOT / "tests" / "crds"
MANIFESTS = ROOT / "manifests"
APPLY_PATCH = "application/apply-patch+yaml"
_names = itertools.count()


@dataclass(frozen=True)
class KubeServer:
    """The running test server."""

    dir: Path
    kubeconfig: Path
    server: str
    tokens: dict[str, str]

    def connect(self, *, impersonate: str | None = None, namespace: str | None = None) -> Kube:
        """A connection as admin, or as ``impersonate`` (a user or ServiceAccount name)."""
        return connect(
            KubeSettings(
                kubeconfig=str(self.kubeconfig),
                impersonate=impersonate,
                namespace=namespace,
                retry=RetryPolicy(attempts=3, initial_wait=0.05, max_wait=0.5),
            )
        )


def _script(*args: str, check_output: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=check_output,
        text=True,
        check=False,
        cwd=ROOT,
    )


def _ensure_built(config: pytest.Config) -> None:
    paths = _script("paths")
    if paths.returncode != 0:
        pytest.fail(f"hack/kube-test-server paths failed:\n{paths.stderr}")
    if not json.loads(paths.stdout)["missing"]:
        return
    # The first build on a machine takes minutes: show its progress instead of hiding it.
    capture = config.pluginmanager.getplugin("capturemanager")
    showing = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with showing:
        sys.stderr.write("\nkube-test-server: building kube-apiserver and etcd once\n")
        built = _script("build", check_output=False)
    if built.returncode != 0:
        pytest.fail(
            "kube-apiserver/etcd could not be built by `hack/kube-test-server build` "
            "(see the messages above): the Kubernetes tests need them"
        )


@pytest.fixture(scope="session")
def kube_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[KubeServer]:
    """kube-apiserver + etcd with TLS, static tokens and RBAC, and our CRDs, for the session."""
    _ensure_built(pytestconfig)
    directory = tmp_path_factory.mktemp("kube-test-server")
    up = _script("up", "--dir", str(directory), "--follow-pid", str(os.getpid()), "--quiet")
    if up.returncode != 0:
        pytest.fail(f"hack/kube-test-server up failed:\n{up.stderr}")
    try:
        info = json.loads((directory / "server.json").read_text())
        server = KubeServer(directory, Path(info["kubeconfig"]), info["server"], info["tokens"])
        admin = server.connect()
        try:
            install_crds(admin)
        finally:
            admin.close()
        yield server
    finally:
        _script("down", "--dir", str(directory))


@pytest.fixture(scope="session")
def admin(kube_server: KubeServer) -> Iterator[Kube]:
    """A connection with cluster-admin rights (the tests' own hands)."""
    kube = kube_server.connect()
    yield kube
    kube.close()


@pytest.fixture
def namespace(admin: Kube) -> str:
    """A fresh namespace for one test."""
    name = f"t{next(_names)}-{os.getpid()}"
    ensure_namespace(admin, name)
    return name


# -- helpers ------------------------------------------------------------------------------


def load_yaml(path: Path) -> list[dict[str, Any]]:
    """Every document of a YAML file (or of a rendered multi-document string)."""
    yaml = YAML(typ="safe")
    return [d for d in yaml.load_all(path.read_text()) if isinstance(d, dict)]


def load_yaml_text(text: str) -> list[dict[str, Any]]:
    """Every document of a multi-document YAML string."""
    yaml = YAML(typ="safe")
    return [d for d in yaml.load_all(text) if isinstance(d, dict)]


def ref_of(obj: dict[str, Any]) -> ObjectRef:
    """The reference of a manifest."""
    meta = obj["metadata"]
    return ObjectRef(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))


def apply(kube: Kube, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply ``obj`` (create or update), as ``kubectl apply --server-side``."""
    ref = ref_of(obj)
    resource, namespace = kube.locate(ref)
    body = dict(obj)
    if namespace:
        body["metadata"] = {**obj["metadata"], "namespace": namespace}
    query = {"fieldManager": "tests", "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    return kube.request(
        "apply",
        "PATCH",
        resource.path(namespace, ref.name),
        target=resource.target(namespace, ref.name),
        body=body,
        content_type=APPLY_PATCH,
        query=query,
    )


def write_status(kube: Kube, ref: ObjectRef, status: dict[str, Any]) -> None:
    """Write ``status`` through the status subresource, as a controller would."""
    kube.patch(ref, {"status": status}, content_type=MERGE_PATCH, subresource="status")


def delete(kube: Kube, ref: ObjectRef) -> None:
    """Delete an object if it exists."""
    resource, namespace = kube.locate(ref)
    with contextlib.suppress(NotFoundError):
        kube.request(
            "delete",
            "DELETE",
            resource.path(namespace, ref.name),
            target=resource.target(namespace, ref.name),
        )


def ensure_namespace(kube: Kube, name: str) -> None:
    """Create a namespace unless it exists."""
    apply(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def install_crds(kube: Kube, timeout: float = 30.0) -> None:
    """Apply every CRD under tests/crds and wait until each is Established."""
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in load_yaml(path):
            apply(kube, crd)
            names.append(crd["metadata"]["name"])
    deadline = time.monotonic() + timeout
    for name in names:
        ref = ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        while True:
            crd = kube.get(ref) or {}
            conditions = {
                c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])
            }
            if conditions.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"CRD {name} not Established after {timeout} s: {conditions}")
            time.sleep(0.05)


def deployment(name: str, namespace: str, replicas: int = 1) -> dict[str, Any]:
    """A minimal valid Deployment manifest."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }
