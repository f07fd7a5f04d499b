"""States of the demo's canary built by the engine itself, for the watch's view tests.

No I/O: the spec is the demo's, each state is ``engine.start`` followed by judged
iterations on plain metric values, so the views are tested on what the loop would record.
"""

from __future__ import annotations

import functools
from importlib import resources

from reconciler.engine import experiment as engine
from reconciler.engine.control import DONE, CommandRecord
from reconciler.engine.state import ExperimentState, Phase
from reconciler.ports import MetricValue
from reconciler.spec.loader import load_experiments
from reconciler.spec.model import Experiment

DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
LOADED = load_experiments("apps/bookinfo/experiment.yaml", DEMO.read_bytes())
SPEC: Experiment = LOADED.experiments[0]
BLOB = "4eb5effffa60aaaabbbbccccddddeeeeffff0000"
START = 1_800_000_000.0
STABLE, CANDIDATE = "productpage-stable", "productpage-candidate"


def values(error_rate: float, requests: int) -> dict[str, MetricValue]:
    return {
        "istio/error-rate": MetricValue(error_rate, requests),
        "istio/mean-latency": MetricValue(80.0, requests),
        "istio/request-count": MetricValue(float(requests), requests),
    }


def run(
    spec: Experiment = SPEC, *, iterations: int = 2, error_rate: float = 0.002
) -> ExperimentState:
    """A state after ``iterations`` judged iterations, built by the engine itself."""
    state = engine.start(spec, spec_blob=BLOB, source_commit="c" * 40, now=START).state
    now = START
    for _ in range(iterations):
        if state.phase is not Phase.PROGRESSING:
            break
        now += spec.duration.interval_seconds
        observed = {STABLE: values(0.004, 3000), CANDIDATE: values(error_rate, 3000)}
        step = engine.step(state, observed, now)
        assert step is not None
        state = step.state
    return state


@functools.cache
def demo_run(iterations: int, error_rate: float) -> ExperimentState:
    """``run`` of the demo's spec, made once per arguments (the examples reuse them)."""
    return run(iterations=iterations, error_rate=error_rate)


PAUSE = CommandRecord(
    commit="a" * 40,
    command="pause",
    author="Ann <ann@example.com>",
    time=START + 30,
    result=DONE,
    why="paused",
    reason="looking at the dashboards",
)
