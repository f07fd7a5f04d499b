"""Flux (and Argo CD) beside a test API server: the real controllers, built from pinned modules.

``start_flux(DIR, KUBECONFIG)`` installs the CRDs of source-controller and
kustomize-controller (from their own modules' ``config/crd/bases``), creates the
``flux-system`` namespace, and starts both controllers out of cluster on free loopback
ports: source-controller first (kustomize-controller fetches its artifacts over HTTP and
backs off for minutes on a stale URL otherwise), with logs in DIR. The controllers get
SIGKILL from the kernel when the process that started them dies (``PR_SET_PDEATHSIG``), so
a killed test session leaves nothing running. The kubeconfig is one that
``hack/kube-test-server up`` wrote (JSON: this module is standard library only).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubetestserver import build
from kubetestserver.server import die_with_parent, free_ports

FLUX_NAMESPACE = "flux-system"
ARGOCD_NAMESPACE = "argocd"
READY_TIMEOUT = 60.0
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
STOP_TIMEOUT = 10.0


class Starter(Protocol):
    """``start_flux`` or ``start_argocd``."""

    def __call__(self, directory: Path, kubeconfig: Path) -> Operators: ...


class OperatorError(RuntimeError):
    """A controller cannot be started, or stopped running: says which, and its log."""


# -- the API server, as far as the CRDs need it -----------------------------------------


@dataclass(frozen=True)
class Cluster:
    """The API server of a kubeconfig written by ``hack/kube-test-server up``."""

    server: str
    token: str
    context: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Cluster:
        """Read the current context's server, CA and token.

        Raises:
            OperatorError: not a kubeconfig of the test server.
        """
        try:
            config = json.loads(path.read_text())
            current = config["current-context"]
            context = next(c for c in config["contexts"] if c["name"] == current)["context"]
            cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
            user = next(u for u in config["users"] if u["name"] == context["user"])
            ca = base64.b64decode(cluster["cluster"]["certificate-authority-data"]).decode()
            token = user["user"]["token"]
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            raise OperatorError(
                f"{path} is not a kubeconfig written by `hack/kube-test-server up`: {exc!r}"
            ) from exc
        return cls(cluster["cluster"]["server"], token, ssl.create_default_context(cadata=ca))

    def request(
        self, method: str, path: str, body: str | None = None, content_type: str | None = None
    ) -> dict[str, Any]:
        """One call; the decoded JSON answer.

        Raises:
            OperatorError: the server refused it.
        """
        request = urllib.request.Request(
            self.server + path,
            data=body.encode() if body is not None else None,
            method=method,
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as exc:
            raise OperatorError(f"{method} {path}: {exc.code} {exc.read().decode()[:500]}") from exc

    def apply(self, path: str, document: str) -> None:
        """Server-side apply one YAML document to ``path`` (the object's own URL)."""
        self.request(
            "PATCH",
            f"{path}?fieldManager=gitops-test-operators&force=true",
            document,
            "application/apply-patch+yaml",
        )


def documents(text: str) -> list[str]:
    """The documents of a multi-document YAML file, split on its ``---`` lines."""
    parts = re.split(r"^---[ \t]*$", text, flags=re.MULTILINE)
    return [part for part in parts if re.search(r"^kind:", part, re.MULTILINE)]


def _crd_name(document: str) -> str:
    found = re.search(r"^metadata:\n(?:[ \t]+.*\n)*?  name: (\S+)", document, re.MULTILINE)
    if found is None:
        raise OperatorError(f"a CRD without metadata.name: {document[:200]!r}")
    return found.group(1)


def install_crds(cluster: Cluster, files: list[Path], timeout: float = READY_TIMEOUT) -> list[str]:
    """Apply every CRD of ``files``, wait until each is Established; their names."""
    names = []
    for path in files:
        for document in documents(path.read_text()):
            name = _crd_name(document)
            cluster.apply(f"{CRDS}/{name}", document)
            names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = cluster.request("GET", f"{CRDS}/{name}")
            conditions = {
                c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []
            }
            if conditions.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise OperatorError(f"CRD {name} not Established after {timeout:g} s")
            time.sleep(0.05)
    return names


def ensure_namespace(cluster: Cluster, name: str) -> None:
    """Create a namespace unless it exists."""
    cluster.apply(
        f"/api/v1/namespaces/{name}",
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )


def flux_crds() -> list[Path]:
    """The CRD files of the pinned source-controller and kustomize-controller modules."""
    files = []
    for component in build.FLUX:
        bases = build.module_source(component) / "config" / "crd" / "bases"
        files += sorted(bases.glob("*.yaml"))
    return files


# -- processes --------------------------------------------------------------------------


@dataclass
class Process:
    """One controller process and its log."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again), appending to its log."""
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - nothing else runs in the child
            )

    def running(self) -> bool:
        """Whether it runs."""
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Operators:
    """The running controllers of one operator, in start order."""

    kind: str
    directory: Path
    processes: list[Process] = field(default_factory=list)

    def process(self, name: str) -> Process:
        """The controller called ``name``."""
        return next(p for p in self.processes if p.name == name)

    def check(self) -> None:
        """Raise if a controller stopped running.

        Raises:
            OperatorError: naming it, with its log's end.
        """
        for process in self.processes:
            if not process.running():
                code = process.popen.returncode if process.popen else None
                raise OperatorError(
                    f"{process.name} exited ({code}); {process.log}:\n{process.tail()}"
                )

    def stop(self) -> None:
        """Stop every controller, the last started first."""
        for process in reversed(self.processes):
            process.stop()


def start_flux(directory: Path, kubeconfig: Path) -> Operators:
    """Install Flux's CRDs and start source-controller and kustomize-controller.

    Raises:
        build.BuildError: a controller is not built (``hack/gitops-test-operators build``).
        OperatorError: a controller did not become ready.
    """
    absent = build.missing(build.FLUX)
    if absent:
        raise build.BuildError(
            f"{' and '.join(absent)} not built yet: run `hack/gitops-test-operators build flux`"
        )
    binaries = build.binaries(build.FLUX)
    (directory / "storage").mkdir(parents=True, exist_ok=True)
    cluster = Cluster.from_kubeconfig(kubeconfig)
    install_crds(cluster, flux_crds())
    ensure_namespace(cluster, FLUX_NAMESPACE)
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), RUNTIME_NAMESPACE=FLUX_NAMESPACE)
    storage, source_health, source_metrics, kustomize_health, kustomize_metrics = free_ports(5)
    common = ["--enable-leader-election=false", "--watch-all-namespaces=true", "--log-level=info"]
    # short retries: a test's objects come and go faster than Flux's default backoff
    common += ["--min-retry-delay=250ms", "--max-retry-delay=10s"]
    operators = Operators("flux", directory)
    source = Process(
        "source-controller",
        [
            str(binaries["source-controller"]),
            *common,
            f"--storage-path={directory / 'storage'}",
            f"--storage-addr=127.0.0.1:{storage}",
            f"--storage-adv-addr=127.0.0.1:{storage}",
            f"--health-addr=127.0.0.1:{source_health}",
            f"--metrics-addr=127.0.0.1:{source_metrics}",
        ],
        env,
        directory / "source-controller.log",
    )
    kustomize = Process(
        "kustomize-controller",
        [
            str(binaries["kustomize-controller"]),
            *common,
            "--http-retry=2",
            f"--health-addr=127.0.0.1:{kustomize_health}",
            f"--metrics-addr=127.0.0.1:{kustomize_metrics}",
        ],
        env,
        directory / "kustomize-controller.log",
    )
    try:
        for process, port in ((source, source_health), (kustomize, kustomize_health)):
            operators.processes.append(process)
            process.start()
            _wait_ready(process, f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        operators.stop()
        raise
    return operators


def argocd_crds() -> list[Path]:
    """The Application and AppProject CRDs of the pinned Argo CD module."""
    crds = build.module_source(build.ARGOCD) / "manifests" / "crds"
    return [crds / "application-crd.yaml", crds / "appproject-crd.yaml"]


ARGOCD_LABELS = {"app.kubernetes.io/part-of": "argocd"}


def _argocd_settings(cluster: Cluster) -> None:
    """What Argo CD's installation adds and its API server would: settings, the project."""
    base = f"/api/v1/namespaces/{ARGOCD_NAMESPACE}"
    for kind, name, body in (
        # what Argo CD's manifests pass on as ARGOCD_RECONCILIATION_TIMEOUT (see below)
        ("configmaps", "argocd-cm", {"data": {"timeout.reconciliation": RESYNC}}),
        ("secrets", "argocd-secret", {"type": "Opaque"}),
    ):
        document = {
            "apiVersion": "v1",
            "kind": "ConfigMap" if kind == "configmaps" else "Secret",
            "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE, "labels": ARGOCD_LABELS},
            **body,
        }
        cluster.apply(f"{base}/{kind}/{name}", json.dumps(document))
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "default", "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }
    cluster.apply(
        f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/appprojects/default",
        json.dumps(project),
    )


def argocd_tls_dir(directory: Path) -> Path:
    """Where the repo server looks for a Git server's CA, in a file named by its host."""
    return directory / "tls"


RESYNC = "3s"
"""How often Argo CD compares each Application with Git here (``timeout.reconciliation``)."""


def start_argocd(directory: Path, kubeconfig: Path) -> Operators:
    """Install Argo CD's CRDs, settings and default project; start Redis, the repo server
    and the application controller (the API server and UI are not needed: Applications
    are created with the Kubernetes API).

    Raises:
        build.BuildError: Argo CD is not built (``hack/gitops-test-operators build argocd``).
        OperatorError: Redis is not installed, or a process did not become ready.
    """
    if build.missing((build.ARGOCD,)):
        raise build.BuildError(
            "argocd not built yet: run `hack/gitops-test-operators build argocd`"
        )
    redis = shutil.which("redis-server")
    if redis is None:
        raise OperatorError("redis-server not found: install Debian's redis-server")
    binary = build.binaries((build.ARGOCD,))["argocd"]
    for sub in ("tls", "ssh", "gnupg", "tmp", "redis"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "ssh" / "ssh_known_hosts").touch()
    cluster = Cluster.from_kubeconfig(kubeconfig)
    install_crds(cluster, argocd_crds())
    ensure_namespace(cluster, ARGOCD_NAMESPACE)
    _argocd_settings(cluster)
    redis_port, repo_port, repo_metrics, controller_metrics = free_ports(4)
    env = dict(
        os.environ,
        KUBECONFIG=str(kubeconfig),
        # the repo server runs git with GIT_ASKPASS=argocd: this binary, found on PATH
        PATH=f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        TMPDIR=str(directory / "tmp"),
        ARGOCD_ASK_PASS_SOCK=str(directory / "askpass.sock"),
        ARGOCD_TLS_DATA_PATH=str(argocd_tls_dir(directory)),
        ARGOCD_SSH_DATA_PATH=str(directory / "ssh"),
        ARGOCD_GNUPGHOME=str(directory / "gnupg"),
        ARGOCD_GPG_ENABLED="false",
        # the in-cluster destination is the API server of KUBECONFIG, as for Argo CD's own
        # development setup
        ARGOCD_FAKE_IN_CLUSTER="true",
        # compare with Git every few seconds, not every 2 minutes plus up to 1 minute of
        # jitter: a test is short. Argo CD's own manifests set these from argocd-cm; the
        # processes read only the environment (the repo server's revision cache too).
        ARGOCD_RECONCILIATION_TIMEOUT=RESYNC,
        ARGOCD_RECONCILIATION_JITTER="0s",
    )
    redis_address = f"127.0.0.1:{redis_port}"
    common = ["--redis", redis_address, "--loglevel", "info"]
    operators = Operators("argocd", directory)
    processes = [
        (
            Process(
                "redis",
                [
                    redis,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory / "redis"),
                ],
                dict(os.environ),
                directory / "redis.log",
            ),
            None,
        ),
        (
            Process(
                "repo-server",
                [
                    str(binary),
                    "--address",
                    "127.0.0.1",
                    "--port",
                    str(repo_port),
                    "--metrics-address",
                    "127.0.0.1",
                    "--metrics-port",
                    str(repo_metrics),
                    "--disable-tls",
                    *common,
                ],
                dict(env, ARGOCD_BINARY_NAME="argocd-repo-server"),
                directory / "repo-server.log",
            ),
            f"http://127.0.0.1:{repo_metrics}/healthz",
        ),
        (
            Process(
                "application-controller",
                [
                    str(binary),
                    "--kubeconfig",
                    str(kubeconfig),
                    "--namespace",
                    ARGOCD_NAMESPACE,
                    "--repo-server",
                    f"127.0.0.1:{repo_port}",
                    "--repo-server-plaintext",
                    "--metrics-port",
                    str(controller_metrics),
                    "--status-processors",
                    "2",
                    "--operation-processors",
                    "2",
                    "--self-heal-timeout-seconds",
                    "1",
                    *common,
                ],
                dict(env, ARGOCD_BINARY_NAME="argocd-application-controller"),
                directory / "application-controller.log",
            ),
            f"http://127.0.0.1:{controller_metrics}/healthz",
        ),
    ]
    try:
        for process, health in processes:
            operators.processes.append(process)
            process.start()
            if health is None:
                _wait_port(process, redis_port)
            else:
                _wait_ready(process, health)
    except BaseException:
        operators.stop()
        raise
    return operators


def _wait_port(process: Process, port: int, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.running():
            raise OperatorError(
                f"{process.name} exited before it was ready; {process.log}:\n{process.tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise OperatorError(f"{process.name} not listening on {port} after {timeout:g} s")


def _wait_ready(process: Process, url: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not process.running():
            raise OperatorError(
                f"{process.name} exited before it was ready; {process.log}:\n{process.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise OperatorError(f"{process.name} not ready after {timeout:g} s ({last}); see {process.log}")
