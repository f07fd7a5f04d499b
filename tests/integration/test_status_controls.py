"""``reconciler status`` says when a run is paused or awaits an approval, and its last command.

The loop does not write these fields yet in every path, so the state document is written
here as the loop writes one: a state commit (``records.state_commit``) pushed through the
store to a real bare Env repo.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from reconciler.controller.records import state_commit
from reconciler.demo import scenario
from reconciler.engine.control import CommandRecord, Gate
from reconciler.engine.experiment import Transition
from reconciler.engine.state import Phase
from reconciler.metrics.profile import Profile
from reconciler.spec.model import Approval, GateName
from reconciler.testing import DrivenClock, Harness, constant

ANN = "Ann <ann@example.com>"


def status(remote: str, *options: str) -> str:
    command = [sys.executable, "-m", "reconciler", "status", "--repo", remote, *options]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def test_status_shows_the_pause_the_approval_gate_and_the_last_command(tmp_path: Path) -> None:
    clock = DrivenClock()
    harness = Harness.create(
        tmp_path,
        scenario.app_commits(),
        {"productpage-stable": Profile(), "productpage-candidate": Profile()},
        namespace="bookinfo",
        clock=clock,
    )
    clock.advance(1)
    ((started, _),) = harness.tick().recorded
    now = clock()
    pause = CommandRecord("a" * 40, "pause", ANN, now, "done", "paused", reason="dashboards")
    approve = CommandRecord("b" * 40, "approve", ANN, now + 5, "refused", "not at a gate")
    spec = replace(
        started.state.spec,
        approval=Approval(before=(GateName.PROMOTION,), timeout_seconds=3600),
    )
    state = replace(
        started.state,
        spec=spec,
        phase=Phase.AWAITING_APPROVAL,
        gate=Gate("promotion", now, winner="productpage-candidate"),
        paused=pause,
        commands=(pause, approve),
        updated_at=now + 5,
    )
    store = harness.store
    store.fetch()
    commit = state_commit(Transition(state, (), "productpage: awaiting approval"))
    store.update_branch(store.state_branch, constant([commit]))

    (row,) = (r for r in json.loads(status(harness.remote, "-o", "json")) if r["id"] == state.id)
    assert row["phase"] == "AwaitingApproval"
    assert row["paused"] == {
        "by": ANN,
        "since": "2027-01-15T08:00:01+00:00",
        "reason": "dashboards",
        "commit": "a" * 40,
    }
    gate = row["gate"]
    assert (gate["before"], gate["winner"], gate["on_timeout"]) == (
        "promotion",
        "productpage-candidate",
        "rollback",
    )
    assert (gate["since"], gate["times_out_at"]) == (
        "2027-01-15T08:00:01+00:00",
        "2027-01-15T09:00:01+00:00",
    )
    assert gate["text"].startswith("before promotion of productpage-candidate, since ")
    last = row["last_command"]
    assert (last["command"], last["by"], last["result"], last["why"]) == (
        "approve",
        ANN,
        "refused",
        "not at a gate",
    )

    table = status(harness.remote)
    (row_line,) = (text for text in table.splitlines() if "bookinfo/productpage " in text)
    assert row_line.startswith(state.id)
    assert "AwaitingApproval (paused) before promotion" in row_line
    assert f"{state.id} is paused by {ANN} since 2027-01-15T08:00:01+00:00: dashboards" in table
    assert f"{state.id} is awaiting approval before promotion of productpage-candidate" in table
    assert (
        f"{state.id}: last command approve by {ANN} at 2027-01-15T08:00:06+00:00: "
        "refused (not at a gate)"
    ) in table
