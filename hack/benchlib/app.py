"""A real-looking app in an Env repo, and the experiment whose promotion sets its tag.

``apps/productpage/`` holds what teams keep beside Argo CD: a kustomization whose
``images[0].newTag`` names the running version, a Deployment, a HorizontalPodAutoscaler,
a Service and an Istio VirtualService. The promotion the benchmarks time is the one such a
team writes in ``spec.gitops``: set ``images[0].newTag`` to the winner's ``tag`` variable,
a one-line diff.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from benchlib.common import git, git_binary
from reconciler.engine import experiment
from reconciler.engine.state import ExperimentState, Phase
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Experiment

APP = "apps/productpage"
KUSTOMIZATION = f"{APP}/kustomization.yaml"
EXPERIMENT = f"{APP}/experiment.yaml"
TAG_LINE = "  newTag: "
"""How the tag's line starts in the kustomization (what the shell way's sed matches)."""

FILES = {
    KUSTOMIZATION: """\
# productpage in production: Argo CD renders this directory with kustomize.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: bookinfo
commonLabels:
  app.kubernetes.io/part-of: bookinfo
resources:
- deployment.yaml
- hpa.yaml
- service.yaml
- virtualservice.yaml
images:
- name: docker.io/istio/examples-bookinfo-productpage-v1
  newName: registry.example.com/bookinfo/productpage
  newTag: "1.18.0"   # set by the promotion
configMapGenerator:
- name: productpage-settings
  literals:
  - LOG_LEVEL=info
""",
    f"{APP}/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage
  labels:
    app: productpage
    version: stable
spec:
  replicas: 3
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app: productpage
      version: stable
  template:
    metadata:
      labels:
        app: productpage
        version: stable
      annotations:
        sidecar.istio.io/inject: "true"
    spec:
      serviceAccountName: bookinfo-productpage
      containers:
      - name: productpage
        image: docker.io/istio/examples-bookinfo-productpage-v1
        ports:
        - containerPort: 9080
        envFrom:
        - configMapRef:
            name: productpage-settings
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {memory: 256Mi}
        readinessProbe:
          httpGet: {path: /health, port: 9080}
          periodSeconds: 5
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
""",
    f"{APP}/hpa.yaml": """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: productpage
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: productpage
  minReplicas: 3
  maxReplicas: 12
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 70
""",
    f"{APP}/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: productpage
  labels:
    app: productpage
spec:
  ports:
  - name: http
    port: 9080
  selector:
    app: productpage
""",
    f"{APP}/virtualservice.yaml": """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts:
  - productpage
  gateways:
  - bookinfo-gateway
  - mesh
  http:
  - route:
    - destination:
        host: productpage
        subset: stable
      weight: 100
    - destination:
        host: productpage
        subset: candidate
      weight: 0
""",
}

WEIGHT_REF = """\
      weightObjRef:
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        namespace: {namespace}
        name: {name}
        fieldPath: .spec.http[0].route[{route}].weight"""
"""A version's ``weightObjRef`` in an experiment file: route ``route`` of a VirtualService."""


def weight_refs(namespace: str, name: str) -> dict[str, str]:
    """``baseline_ref`` and ``candidate_ref`` for an experiment file: VirtualService routes 0, 1."""
    return {
        f"{version}_ref": WEIGHT_REF.format(namespace=namespace, name=name, route=route)
        for route, version in enumerate(("baseline", "candidate"))
    }


EXPERIMENT_YAML = """\
apiVersion: reconciler/v1alpha1
kind: Experiment
metadata:
  name: productpage-canary-{run}
  namespace: bookinfo
spec:
  target: bookinfo/productpage
  strategy:
    testingPattern: Canary
    deploymentPattern: Progressive
    weights:
      maxCandidateWeight: 80
      maxCandidateWeightIncrement: 20
  criteria:
    requestCount: istio/request-count
    objectives:
    - metric: istio/error-rate
      upperLimit: "0.01"
  duration:
    intervalSeconds: 30
    iterationsPerLoop: 6
  versionInfo:
    baseline:
      name: productpage-v1
{baseline_ref}
    candidates:
    - name: productpage-v2
      variables:
      - name: tag
        value: "{tag}"
{candidate_ref}
  gitops:
    promote:
    - set:
        file: kustomization.yaml
        path: .images[0].newTag
        value: "{{{{ variables.tag }}}}"
"""


def fast_import(
    env: Mapping[str, str],
    repo: Path,
    branch: str,
    commits: Sequence[tuple[str, Mapping[str, bytes]]],
) -> None:
    """Add ``commits`` (message, files) as a new branch of ``repo`` with ``git fast-import``."""
    process = subprocess.Popen(
        [git_binary(), "--git-dir", str(repo), "fast-import", "--quiet"],
        stdin=subprocess.PIPE,
        env=dict(env),
    )
    if process.stdin is None:
        raise SystemExit("bench: git fast-import has no stdin")
    out = process.stdin
    for mark, (message, files) in enumerate(commits, start=1):
        text = message.encode()
        out.write(f"commit refs/heads/{branch}\nmark :{mark}\n".encode())
        out.write(
            f"committer bench <bench@example.invalid> {1_700_000_000 + mark} +0000\n".encode()
        )
        out.write(f"data {len(text)}\n".encode() + text + b"\n")
        if mark > 1:
            out.write(f"from :{mark - 1}\n".encode())
        for path, content in files.items():
            out.write(f"M 100644 inline {path}\ndata {len(content)}\n".encode() + content + b"\n")
    out.close()
    if process.wait() != 0:
        raise SystemExit("bench: git fast-import failed")


def create_env_repo(env: Mapping[str, str], path: Path) -> None:
    """A bare Env repo whose main holds the app; pushable over git:// and HTTP, reflogged."""
    git(env, "init", "--quiet", "--bare", "--initial-branch=main", path)
    for key, value in (("http.receivepack", "true"), ("core.logAllRefUpdates", "always")):
        git(env, "--git-dir", path, "config", key, value)
    files = {p: t.encode() for p, t in FILES.items()}
    fast_import(env, path, "main", [("productpage: v1 in production", files)])


@functools.cache
def _template() -> Experiment:
    refs = weight_refs("bookinfo", "productpage")
    text = EXPERIMENT_YAML.format(run="template", tag="0.0.0", **refs).encode()
    loaded = load_experiments(EXPERIMENT, text)
    if not loaded.experiments:
        raise SystemExit(f"bench: the benchmark's experiment does not load: {loaded.problems}")
    return loaded.experiments[0]


def promoting_state(run: str, tag: str, decided_on: str) -> ExperimentState:
    """A recorded decision to promote ``productpage-v2`` (tag ``tag``), taken on ``decided_on``.

    The experiment file is not on main (CI's copy was removed earlier), so the promotion's
    only change is the kustomization's tag: a one-line diff, like the shell way's. The spec
    is the parsed template renamed, as the loop has it (from the state document, without
    parsing YAML), so building this costs microseconds.
    """
    template = _template()
    spec = replace(
        template,
        name=f"productpage-canary-{run}",
        candidates=tuple(replace(c, variables=(("tag", tag),)) for c in template.candidates),
    )
    blob = hashlib.sha1(f"{run}\0{tag}".encode(), usedforsecurity=False).hexdigest()
    state = experiment.start(spec, spec_blob=blob, source_commit=decided_on, now=1.8e9).state
    return replace(state, phase=Phase.PROMOTING, winner="productpage-v2", decided_on=decided_on)
