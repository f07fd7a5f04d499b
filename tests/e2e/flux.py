"""An end-to-end world where the real Flux, not the test, puts main on the cluster.

``FluxWorld`` serves the Env repo over HTTPS (Basic auth, a CA of its own), with a
``.sourceignore`` that keeps experiment files out, and sets up the session's Flux
(``tests/fixtures/operators.py``) from ``kubectl kustomize manifests/flux`` as the README
says to: the reconciler's RBAC as rendered, the example GitRepository and Kustomization
(only the URL, the names, the target namespace and a one-second interval differ; for the
test that proves they matter, the ``ssa: IfNotPresent`` patches are left out), and the
reconciler run with the overlay's config file as its ServiceAccount (a TokenRequest token).

``Sampler`` looks every few milliseconds, in a thread, at what a person would watch:
the VirtualService's weights, the Kustomization's ``lastAppliedRevision`` and the Env
repo's branch tips, with the time of each change.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pygit2

from reconciler.cluster.client import Kube
from reconciler.cluster.handoff import FLUX_KUSTOMIZE_API, FLUX_SOURCE_API, names_commit
from reconciler.cluster.resources import ObjectRef
from reconciler.errors import ReconcilerError
from tests.e2e.envrepo import APP, STATE, EnvRepo
from tests.e2e.world import World, read_weights
from tests.fixtures.https_git import TOKEN, USERNAME, serve_root
from tests.fixtures.kube import apply, delete, ensure_namespace, ref_of
from tests.fixtures.net import CertificateAuthority
from tests.fixtures.operators import FLUX_NAMESPACE, FluxCluster
from tests.integration.kube.manifests import RBAC_KINDS, render

SOURCEIGNORE = "**/experiment*.yaml\n"
APP_NAMESPACE = "bookinfo"
"""The example app's namespace in manifests/core/traffic-namespaces.yaml."""
SSA_ANNOTATION = "kustomize.toolkit.fluxcd.io/ssa"
SAMPLE_EVERY = 0.05


class FluxWorld(World):
    """A ``World`` whose cluster is the Flux cluster, synced from the Env repo by Flux."""

    def __init__(
        self, tmp: Path, *, flux: FluxCluster, annotate: bool = True, **options: Any
    ) -> None:
        """``annotate``: keep the Kustomization's ``ssa: IfNotPresent`` patches."""
        admin = flux.server.connect()
        super().__init__(tmp, kube_server=flux.server, admin=admin, **options)
        self._closers.append(admin.close)
        self.flux = flux
        self.annotate = annotate
        (tmp / "env-ca").mkdir()
        self.ca = CertificateAuthority.create(tmp / "env-ca", "env-ca")
        self.config_file = tmp / "config.yaml"
        self.kubeconfig = tmp / "reconciler.kubeconfig"
        self.overlay: list[dict[str, Any]] = []
        """``kubectl kustomize manifests/flux``, rendered by ``sync_cluster``."""
        self.token_file = tmp / "token"
        self.token_file.write_text(f"{TOKEN}\n")
        self.source = ObjectRef(FLUX_SOURCE_API, "GitRepository", self.namespace, FLUX_NAMESPACE)
        self.kustomization = ObjectRef(
            FLUX_KUSTOMIZE_API, "Kustomization", self.namespace, FLUX_NAMESPACE
        )

    # -- the Env repo over HTTPS, with the file that keeps experiments out of Flux ----------

    def create_repo(self) -> EnvRepo:
        """The Env repo behind HTTPS with Basic auth, main with a ``.sourceignore``."""
        root = self.tmp / "served"
        path = root / "env.git"
        EnvRepo.create(path, "")
        cert, key = self.ca.issue(self.tmp, "env-server")
        stack = contextlib.ExitStack()
        base, _counters = stack.enter_context(serve_root(root, cert, key))
        self._closers.append(stack.close)
        repo = EnvRepo(path, f"{base}/env.git")
        repo.commit({".sourceignore": SOURCEIGNORE}, "flux: keep experiment files out")
        return repo

    # -- Flux, as the README sets it up ---------------------------------------------------

    def flux_objects(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The rendered overlay's GitRepository and Kustomization, for this world's Env repo."""
        (source,) = copy.deepcopy([o for o in self.overlay if o["kind"] == "GitRepository"])
        (kustomization,) = copy.deepcopy([o for o in self.overlay if o["kind"] == "Kustomization"])
        for doc in (source, kustomization):
            assert doc["metadata"]["namespace"] == FLUX_NAMESPACE
            doc["metadata"]["name"] = self.namespace
            doc["spec"]["interval"] = "1s"
        source["spec"]["url"] = self.repo.url
        source["spec"]["secretRef"]["name"] = f"{self.namespace}-git"
        kustomization["spec"]["targetNamespace"] = self.namespace
        kustomization["spec"]["sourceRef"]["name"] = self.namespace
        if not self.annotate:
            del kustomization["spec"]["patches"]
        return source, kustomization

    def sync_cluster(self) -> None:
        """Apply ``kubectl kustomize manifests/flux`` as the README says; wait for Flux.

        As a user would: the reconciler's RBAC as rendered, the traffic RoleBinding copied
        into this world's namespace (``core/traffic-namespaces.yaml`` says to), the Git
        credentials Flux uses in a Secret, and the example GitRepository and Kustomization
        pointed at this world's Env repo. The reconciler runs as the overlay's
        ServiceAccount with the overlay's config file (``run`` below).
        """
        ensure_namespace(self.admin, self.namespace)
        self.overlay = render("flux")
        for obj in self.overlay:
            if obj["kind"] in RBAC_KINDS and obj["metadata"].get("namespace") != APP_NAMESPACE:
                apply(self.admin, obj)
            elif obj["kind"] == "RoleBinding":  # the traffic binding of the example app
                binding = copy.deepcopy(obj)
                binding["metadata"]["namespace"] = self.namespace
                apply(self.admin, binding)
                self.own(ref_of(binding))
        (configmap,) = [o for o in self.overlay if o["kind"] == "ConfigMap"]
        self.config_file.write_text(configmap["data"]["config.yaml"])
        self.kubeconfig.write_text(json.dumps(self._service_account_kubeconfig()))
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{self.namespace}-git", "namespace": FLUX_NAMESPACE},
            "data": {
                key: base64.b64encode(value).decode()
                for key, value in {
                    "username": USERNAME.encode(),
                    "password": TOKEN.encode(),
                    "ca.crt": self.ca.cert.read_bytes(),
                }.items()
            },
        }
        # the Kustomization goes first when the world closes: Flux prunes what it applied
        for doc in (secret, *reversed(self.flux_objects())):
            apply(self.admin, doc)
            self.own(ref_of(doc))
        self.wait_applied(self.repo.tip("main") or "", "main")

    def _service_account_kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig with a token of the overlay's ServiceAccount (TokenRequest)."""
        (account,) = [o for o in self.overlay if o["kind"] == "ServiceAccount"]
        ref = ObjectRef("v1", "ServiceAccount", account["metadata"]["name"], FLUX_NAMESPACE)
        resource, namespace = self.admin.locate(ref)
        answer = self.admin.request(
            "create",
            "POST",
            resource.path(namespace, ref.name, "token"),
            target=resource.target(namespace, ref.name),
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        admin_config = json.loads(self.kube_server.kubeconfig.read_text())
        return {
            **admin_config,
            "users": [{"name": "reconciler", "user": {"token": answer["status"]["token"]}}],
            "contexts": [
                {
                    "name": "reconciler",
                    "context": {"cluster": "kube-test-server", "user": "reconciler"},
                }
            ],
            "current-context": "reconciler",
        }

    def wait_applied(self, commit: str, what: str, timeout: float = 60.0) -> str:
        """Wait until the Kustomization's ``lastAppliedRevision`` names ``commit``."""

        def applied() -> str | None:
            revision = self.applied_revision()
            return revision if revision and names_commit(revision, commit) else None

        return self.wait(f"Flux to apply {what} ({commit[:10]})", applied, timeout=timeout)

    def applied_revision(self) -> str | None:
        """The Kustomization's ``status.lastAppliedRevision``."""
        obj = self.admin.get(self.kustomization) or {}
        revision = (obj.get("status") or {}).get("lastAppliedRevision")
        return str(revision) if revision else None

    def kustomization_status(self) -> dict[str, Any]:
        """The Kustomization's status, for failure messages."""
        return dict((self.admin.get(self.kustomization) or {}).get("status") or {})

    def reconciliations(self) -> int:
        """How many times kustomize-controller finished reconciling this world's Kustomization."""
        needle = f'"name":"{self.namespace}","namespace":"{FLUX_NAMESPACE}"'
        return sum(
            1
            for line in self.flux.kustomize_log().splitlines()
            if needle in line and "Reconciliation finished" in line
        )

    def app_objects(self) -> list[ObjectRef]:
        """What Flux creates from main's ``apps/``: the Deployments and the VirtualService."""
        return [ref_of(doc) for doc in self.manifests()]

    def wipe_cluster(self) -> None:
        """Delete what Flux created in the namespace: a cluster rebuilt from nothing."""
        refs = self.app_objects()
        for ref in refs:
            delete(self.admin, ref)
        for ref in refs:
            self.wait(f"{ref} to be gone", self._absent(ref))

    def _env(self, failpoints: Any) -> dict[str, str]:
        # the overlay's config file, with what differs here from a pod in flux-system
        env = super()._env(failpoints)
        del env["RECONCILER_WEIGHT_NAMESPACES"]  # the Kustomization's targetNamespace says it
        env["RECONCILER_CONFIG"] = str(self.config_file)
        env["RECONCILER_KUBECONFIG"] = str(self.kubeconfig)
        env["RECONCILER_NAMESPACE"] = FLUX_NAMESPACE  # the pod's namespace: the Leases
        env["RECONCILER_TOKEN_FILE"] = str(self.token_file)
        env["RECONCILER_CA_FILE"] = str(self.ca.cert)
        env["RECONCILER_FLUX_GITREPOSITORY"] = f"{FLUX_NAMESPACE}/{self.namespace}"
        env["RECONCILER_FLUX_KUSTOMIZATION"] = f"{FLUX_NAMESPACE}/{self.namespace}"
        env["RECONCILER_SYNC_TIMEOUT"] = "60"
        return env


@dataclass(frozen=True)
class Sample:
    """What was seen at one moment (``at``: ``time.monotonic()``)."""

    at: float
    weights: dict[str, int] | None
    applied: str | None
    main: str | None
    state: str | None
    live: bool
    """Whether the state branch holds a live experiment document."""


class Sampler:
    """Samples the cluster and the Env repo in a thread until ``stop``."""

    def __init__(self, world: FluxWorld) -> None:
        self._world = world
        self._kube: Kube = world.kube_server.connect()
        self._repo = pygit2.Repository(str(world.repo.path))
        self.samples: list[Sample] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flux-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def catch_up(self) -> None:
        """Wait until a sample taken after this call is in."""
        now = time.monotonic()
        deadline = now + 10.0
        while not (self.samples and self.samples[-1].at > now):
            assert time.monotonic() < deadline, "the sampler stopped sampling"
            time.sleep(SAMPLE_EVERY)

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._kube.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(ReconcilerError):
                self.samples.append(self._sample())
            time.sleep(SAMPLE_EVERY)

    def _sample(self) -> Sample:
        namespace = self._world.namespace
        weights = read_weights(self._kube, namespace)
        obj = self._kube.get(self._world.kustomization) or {}
        applied = (obj.get("status") or {}).get("lastAppliedRevision")
        main = self._tip("main")
        state = self._tip(STATE)
        live = False
        if state is not None:
            tree = self._repo[state].peel(pygit2.Tree)
            live = f"experiments/{namespace}" in tree
        return Sample(time.monotonic(), weights, applied, main, state, live)

    def _tip(self, branch: str) -> str | None:
        ref = self._repo.references.get(f"refs/heads/{branch}")
        return str(ref.target) if ref is not None else None

    # -- reading the samples --------------------------------------------------------------

    def first(self, what: str, condition: Any, since: float = 0.0) -> Sample:
        """The first sample at or after ``since`` for which ``condition(sample)`` holds."""
        for sample in list(self.samples):
            if sample.at >= since and condition(sample):
                return sample
        raise AssertionError(f"never seen: {what}")

    def reverts(self, main_split: dict[str, int], start: float, end: float) -> int:
        """Times the weights went back to ``main_split`` from other weights in ``[start, end]``."""
        count = 0
        previous: dict[str, int] | None = None
        for sample in self.samples:
            if not start <= sample.at <= end or sample.weights is None:
                continue
            if previous is not None and previous != main_split and sample.weights == main_split:
                count += 1
            previous = sample.weights
        return count


__all__ = ["APP", "SOURCEIGNORE", "SSA_ANNOTATION", "FluxWorld", "Sample", "Sampler"]
