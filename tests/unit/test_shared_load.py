"""One load generator for the whole fleet: each Env repo sees and stops only its own runs."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from reconciler.load.shared import SharedLoad
from reconciler.ports import LoadGenerator, LoadPlan, MetricValue
from reconciler.spec.model import Load, VersionLoad

RUN = "demo/checkout@0123456789ab"
"""The same experiment (same namespace, name and spec) in two Env repos."""


def plan(run_id: str = RUN, qps: float = 8, namespace: str = "demo") -> LoadPlan:
    versions = tuple(VersionLoad(v, f"http://{v}.{namespace}.svc:8080/") for v in ("v1", "v2"))
    return LoadPlan(run_id, namespace, Load(versions=versions, qps=qps), interval_seconds=10)


class RecordingLoad:
    """A generator that runs exactly what it was last asked to, measured by each plan's qps.

    It refuses plans in the namespace ``forbidden``, as the real one refuses a target it may
    not send to.
    """

    def __init__(self) -> None:
        self.running: dict[str, LoadPlan] = {}
        self.calls: list[dict[str, LoadPlan]] = []
        self.closed = False

    def converge(self, plans: Mapping[str, LoadPlan]) -> dict[str, str]:
        assert not self.closed
        self.calls.append(dict(plans))
        refused = {k: "namespace forbidden" for k, p in plans.items() if p.namespace == "forbidden"}
        self.running = {k: p for k, p in plans.items() if k not in refused}
        return refused

    def observe(self, run_id: str, version: str, metric: str) -> MetricValue:
        running = self.running.get(run_id)
        if running is None or metric != "request-count" or version not in ("v1", "v2"):
            return MetricValue(None, status="no-data")
        return MetricValue(running.load.qps, sample_size=1)

    def close(self) -> None:
        self.closed = True
        self.running = {}

    def qps_running(self) -> list[float]:
        return sorted(p.load.qps for p in self.running.values())


def count(load: LoadGenerator, run_id: str = RUN) -> float | None:
    """The request count the repo's loop reads for ``v1`` of ``run_id``."""
    return load.observe(run_id, "v1", "request-count").value


def test_two_repos_with_the_same_experiment_never_see_each_others_runs() -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    a, b = shared.scoped("https://git.example/a/env"), shared.scoped("https://git.example/b/env")
    assert a.converge({RUN: plan(qps=5)}) == {}
    assert b.converge({RUN: plan(qps=7)}) == {}
    assert inner.qps_running() == [5, 7]  # two runs, not one overwritten by the other
    assert (count(a), count(b)) == (5, 7)


def test_one_repo_converging_to_no_plan_does_not_stop_the_others_runs() -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    a, b = shared.scoped("a"), shared.scoped("b")
    a.converge(
        {RUN: plan(qps=5), "demo/other@ffffffffffff": plan("demo/other@ffffffffffff", qps=6)}
    )
    b.converge({RUN: plan(qps=7)})
    assert a.converge({}) == {}
    assert inner.qps_running() == [7]
    assert count(b) == 7
    assert count(a) is None  # a's runs stopped: no data any more
    b.converge({RUN: plan(qps=7)})  # b's next tick changes nothing for b
    assert (inner.qps_running(), count(b)) == ([7], 7)


def test_a_repo_dropping_one_run_keeps_its_other_runs_and_the_other_repos() -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    a, b = shared.scoped("a"), shared.scoped("b")
    a.converge({"r1": plan("r1", qps=1), "r2": plan("r2", qps=2)})
    b.converge({"r1": plan("r1", qps=3)})
    a.converge({"r2": plan("r2", qps=2)})
    assert inner.qps_running() == [2, 3]
    assert (count(a, "r1"), count(a, "r2"), count(b, "r1")) == (None, 2, 3)


def test_a_refusal_is_told_to_the_repo_whose_plan_it_is_under_its_own_run_id() -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    a, b = shared.scoped("a"), shared.scoped("b")
    assert a.converge({RUN: plan(namespace="forbidden")}) == {RUN: "namespace forbidden"}
    assert b.converge({RUN: plan(qps=7)}) == {}  # a's refused run is not b's
    assert count(a) is None
    assert count(b) == 7


def test_forgetting_a_repo_stops_only_its_runs() -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    a, b = shared.scoped("a"), shared.scoped("b")
    a.converge({RUN: plan(qps=5)})
    b.converge({RUN: plan(qps=7)})
    shared.forget("a")
    assert inner.qps_running() == [7]
    assert (count(a), count(b)) == (None, 7)
    shared.forget("never-served")
    assert inner.qps_running() == [7]


def test_closing_stops_every_run_and_the_generator() -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    shared.scoped("a").converge({RUN: plan(qps=5)})
    shared.close()
    assert inner.closed
    assert inner.running == {}


REPOS = st.sampled_from(["a", "b", "c"])
RUN_IDS = st.sampled_from([RUN, "demo/other@ffffffffffff", "team/x@000000000000"])
PLANS = st.dictionaries(RUN_IDS, st.integers(1, 100).map(float), max_size=3)


@given(st.lists(st.tuples(REPOS, PLANS | st.none()), max_size=30))
def test_the_generator_always_runs_the_last_plans_of_every_repo_and_nothing_else(
    steps: list[tuple[str, dict[str, float] | None]],
) -> None:
    inner = RecordingLoad()
    shared = SharedLoad(inner)
    last: dict[str, dict[str, float]] = {}
    for repo, wanted in steps:
        if wanted is None:
            shared.forget(repo)
            last.pop(repo, None)
        else:
            shared.scoped(repo).converge({r: plan(r, qps=q) for r, q in wanted.items()})
            last[repo] = wanted
        assert inner.qps_running() == sorted(q for runs in last.values() for q in runs.values())
        for name in ("a", "b", "c"):
            for run_id in (RUN, "demo/other@ffffffffffff", "team/x@000000000000"):
                assert count(shared.scoped(name), run_id) == last.get(name, {}).get(run_id)
