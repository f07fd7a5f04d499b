from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.load.admission import Caps, admit, payload_of, plan_problem, plan_qps
from reconciler.ports import LoadPlan
from reconciler.spec.model import Load, VersionLoad


def plan(run: str, qps: float = 10, versions: int = 2, **load: object) -> LoadPlan:
    return LoadPlan(
        run,
        "demo",
        Load(
            versions=tuple(
                VersionLoad(f"v{i}", f"http://v{i}.demo.svc:8080/") for i in range(versions)
            ),
            qps=qps,
            **load,  # type: ignore[arg-type]
        ),
        interval_seconds=10,
    )


@pytest.mark.parametrize(
    ("one", "why"),
    [
        (plan("r", qps=60), "over load.maxQpsPerExperiment (100)"),
        (plan("r", connections=17), "over load.maxConnections (16)"),
        (plan("r", payload="x" * 2000), "over load.maxPayloadBytes (1000)"),
        (plan("r", qps=0), "qps must be above 0"),
        (plan("r", connections=0), "connections must be at least 1"),
        (plan("r", timeout_seconds=0), "timeout must be above 0"),
        (plan("r", duration_seconds=0), "duration must be above 0"),
        (plan("r", requests=0), "request count must be at least 1"),
        (plan("r", method="TRACE"), "method 'TRACE'"),
        (plan("r", versions=0), "names no version"),
    ],
)
def test_a_plan_over_a_cap_or_without_sense_is_refused_with_why(one: LoadPlan, why: str) -> None:
    caps = Caps(max_payload_bytes=1000)
    got = plan_problem(one, caps)
    assert got is not None
    assert why in got
    assert admit({"r": one}, (), caps) == ({}, {"r": got})


def test_a_refused_target_or_header_names_its_version() -> None:
    base = plan("r")
    bad = VersionLoad("v1", "http://10.0.0.1/")
    refused = LoadPlan("r", "demo", Load(versions=(base.load.versions[0], bad)), 10)
    assert plan_problem(refused, Caps()) == (
        "version v1: 'http://10.0.0.1/': an IP address is not a Service name"
    )
    twice = LoadPlan("r", "demo", Load(versions=(base.load.versions[0],) * 2), 10)
    assert plan_problem(twice, Caps()) == "a version is named twice in the load"
    header = VersionLoad("v0", "http://v0.demo.svc/", (("Host", "evil"),))
    why = plan_problem(LoadPlan("r", "demo", Load(versions=(header,)), 10), Caps())
    assert why is not None
    assert why.startswith("version v0: header 'Host'")


def test_the_total_cap_keeps_the_running_runs_and_refuses_newcomers_that_do_not_fit() -> None:
    caps = Caps(max_qps_total=100)
    # two versions each: a and b ask 60 requests a second, c 20
    plans = {"a": plan("a", qps=30), "b": plan("b", qps=30), "c": plan("c", qps=10)}
    admitted, refused = admit(plans, running={"b"}, caps=caps)
    assert sorted(admitted) == ["b", "c"]
    assert list(refused) == ["a"]
    assert "over load.maxQpsTotal (100; 60 in use)" in refused["a"]
    admitted, refused = admit(plans, running=(), caps=caps)
    assert sorted(admitted) == ["a", "c"]
    assert "over load.maxQpsTotal (100; 60 in use)" in refused["b"]


def test_the_payload_file_wins_over_the_inline_payload() -> None:
    inline = plan("r", payload="inline")
    assert payload_of(inline) == b"inline"
    with_file = LoadPlan("r", "demo", inline.load, 10, payload=b"from the file")
    assert payload_of(with_file) == b"from the file"
    assert payload_of(plan("r")) is None


def test_a_version_with_its_own_rate_counts_at_that_rate() -> None:
    load = Load(
        versions=(
            VersionLoad("v1", "http://app-v1.shop.svc"),
            VersionLoad("v2", "http://app-v2.shop.svc", qps=30.0),
        ),
        qps=8.0,
    )
    own = LoadPlan("shop/app@0123456789ab", "shop", load, 1.0)
    assert plan_qps(own) == 38.0
    zero = replace(load, versions=(VersionLoad("v1", "http://app-v1.shop.svc", qps=0.0),))
    assert plan_problem(replace(own, load=zero), Caps()) is not None
