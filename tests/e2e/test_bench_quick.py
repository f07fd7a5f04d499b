"""The benchmarks' quick modes, so they never rot: each runs in a few seconds.

Figures are not asserted (the machine running the tests is busy with them); what is
asserted is the final JSON line's shape and the benchmarks' own correctness checks: every
promotion landed once with a one-line diff, no CI commit lost, nothing forced, one push
per tick with one commit per transition, every repo of a fleet ticked and its Leases taken
over after a kill, and nothing left running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.prometheus import require_prometheus
from tests.gitutil import require_git

BENCH = Path(__file__).resolve().parents[2] / "hack" / "bench.py"

pytestmark = pytest.mark.e2e


def run_bench(*args: str, timeout: float = 120.0) -> tuple[str, dict[str, Any]]:
    require_git()
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return done.stdout, json.loads(lines[-1])


def test_promote_times_ours_the_shell_way_and_the_floor_on_both_servers() -> None:
    printed, result = run_bench("promote")
    assert result["bench"] == "promote"
    assert set(result["servers"]) == {"git", "http"}
    for figures in result["servers"].values():
        for series in ("ours_ms", "shell_ms", "floor_ms"):
            assert figures[series]["min"] <= figures[series]["median"] <= figures[series]["max"]
        assert figures["ours_to_floor"] > 0
        assert figures["shell_to_ours"] > 0
    assert "ours/floor" in printed


@pytest.mark.parametrize("transport", ["git", "https"])
def test_race_lands_every_reported_outcome_once_and_loses_no_ci_commit(transport: str) -> None:
    _printed, result = run_bench("race", "--transport", transport)
    assert (result["bench"], result["transport"]) == ("race", transport)
    assert result["force_pushes"] == 0
    for way in ("ours", "shell"):
        assert result[way]["ci_lost"] == 0
        assert result[way]["ci_pushed"] == result[way]["ci_made"] > 0
        assert result[way]["attempts_max"] >= 1
        assert 0 <= result[way]["landed"] <= result[way]["promotions"]
    ours = result["ours"]
    assert sum(ours["ticks_to_land"].values()) == ours["landed"]
    assert ours["landed_within_3_ticks"] <= ours["landed"]


def test_tick_records_every_transition_as_a_commit_in_one_push() -> None:
    _printed, result = run_bench("tick")
    assert result["bench"] == "tick"
    assert result["pushes_per_tick"] == 1
    assert result["commits_per_tick"] == result["experiments"] > 0
    assert set(result["phases_ms"]) >= {"fetch", "load", "plan", "push"}


def test_memory_reports_the_peak_of_a_process_holding_every_experiment() -> None:
    _printed, result = run_bench("memory")
    assert result["bench"] == "memory"
    assert result["pushes"] == 1
    assert result["peak_mib"] >= result["imported_mib"] > 0


def test_recovery_loads_every_live_experiment_in_a_fresh_process() -> None:
    printed, result = run_bench("recovery")
    assert result["bench"] == "recovery"
    assert result["experiments"] == 20
    assert result["seconds"] > 0
    assert "load ms" in printed


def test_stats_prints_the_calibration_table_with_every_row_judged() -> None:
    printed, result = run_bench("stats")
    assert result["bench"] == "stats"
    scenarios = {row["scenario"].split(" (")[0].split(",")[0] for row in result["rows"]}
    assert {"no real difference", "planned power", "progressive canary end to end"} <= scenarios
    assert {row["confidence"] for row in result["rows"]} == {0.95, 0.9}
    for row in result["rows"]:
        assert 0.0 <= row["rate"] <= 1.0
        assert row["side"] in {"at most", "at least"}
    assert "scenario" in printed


def test_load_reaches_its_rate_and_reports_the_latency_it_adds() -> None:
    printed, result = run_bench("load")
    assert result["bench"] == "load"
    for series in (result["one"], result["many"]):
        assert series["errors"] == 0
        assert series["requests"] > 0
        assert 0 < series["achieved_qps"] <= series["target_qps"] * 1.1
        assert series["server_requests"] > 0
        assert set(series["client_ms"]) == {"50", "90", "99"}
    assert result["many"]["versions"] == 20
    assert "added p50" in printed


def test_fleet_ticks_every_repo_in_one_process_and_survivors_take_over_a_killed_replica() -> None:
    require_prometheus()
    printed, result = run_bench("fleet", timeout=180.0)
    assert result["bench"] == "fleet"
    # every repo ticked in the window, each tick one iteration per experiment in one push
    # (counted from the log and from /metrics samples: a tick at either end of the window
    # may be in one count and not in the other)
    assert result["repos_ticked"] == result["repos"] == 5
    assert result["ticks"] >= result["repos"]
    assert result["ticks_failed"] == 0
    ticks, per_tick = result["ticks"], result["experiments"]
    assert abs(result["transitions"] - ticks * per_tick) <= 2 * per_tick
    assert abs(result["pushes"] - ticks) <= 1
    assert result["push_errors"] == result["push_conflicts"] == 0
    assert result["queries_per_round"] > 0
    assert 0 < result["tick_s"]["p50"] <= result["tick_s"]["max"]
    assert result["interval"] < result["gap_s"]["p50"] <= result["gap_s"]["max"]
    assert result["cpu_s"] > 0
    assert result["rss_mib"]["peak"] >= result["rss_mib"]["final"] > 0
    # the servers' CPU read per server: each one the ticks use did work in the window
    busy = {name for name, spent in result["servers"].items() if spent["ms_per_tick"] > 0}
    assert busy >= {"Prometheus", "API server", "git daemon", "simulators"}
    assert "the world's CPU" in printed
    # the killed replica's Leases, each held by the survivor
    takeover = result["takeover"]
    assert takeover["replicas"] == 2
    assert takeover["killed_held"] >= 1
    assert 0 < takeover["lease_s"]["min"] <= takeover["seconds"]
    # (one may be handed back for balance at the moment they are listed)
    assert result["repos"] - 1 <= sum(takeover["held_after"]) <= result["repos"]
    assert set(result["goals"]) == {"memory", "interval", "takeover"}
    assert "take-over" in printed
