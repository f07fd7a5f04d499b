"""An Iter8-style Knative canary judged only on Iter8's built-in metrics, start to outcome.

The experiment file is in Iter8's v2alpha2 shape with a ``metrics/collect`` task and no
Prometheus metric at all; the reconciler's own load generator sends the requests to two
real local HTTP servers standing in for the two revisions (reached through the
``load.resolve`` hook by their in-cluster names), the real loop judges the iterations on
what came back, and the outcome lands on main. The iteration records on the state branch
carry the measured values, so ``history`` and ``report`` see them.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.config.settings import LoadSettings
from reconciler.load.generator import HttpLoad
from reconciler.metrics.profile import Profile
from reconciler.testing import Harness, weight_at

EXPERIMENT = """\
apiVersion: iter8.tools/v2alpha2
kind: Experiment
metadata:
  name: quickstart-exp
  namespace: default
spec:
  target: default/sample-app
  strategy:
    testingPattern: Canary
    deploymentPattern: Progressive
    actions:
      loop:
      - task: metrics/collect
        with:
          qps: 100
          connections: 4
          versions:
          - name: sample-app-v1
            url: http://sample-app-v1.default.svc.cluster.local
          - name: sample-app-v2
            url: http://sample-app-v2.default.svc.cluster.local/hello
      finish:
      - run: kubectl apply -f candidate.yaml
  criteria:
    requestCount: iter8-system/request-count
    objectives:
    - metric: iter8-system/mean-latency
      upperLimit: 200
    - metric: iter8-system/latency-95th-percentile
      upperLimit: 400
    - metric: iter8-system/error-rate
      upperLimit: "0.05"
  duration:
    intervalSeconds: 1
    iterationsPerLoop: 4
  versionInfo:
    baseline:
      name: sample-app-v1
      weightObjRef:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: sample-app
        namespace: default
        fieldPath: .spec.traffic[0].percent
    candidates:
    - name: sample-app-v2
      weightObjRef:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: sample-app
        namespace: default
        fieldPath: .spec.traffic[1].percent
"""
SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: sample-app
  namespace: default
spec:
  template:
    metadata:
      name: sample-app-v2
  traffic:
  - revisionName: sample-app-v1
    percent: 100
  - revisionName: sample-app-v2
    percent: 0
"""


@dataclass
class Revision:
    """A local HTTP server standing in for one Knative revision."""

    errors: float = 0.0
    """Fraction of requests answered 503, spread evenly (3 of every 10 at 0.3)."""
    delay: float = 0.0
    """Seconds each answer waits."""
    served: int = 0


def serve(revision: Revision) -> Iterator[int]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                revision.served += 1
                n = revision.served
            if revision.delay:
                time.sleep(revision.delay)
            failing = int(n * revision.errors) > int((n - 1) * revision.errors)
            status = 503 if failing else 200
            body = b"hello\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def baseline() -> Iterator[tuple[Revision, int]]:
    revision = Revision()
    for port in serve(revision):
        yield revision, port


@pytest.fixture
def candidate() -> Iterator[tuple[Revision, int]]:
    revision = Revision()
    for port in serve(revision):
        yield revision, port


def world(tmp: Path, baseline_port: int, candidate_port: int) -> tuple[Harness, HttpLoad]:
    commits = [
        ("sample-app v1 and v2 revisions", {"apps/sample/service.yaml": SERVICE.encode()}),
        ("iter8: quickstart experiment", {"apps/sample/experiment.yaml": EXPERIMENT.encode()}),
    ]
    harness = Harness.create(
        tmp,
        commits,
        {"sample-app-v1": Profile(), "sample-app-v2": Profile()},  # unused: no Prometheus metric
        namespace="default",
        clock=time.time,
    )
    load = HttpLoad.from_settings(
        LoadSettings(
            resolve=(
                f"sample-app-v1.default.svc.cluster.local=127.0.0.1:{baseline_port}",
                f"sample-app-v2.default.svc.cluster.local=127.0.0.1:{candidate_port}",
            ),
            max_qps_per_experiment=400,
        )
    )
    harness.restart(load=load)
    return harness, load


def run_to_the_outcome(
    tmp: Path, baseline_port: int, candidate_port: int, seconds: float = 60.0
) -> tuple[Harness, str]:
    """Tick as a process with a 0.2 s timer would, until an outcome lands on main.

    Returns the world and the outcome's ``Rollout-Outcome``.
    """
    harness, load = world(tmp, baseline_port, candidate_port)
    try:
        deadline = time.monotonic() + seconds
        while not any(t.state.phase.final for t, _ in harness.tick().recorded):
            if time.monotonic() > deadline:
                pytest.fail("no outcome within the time the iterations need")
            time.sleep(0.2)
    finally:
        load.close()
    outcome = git(
        harness, "log", "-1", "--format=%(trailers:key=Rollout-Outcome,valueonly)", "main"
    )
    return harness, outcome.strip()


def git(harness: Harness, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", harness.remote, *args], check=True, capture_output=True, text=True
    ).stdout


def iteration_metrics(harness: Harness) -> list[dict[str, dict[str, float | None]]]:
    """The metric values each recorded iteration judged, from the archived state document."""
    paths = git(harness, "ls-tree", "-r", "--name-only", "reconciler-state", "archive/").split()
    (path,) = paths
    document = json.loads(git(harness, "show", f"reconciler-state:{path}"))
    return [record["metrics"] for record in document["history"]]


def test_a_healthy_candidate_is_promoted_on_built_in_metrics_alone(
    tmp_path: Path, baseline: tuple[Revision, int], candidate: tuple[Revision, int]
) -> None:
    harness, outcome = run_to_the_outcome(tmp_path, baseline[1], candidate[1])
    assert outcome == "promoted"
    assert baseline[0].served > 100
    assert candidate[0].served > 100
    records = iteration_metrics(harness)
    assert len(records) == 4
    last = records[-1]["sample-app-v2"]
    assert last["iter8-system/error-rate"] == 0.0
    assert last["iter8-system/request-count"] is not None
    assert last["iter8-system/request-count"] >= 100
    # every request is counted: the metrics are cumulative over the run
    counts = [r["sample-app-v2"]["iter8-system/request-count"] or 0 for r in records]
    assert counts == sorted(counts)


def test_a_candidate_answering_503s_is_rolled_back_and_never_promoted(
    tmp_path: Path, baseline: tuple[Revision, int], candidate: tuple[Revision, int]
) -> None:
    candidate[0].errors = 0.3
    harness, outcome = run_to_the_outcome(tmp_path, baseline[1], candidate[1])
    assert outcome == "rolled-back"
    assert weight_at(harness.cluster, harness.refs, "sample-app-v2") == 0
    rates = [r["sample-app-v2"]["iter8-system/error-rate"] for r in iteration_metrics(harness)]
    assert rates
    assert all(rate is not None and 0.2 < rate < 0.4 for rate in rates), rates
    verdicts = git(harness, "log", "--format=%(trailers:key=Rollout-Verdict,valueonly)",
                   "reconciler-state")  # fmt: skip
    assert "sample-app-v2=fail" in verdicts
