"""The Env repo of the end-to-end tests: its files, and reading it back with plain git.

The app is a stable and a candidate Deployment of ``productpage`` behind an Istio
VirtualService (100/0 on main), plus a canary ``Experiment`` CI writes beside the candidate.
``EnvRepo`` reads the bare repository the git daemon serves the way a person would, with
``git log`` and trailers: what the state branch recorded and what main received.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.gitutil import commit_files, git, make_bare_repo, rev_parse, show_file

APP = "apps/productpage"
STATE = "reconciler-state"
BASELINE, CANDIDATE = "productpage-v1", "productpage-v2"
VERSIONS = (BASELINE, CANDIDATE)
"""Version names, in the order of the VirtualService's routes."""
STABLE_IMAGE = "example.invalid/productpage:v1"
CANDIDATE_IMAGE = "example.invalid/productpage:v2"

_DEPLOYMENT = """\
# productpage {role}: {what}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-{role}
  labels:
    app: productpage
    version: {role}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: productpage
      version: {role}
  template:
    metadata:
      labels:
        app: productpage
        version: {role}
    spec:
      containers:
      - name: productpage
        image: {image}
"""

ROUTING = """\
# Istio routing: the reconciler sets the two weights during an experiment.
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts:
  - productpage
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
"""

APP_FILES = {
    f"{APP}/productpage.yaml": _DEPLOYMENT.format(
        role="stable", what="what users get today", image=STABLE_IMAGE
    ),
    f"{APP}/routing.yaml": ROUTING,
}
CANDIDATE_FILES = {
    f"{APP}/productpage-candidate.yaml": _DEPLOYMENT.format(
        role="candidate", what="the version under test", image=CANDIDATE_IMAGE
    ),
}
PROMOTED_STABLE = CANDIDATE_FILES[f"{APP}/productpage-candidate.yaml"].replace(
    "candidate", "stable"
)
"""productpage.yaml after a promotion: the candidate's file with ``candidate`` -> ``stable``."""


@dataclass(frozen=True)
class ExperimentFile:
    """A canary experiment file as CI writes it (``intervalSeconds: 1``)."""

    name: str = "productpage-canary"
    file: str = "experiment.yaml"
    iterations: int = 3
    max_weight: int = 60
    increment: int = 20
    failure_limit: int = 2
    no_data_limit: int = 5
    cleanup: tuple[str, ...] = ("productpage-candidate.yaml",)
    pattern: str = "Progressive"
    readiness: tuple[str, ...] = ()
    """Deployments (names in the app's namespace) that must be ready (``spec.readiness``)."""

    @property
    def path(self) -> str:
        """Its path on main."""
        return f"{APP}/{self.file}"

    def key(self, namespace: str) -> str:
        """``namespace/name``, the experiment's name on the state branch."""
        return f"{namespace}/{self.name}"

    def render(self, namespace: str) -> str:
        """The file's YAML for an app in ``namespace``."""
        ref = (
            "      weightObjRef:\n"
            "        apiVersion: networking.istio.io/v1beta1\n"
            "        kind: VirtualService\n"
            f"        namespace: {namespace}\n"
            "        name: productpage\n"
            "        fieldPath: .spec.http[0].route[{index}].weight\n"
        )
        cleanup = "".join(f"    - {path}\n" for path in self.cleanup)
        readiness = "".join(
            f"    - {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n"
            for name in self.readiness
        )
        readiness = f"  readiness:\n    objects:\n{readiness}" if readiness else ""
        return (
            "apiVersion: reconciler/v1alpha1\n"
            "kind: Experiment\n"
            "metadata:\n"
            f"  name: {self.name}\n"
            f"  namespace: {namespace}\n"
            "spec:\n"
            f"  target: {namespace}/productpage\n"
            "  strategy:\n"
            "    testingPattern: Canary\n"
            f"    deploymentPattern: {self.pattern}\n"
            "    weights:\n"
            f"      maxCandidateWeight: {self.max_weight}\n"
            f"      maxCandidateWeightIncrement: {self.increment}\n"
            "  criteria:\n"
            "    requestCount: istio/request-count\n"
            "    objectives:\n"
            "    - metric: istio/error-rate\n"
            '      upperLimit: "0.01"\n'
            f"    failureLimit: {self.failure_limit}\n"
            f"    noDataLimit: {self.no_data_limit}\n"
            "  duration:\n"
            "    intervalSeconds: 1\n"
            f"    iterationsPerLoop: {self.iterations}\n"
            "  versionInfo:\n"
            "    baseline:\n"
            f"      name: {BASELINE}\n"
            f"{ref.format(index=0)}"
            "    candidates:\n"
            f"    - name: {CANDIDATE}\n"
            f"{ref.format(index=1)}"
            "  gitops:\n"
            "    promote:\n"
            "    - copy:\n"
            "        from: productpage-candidate.yaml\n"
            "        to: productpage.yaml\n"
            "        replace:\n"
            "        - old: candidate\n"
            "          new: stable\n"
            "    cleanup:\n"
            f"{cleanup}"
            f"{readiness}"
        )


@dataclass(frozen=True)
class Commit:
    """One commit as ``git log`` shows it: id, subject, trailers (last value wins)."""

    id: str
    subject: str
    trailers: Mapping[str, str]

    def get(self, key: str) -> str | None:
        """A trailer's value."""
        return self.trailers.get(key)

    @property
    def phase(self) -> str | None:
        """``Rollout-Phase``."""
        return self.get("Rollout-Phase")

    @property
    def iteration(self) -> int | None:
        """``Rollout-Iteration`` as a number."""
        value = self.get("Rollout-Iteration")
        return None if value is None else int(value)

    @property
    def weights(self) -> dict[str, int] | None:
        """``Rollout-Weights`` as version -> percent."""
        pairs = parse_pairs(self.get("Rollout-Weights"))
        return None if pairs is None else {name: int(value) for name, value in pairs.items()}

    @property
    def verdicts(self) -> dict[str, str] | None:
        """``Rollout-Verdict`` as version -> verdict."""
        return parse_pairs(self.get("Rollout-Verdict"))


def parse_pairs(text: str | None) -> dict[str, str] | None:
    """``a=1,b=2`` as a dict of strings (None for None)."""
    if text is None:
        return None
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {name.strip(): value.strip() for name, value in pairs}


class EnvRepo:
    """The bare Env repo behind the git daemon, read and written with the git program."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    @classmethod
    def create(cls, path: Path, url: str) -> EnvRepo:
        """A new Env repo whose main holds the app at 100/0, without a candidate."""
        make_bare_repo(path, APP_FILES, message="productpage v1 behind an Istio VirtualService")
        return cls(path, url)

    # -- writing, as CI or a person would --------------------------------------------------

    def commit(self, files: Mapping[str, str | bytes | None], message: str) -> str:
        """Push one commit to main; its id."""
        return commit_files(self.path, files, message=message)

    def add_candidate(self, experiment: ExperimentFile, namespace: str) -> str:
        """CI: the candidate's Deployment and its experiment, in one commit."""
        return self.commit(
            {**CANDIDATE_FILES, experiment.path: experiment.render(namespace)},
            f"ci: productpage v2 candidate with {experiment.name}",
        )

    # -- reading ------------------------------------------------------------------------

    def tip(self, branch: str) -> str | None:
        """A branch's tip, None when absent."""
        return rev_parse(self.path, f"refs/heads/{branch}")

    def files(self, rev: str) -> list[str]:
        """Every path at ``rev``."""
        out = git("--git-dir", self.path, "ls-tree", "-r", "--name-only", rev)
        return out.splitlines() if out else []

    def show(self, rev: str, path: str) -> str | None:
        """A file's content at ``rev`` (None: absent)."""
        return show_file(self.path, rev, path)

    def log(self, rev: str, *, limit: int | None = None) -> list[Commit]:
        """Commits reachable from ``rev``, newest first, with their trailers."""
        if rev_parse(self.path, rev) is None:
            return []
        args: list[str | Path] = [
            "--git-dir",
            self.path,
            "log",
            "--format=%H%x00%s%x00%(trailers:unfold)%x01",
        ]
        if limit is not None:
            args.append(f"-{limit}")
        out = git(*args, rev)
        commits = []
        for record in out.split("\x01"):
            if not record.strip():
                continue
            commit_id, subject, trailers = record.strip("\n").split("\x00")
            found: dict[str, str] = {}
            for line in trailers.splitlines():
                key, sep, value = line.partition(": ")
                if sep:
                    found[key] = value
            commits.append(Commit(commit_id, subject, found))
        return commits

    def state_log(self, key: str | None = None) -> list[Commit]:
        """State-branch commits, oldest first (only experiment ``key``'s when given)."""
        commits = list(reversed(self.log(STATE)))
        if key is None:
            return commits
        return [c for c in commits if c.get("Rollout-Experiment") == key]

    def latest(self, key: str) -> Commit | None:
        """The newest state commit about experiment ``key``."""
        for commit in self.log(STATE):
            if commit.get("Rollout-Experiment") == key:
                return commit
        return None

    def outcomes(self) -> list[Commit]:
        """Commits on main that carry ``Rollout-Outcome``, newest first."""
        return [c for c in self.log("main") if c.get("Rollout-Outcome")]

    def document(self, path: str, rev: str = STATE) -> dict[str, Any] | None:
        """A state document (JSON) at ``rev``."""
        text = self.show(rev, path)
        if text is None:
            return None
        data: dict[str, Any] = json.loads(text)
        return data

    def archived(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Archived state documents of experiment ``namespace/name`` at the state tip."""
        prefix = f"archive/{namespace}/{name}/"
        if self.tip(STATE) is None:
            return []
        return [
            doc
            for path in self.files(STATE)
            if path.startswith(prefix)
            for doc in [self.document(path)]
            if doc is not None
        ]
