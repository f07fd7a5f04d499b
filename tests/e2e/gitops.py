"""End-to-end worlds where the real Flux or Argo CD, not the test, puts main on the cluster.

An ``OperatorWorld`` serves the Env repo over HTTPS (Basic auth, a CA of its own) and sets
the operator up from ``kubectl kustomize manifests/<operator>`` as the README says to: the
reconciler's RBAC as rendered, the traffic RoleBinding copied into the world's namespace
(``core/traffic-namespaces.yaml`` says to), and the overlay's example objects pointed at
this world's Env repo (only the URL, the names, the target namespace and the polling
differ). The reconciler runs with the overlay's config file as the overlay's
ServiceAccount (a TokenRequest token), the pod's namespace being the operator's.

``FluxWorld``: a GitRepository with the Git credentials in a Secret, a Kustomization whose
``patches`` add ``kustomize.toolkit.fluxcd.io/ssa: IfNotPresent`` (left out when
``protect=False``), and a ``.sourceignore`` on main. ``ArgoCDWorld``: a repository Secret,
the Git server's CA where the repo server looks for it, and an Application with automated
sync, prune and selfHeal, ``ignoreDifferences`` on the weights and
``RespectIgnoreDifferences=true`` (left out when ``protect=False``).

``Sampler`` looks every few milliseconds, in a thread, at what a person would watch: the
VirtualService's weights, the revision the operator reports as applied, and the Env repo's
branch tips, with the time of each change. The weights' changes are also followed by a
Kubernetes watch, which delivers every write: a revert the reconciler undoes within a
few milliseconds (its tick can follow the operator's apply that closely, both woken by
the same commit) escapes a poll but not the watch.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pygit2
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubetestserver.operators import argocd_tls_dir

from reconciler.cluster.client import MERGE_PATCH, Kube
from reconciler.cluster.handoff import (
    ARGOCD_API,
    FLUX_KUSTOMIZE_API,
    FLUX_SOURCE_API,
    names_commit,
)
from reconciler.cluster.resources import ObjectRef
from reconciler.errors import ReconcilerError
from tests.e2e.envrepo import STATE, EnvRepo
from tests.e2e.world import VIRTUAL_SERVICE, World, read_weights, route_weights, virtual_service
from tests.fixtures.https_git import TOKEN, USERNAME, serve_root
from tests.fixtures.kube import apply, delete, ensure_namespace, ref_of
from tests.fixtures.net import CertificateAuthority
from tests.fixtures.operators import ARGOCD_NAMESPACE, FLUX_NAMESPACE, OperatorCluster
from tests.integration.kube.manifests import RBAC_KINDS, render

SOURCEIGNORE = "**/experiment*.yaml\n"
SSA_ANNOTATION = "kustomize.toolkit.fluxcd.io/ssa"
RESPECT_IGNORE = "RespectIgnoreDifferences=true"
PRUNE_IN_BACKGROUND = "PrunePropagationPolicy=background"
APP_NAMESPACE = "bookinfo"
"""The example app's namespace in manifests/core/traffic-namespaces.yaml."""
SAMPLE_EVERY = 0.05


def _secret(
    name: str, namespace: str, values: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Secret holding ``values`` as text."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": values}


class OperatorWorld(World):
    """A ``World`` whose cluster is synced from the Env repo by a real GitOps operator."""

    overlay_name = ""
    """``manifests/<overlay_name>``."""
    operator_namespace = ""
    setup_files: tuple[str, ...] = ()
    """Files the operator's set-up adds to main."""
    unprotected_fix = ""
    """What ``doctor`` must tell a user to add when the overlay's protection is left out."""

    def __init__(
        self,
        tmp: Path,
        *,
        operator: OperatorCluster,
        protect: bool = True,
        **options: Any,
    ) -> None:
        """``protect``: keep what stops the operator from undoing the weights."""
        admin = operator.server.connect()
        super().__init__(tmp, kube_server=operator.server, admin=admin, **options)
        self._closers.append(admin.close)
        self.operator = operator
        self.protect = protect
        (tmp / "env-ca").mkdir()
        self.ca = CertificateAuthority.create(tmp / "env-ca", "env-ca")
        self.config_file = tmp / "config.yaml"
        self.kubeconfig = tmp / "reconciler.kubeconfig"
        self.token_file = tmp / "token"
        self.token_file.write_text(f"{TOKEN}\n")
        self.overlay: list[dict[str, Any]] = []
        """``kubectl kustomize manifests/<overlay_name>``, rendered by ``sync_cluster``."""

    # -- the Env repo over HTTPS -----------------------------------------------------------

    def create_repo(self) -> EnvRepo:
        """The Env repo behind HTTPS with Basic auth."""
        root = self.tmp / "served"
        path = root / "env.git"
        EnvRepo.create(path, "")
        cert, key = self.ca.issue(self.tmp, "env-server")
        stack = contextlib.ExitStack()
        base, _counters = stack.enter_context(serve_root(root, cert, key))
        self._closers.append(stack.close)
        return EnvRepo(path, f"{base}/env.git")

    # -- the operator, as the README sets it up --------------------------------------------

    def sync_cluster(self) -> None:
        """Apply the rendered overlay as the README says; wait until the operator applied main."""
        ensure_namespace(self.admin, self.namespace)
        self.overlay = render(self.overlay_name)
        for obj in self.overlay:
            if obj["kind"] in RBAC_KINDS and obj["metadata"].get("namespace") != APP_NAMESPACE:
                apply(self.admin, obj)
            elif obj["kind"] == "RoleBinding":  # the traffic binding of the example app
                binding = copy.deepcopy(obj)
                binding["metadata"]["namespace"] = self.namespace
                apply(self.admin, binding)
                self.own(ref_of(binding))
        (configmap,) = self.rendered("ConfigMap")
        self.config_file.write_text(configmap["data"]["config.yaml"])
        self.kubeconfig.write_text(json.dumps(self._service_account_kubeconfig()))
        # owned objects are deleted in this order when the world closes: the operator's
        # own objects first, so that it prunes what it applied
        for doc in self.operator_objects():
            apply(self.admin, doc)
            self.own(ref_of(doc))
        self.wait_applied(self.repo.tip("main") or "", "main")

    def rendered(self, kind: str) -> list[dict[str, Any]]:
        """Copies of the rendered overlay's objects of ``kind``."""
        return copy.deepcopy([o for o in self.overlay if o["kind"] == kind])

    def operator_objects(self) -> list[dict[str, Any]]:
        """The objects that hand this world's Env repo to the operator."""
        raise NotImplementedError

    def _service_account_kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig with a token of the overlay's ServiceAccount (TokenRequest)."""
        (account,) = self.rendered("ServiceAccount")
        ref = ObjectRef(
            "v1", "ServiceAccount", account["metadata"]["name"], account["metadata"]["namespace"]
        )
        resource, namespace = self.admin.locate(ref)
        answer = self.admin.request(
            "create",
            "POST",
            resource.path(namespace, ref.name, "token"),
            target=resource.target(namespace, ref.name),
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        admin_config = json.loads(self.kube_server.kubeconfig.read_text())
        context = {"cluster": "kube-test-server", "user": "reconciler"}
        return {
            **admin_config,
            "users": [{"name": "reconciler", "user": {"token": answer["status"]["token"]}}],
            "contexts": [{"name": "reconciler", "context": context}],
            "current-context": "reconciler",
        }

    def wait_applied(self, commit: str, what: str, timeout: float = 60.0) -> str:
        """Wait until the operator reports ``commit`` as applied."""

        def applied() -> str | None:
            revision = self.applied_revision()
            return revision if revision and names_commit(revision, commit) else None

        return self.wait(f"the operator to apply {what} ({commit[:10]})", applied, timeout=timeout)

    def applied_revision(self, kube: Kube | None = None) -> str | None:
        """The revision the operator reports as applied."""
        raise NotImplementedError

    def reconciliations(self) -> int:
        """How many times the operator compared the cluster with Git for this world."""
        raise NotImplementedError

    def deployed_kinds(self) -> set[str]:
        """The kinds the operator says it applied."""
        raise NotImplementedError

    def created_by_operator(self, obj: dict[str, Any]) -> bool:
        """Whether the operator's marks are on ``obj``."""
        raise NotImplementedError

    def protected(self) -> bool:
        """Whether the operator, as the cluster shows it set up, leaves the weights alone."""
        raise NotImplementedError

    def assert_handed_off(self, outcome: str) -> None:
        """The reconciler asked the operator to look at once, and the operator did."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """The operator object's status, for failure messages."""
        raise NotImplementedError

    def suspend(self, *, suspended: bool = True) -> None:
        """Stop (or, ``suspended=False``, restart) the operator applying main."""
        raise NotImplementedError

    def fetched_revision(self) -> str | None:
        """The revision of main the operator fetched last (applied or not)."""
        raise NotImplementedError

    def wait_fetched(self, commit: str, what: str, timeout: float = 60.0) -> str:
        """Wait until the operator fetched ``commit`` (a suspended one too)."""

        def fetched() -> str | None:
            revision = self.fetched_revision()
            return revision if revision and names_commit(revision, commit) else None

        return self.wait(f"the operator to fetch {what} ({commit[:10]})", fetched, timeout=timeout)

    def app_objects(self) -> list[ObjectRef]:
        """What the operator creates from main's ``apps/``: the Deployments, the VirtualService."""
        return [ref_of(doc) for doc in self.manifests()]

    def wipe_cluster(self) -> None:
        """Delete what the operator created in the namespace: a cluster rebuilt from nothing."""
        refs = self.app_objects()
        for ref in refs:
            delete(self.admin, ref)
        for ref in refs:
            self.wait(f"{ref} to be gone", self._absent(ref))

    def _env(self, failpoints: Any) -> dict[str, str]:
        # the overlay's config file, with what differs here from a pod of the overlay
        env = super()._env(failpoints)
        del env["RECONCILER_WEIGHT_NAMESPACES"]  # the operator's target namespace says it
        env["RECONCILER_CONFIG"] = str(self.config_file)
        env["RECONCILER_KUBECONFIG"] = str(self.kubeconfig)
        env["RECONCILER_NAMESPACE"] = self.operator_namespace  # the pod's: its Leases
        env["RECONCILER_TOKEN_FILE"] = str(self.token_file)
        env["RECONCILER_CA_FILE"] = str(self.ca.cert)
        env["RECONCILER_SYNC_TIMEOUT"] = "60"
        return env

    def count_log_lines(self, process: str, *needles: str) -> int:
        """Lines of an operator process's log that hold every one of ``needles``."""
        return sum(
            1
            for line in self.operator.log(process).splitlines()
            if all(needle in line for needle in needles)
        )


class FluxWorld(OperatorWorld):
    """Flux's GitRepository and Kustomization of ``manifests/flux`` sync the Env repo."""

    overlay_name = "flux"
    operator_namespace = FLUX_NAMESPACE
    setup_files = (".sourceignore",)
    unprotected_fix = f"{SSA_ANNOTATION}: IfNotPresent"

    def __init__(self, tmp: Path, **options: Any) -> None:
        """As ``OperatorWorld``."""
        super().__init__(tmp, **options)
        self.source = ObjectRef(FLUX_SOURCE_API, "GitRepository", self.namespace, FLUX_NAMESPACE)
        self.kustomization = ObjectRef(
            FLUX_KUSTOMIZE_API, "Kustomization", self.namespace, FLUX_NAMESPACE
        )

    def create_repo(self) -> EnvRepo:
        """With a ``.sourceignore`` on main that keeps experiment files out."""
        repo = super().create_repo()
        repo.commit({".sourceignore": SOURCEIGNORE}, "flux: keep experiment files out")
        return repo

    def operator_objects(self) -> list[dict[str, Any]]:
        """Kustomization, GitRepository and its Secret, polling every second."""
        (source,) = self.rendered("GitRepository")
        (kustomization,) = self.rendered("Kustomization")
        for doc in (source, kustomization):
            assert doc["metadata"]["namespace"] == FLUX_NAMESPACE
            doc["metadata"]["name"] = self.namespace
            doc["spec"]["interval"] = "1s"
        source["spec"]["url"] = self.repo.url
        source["spec"]["secretRef"]["name"] = f"{self.namespace}-git"
        kustomization["spec"]["targetNamespace"] = self.namespace
        kustomization["spec"]["sourceRef"]["name"] = self.namespace
        if not self.protect:
            del kustomization["spec"]["patches"]
        credentials = {
            "username": USERNAME,
            "password": TOKEN,
            "ca.crt": self.ca.cert.read_text(),
        }
        secret = _secret(f"{self.namespace}-git", FLUX_NAMESPACE, credentials)
        return [secret, source, kustomization]

    def _env(self, failpoints: Any) -> dict[str, str]:
        env = super()._env(failpoints)
        env["RECONCILER_FLUX_GITREPOSITORY"] = f"{FLUX_NAMESPACE}/{self.namespace}"
        env["RECONCILER_FLUX_KUSTOMIZATION"] = f"{FLUX_NAMESPACE}/{self.namespace}"
        return env

    def applied_revision(self, kube: Kube | None = None) -> str | None:
        """The Kustomization's ``status.lastAppliedRevision``."""
        revision = self.status(kube).get("lastAppliedRevision")
        return str(revision) if revision else None

    def status(self, kube: Kube | None = None) -> dict[str, Any]:
        """The Kustomization's status."""
        return dict(((kube or self.admin).get(self.kustomization) or {}).get("status") or {})

    def reconciliations(self) -> int:
        """Reconciliations kustomize-controller finished for this world's Kustomization."""
        return self.count_log_lines(
            "kustomize-controller",
            f'"name":"{self.namespace}","namespace":"{FLUX_NAMESPACE}"',
            "Reconciliation finished",
        )

    def deployed_kinds(self) -> set[str]:
        """The kinds of the Kustomization's inventory (ids end in ``_<group>_<kind>``)."""
        entries = self.status().get("inventory", {}).get("entries", [])
        return {entry["id"].rsplit("_", 1)[-1] for entry in entries}

    def created_by_operator(self, obj: dict[str, Any]) -> bool:
        """kustomize-controller's label names this world's Kustomization."""
        labels = obj["metadata"].get("labels") or {}
        return labels.get("kustomize.toolkit.fluxcd.io/name") == self.namespace

    def protected(self) -> bool:
        """The Kustomization's patches added ``ssa: IfNotPresent`` to the VirtualService."""
        obj = self.admin.get(virtual_service(self.namespace)) or {"metadata": {}}
        return (obj["metadata"].get("annotations") or {}).get(SSA_ANNOTATION) == "IfNotPresent"

    def fetched_revision(self) -> str | None:
        """The GitRepository's ``status.artifact.revision``."""
        source = (self.admin.get(self.source) or {}).get("status") or {}
        revision = (source.get("artifact") or {}).get("revision")
        return str(revision) if revision else None

    def suspend(self, *, suspended: bool = True) -> None:
        """The Kustomization's ``spec.suspend``."""
        self.admin.patch(
            self.kustomization, {"spec": {"suspend": suspended}}, content_type=MERGE_PATCH
        )

    def assert_handed_off(self, outcome: str) -> None:
        """``requestedAt`` on both objects, handled by kustomize-controller."""
        kustomization = self.admin.get(self.kustomization) or {}
        requested = kustomization["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        assert kustomization["status"]["lastHandledReconcileAt"] == requested
        source = self.admin.get(self.source) or {}
        assert source["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == requested
        assert names_commit(kustomization["status"]["lastAppliedRevision"], outcome)


class ArgoCDWorld(OperatorWorld):
    """The Application of ``manifests/argocd`` syncs the Env repo."""

    overlay_name = "argocd"
    operator_namespace = ARGOCD_NAMESPACE
    unprotected_fix = RESPECT_IGNORE

    def __init__(self, tmp: Path, **options: Any) -> None:
        """As ``OperatorWorld``."""
        super().__init__(tmp, **options)
        self.application = ObjectRef(ARGOCD_API, "Application", self.namespace, ARGOCD_NAMESPACE)

    def operator_objects(self) -> list[dict[str, Any]]:
        """The Application and the repository Secret; the CA where the repo server looks."""
        host = self.repo.url.split("//", 1)[1].split(":", 1)[0]
        (argocd_tls_dir(self.operator.directory) / host).write_bytes(self.ca.cert.read_bytes())
        (application,) = self.rendered("Application")
        assert application["metadata"]["namespace"] == ARGOCD_NAMESPACE
        application["metadata"]["name"] = self.namespace
        application["spec"]["source"]["repoURL"] = self.repo.url
        application["spec"]["destination"]["namespace"] = self.namespace
        options = application["spec"]["syncPolicy"]["syncOptions"]
        if not self.protect:
            options = [o for o in options if o != RESPECT_IGNORE]
        # Argo CD prunes with foreground deletion, which waits for the garbage collector of
        # kube-controller-manager; the test API server runs none, so a pruned candidate
        # would stay (deleting) and the Application OutOfSync for ever
        application["spec"]["syncPolicy"]["syncOptions"] = [*options, PRUNE_IN_BACKGROUND]
        repository = _secret(
            f"{self.namespace}-repo",
            ARGOCD_NAMESPACE,
            {"type": "git", "url": self.repo.url, "username": USERNAME, "password": TOKEN},
            labels={"argocd.argoproj.io/secret-type": "repository"},
        )
        return [application, repository]

    def _env(self, failpoints: Any) -> dict[str, str]:
        env = super()._env(failpoints)
        env["RECONCILER_ARGOCD_APPLICATION"] = f"{ARGOCD_NAMESPACE}/{self.namespace}"
        return env

    def applied_revision(self, kube: Kube | None = None) -> str | None:
        """The revision of the last sync operation, once it Succeeded; else the revision
        the Application is Synced at (a commit that changed nothing it applies)."""
        status = self.status(kube)
        operation = status.get("operationState") or {}
        revision = (operation.get("syncResult") or {}).get("revision")
        if operation.get("phase") == "Succeeded" and revision:
            return str(revision)
        sync = status.get("sync") or {}
        return str(sync["revision"]) if sync.get("status") == "Synced" else None

    def status(self, kube: Kube | None = None) -> dict[str, Any]:
        """The Application's status."""
        return dict(((kube or self.admin).get(self.application) or {}).get("status") or {})

    def reconciliations(self) -> int:
        """Comparisons with Git the application controller finished for this Application."""
        return self.count_log_lines(
            "application-controller",
            f'"application":"{self.namespace}"',
            "Reconciliation completed",
        )

    def deployed_kinds(self) -> set[str]:
        """The kinds of the Application's ``status.resources``."""
        return {r["kind"] for r in self.status().get("resources", [])}

    def created_by_operator(self, obj: dict[str, Any]) -> bool:
        """Argo CD's tracking annotation names this world's Application."""
        annotations = obj["metadata"].get("annotations") or {}
        tracking = str(annotations.get("argocd.argoproj.io/tracking-id", ""))
        return tracking.startswith(f"{self.namespace}:")

    def protected(self) -> bool:
        """The Application ignores the VirtualService's weights and respects that in syncs."""
        spec = (self.admin.get(self.application) or {}).get("spec") or {}
        ignored = [d.get("kind") for d in spec.get("ignoreDifferences") or []]
        options = (spec.get("syncPolicy") or {}).get("syncOptions") or []
        return "VirtualService" in ignored and RESPECT_IGNORE in options

    def fetched_revision(self) -> str | None:
        """``status.sync.revision``: what Argo CD last compared the cluster with."""
        revision = (self.status().get("sync") or {}).get("revision")
        return str(revision) if revision else None

    def suspend(self, *, suspended: bool = True) -> None:
        """Automated sync off (Argo CD still compares, and syncs nothing) or back on."""
        automated = None if suspended else {"prune": True, "selfHeal": True}
        self.admin.patch(
            self.application,
            {"spec": {"syncPolicy": {"automated": automated}}},
            content_type=MERGE_PATCH,
        )

    def assert_handed_off(self, outcome: str) -> None:
        """The refresh was requested and handled (Argo CD removes the annotation)."""
        application = self.admin.get(self.application) or {}
        annotations = application["metadata"].get("annotations") or {}
        assert "argocd.argoproj.io/refresh" not in annotations, annotations
        assert application["status"]["sync"]["revision"] == outcome


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

    def __init__(self, world: OperatorWorld) -> None:
        self._world = world
        self._kube: Kube = world.kube_server.connect()
        self._repo = pygit2.Repository(str(world.repo.path))
        self.samples: list[Sample] = []
        self.weight_changes: list[tuple[float, dict[str, int] | None]] = []
        """Every write to the VirtualService's weights, as the watch saw it (None: deleted)."""
        self._watch_kube: Kube = world.kube_server.connect()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="sampler-watch", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._watcher.start()
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
        for thread in (self._thread, self._watcher):
            if thread.is_alive():
                thread.join()
        self._kube.close()
        self._watch_kube.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(ReconcilerError):
                self.samples.append(self._sample())
            time.sleep(SAMPLE_EVERY)

    def _watch(self) -> None:
        """Record each write to the VirtualService, resuming from the last one seen."""
        api_version, _kind, name = VIRTUAL_SERVICE
        group, version = api_version.split("/")
        api = k8s.CustomObjectsApi(self._watch_kube.api)
        resume: str | None = None
        while not self._stopping.is_set():
            stream = k8s_watch.Watch()  # type: ignore[no-untyped-call]
            options: dict[str, Any] = {"field_selector": f"metadata.name={name}"}
            if resume is not None:
                options["resource_version"] = resume
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    api.list_namespaced_custom_object,
                    group,
                    version,
                    self._world.namespace,
                    "virtualservices",
                    timeout_seconds=1,
                    **options,
                ):
                    obj = event["raw_object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.weight_changes.append((time.monotonic(), route_weights(obj)))
                    elif event["type"] == "DELETED":
                        self.weight_changes.append((time.monotonic(), None))
                    resume = obj["metadata"]["resourceVersion"]
            except k8s.ApiException as exc:
                if exc.status == 410:  # too old to resume: start over from the current object
                    resume = None
                else:
                    time.sleep(SAMPLE_EVERY)
            except (OSError, ValueError, KeyError):  # the server restarting, or a half line
                time.sleep(SAMPLE_EVERY)

    def _sample(self) -> Sample:
        namespace = self._world.namespace
        weights = read_weights(self._kube, namespace)
        applied = self._world.applied_revision(self._kube)
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

    def first(self, what: str, condition: Callable[[Sample], bool], since: float = 0.0) -> Sample:
        """The first sample at or after ``since`` for which ``condition(sample)`` holds."""
        for sample in list(self.samples):
            if sample.at >= since and condition(sample):
                return sample
        raise AssertionError(f"never seen: {what}")

    def reverts(self, main_split: dict[str, int], start: float, end: float) -> int:
        """Writes in ``[start, end]`` that put the weights back to ``main_split`` from others.

        Counted from the watch, so a revert undone a moment later still counts.
        """
        count = 0
        previous: dict[str, int] | None = None
        for at, weights in list(self.weight_changes):
            if at > end:
                break
            if weights is None:
                continue
            if at >= start and previous not in (None, main_split) and weights == main_split:
                count += 1
            previous = weights
        return count
