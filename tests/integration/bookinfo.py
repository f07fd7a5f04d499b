"""The demo's bookinfo canary in a real bare Env repo, run by one reconciler on a driven clock.

The world the loop, command, report, watch, notification and audit tests share: ``Harness``
over the demo's commits (the experiment file replaceable), git to read the repository as a
person would, and the control commands through the real CLI. It drives and reads and
asserts nothing (it fails a test only when a run never ends), so what each test proves
stays in the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.control_cmds import COMMANDS
from reconciler.controller.report import TickReport
from reconciler.demo import scenario
from reconciler.metrics.profile import Profile
from reconciler.testing import DrivenClock, Harness

APP = "apps/bookinfo"
KEY = "bookinfo/productpage-canary"
STABLE, CANDIDATE = "productpage-stable", "productpage-candidate"
ALICE = "Alice Example <alice@example.com>"


class BookinfoWorld:
    """The demo's Env repo, its cluster and metrics, and one reconciler process."""

    def __init__(
        self, tmp: Path, candidate: Profile | None = None, *, file: bytes | None = None
    ) -> None:
        """``candidate`` is how the candidate behaves; ``file`` replaces CI's experiment.yaml."""
        self.tmp = tmp
        self.clock = DrivenClock()
        commits = scenario.app_commits()
        if file is not None:
            message, files = commits[-1]
            commits[-1] = (message, {**files, f"{APP}/experiment.yaml": file})
        self.harness = Harness.create(
            tmp,
            commits,
            {STABLE: Profile(), CANDIDATE: candidate or Profile()},
            namespace="bookinfo",
            clock=self.clock,
        )

    def tick(self, advance: float = 1.0) -> TickReport:
        """Let ``advance`` seconds pass, then run one tick."""
        self.clock.advance(advance)
        return self.harness.tick()

    def run_until_final(self, limit: int = 30) -> list[TickReport]:
        """Tick until a run records a final phase: every tick's report, that one last."""
        reports = []
        for _ in range(limit):
            report = self.tick()
            reports.append(report)
            if any(t.state.phase.final for t, _ in report.recorded):
                return reports
        pytest.fail("the experiment did not finish")

    def git(self, *args: str) -> str:
        """``git --git-dir REMOTE ARGS...``'s output."""
        return subprocess.run(
            ["git", "--git-dir", self.harness.remote, *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def outcomes_on_main(self) -> list[str]:
        """The ``Rollout-Outcome`` trailers on main, newest first."""
        return self.git("log", "main", "--format=%(trailers:key=Rollout-Outcome,valueonly)").split()

    def state(self, key: str = KEY) -> dict[str, object]:
        """The live state document of ``key`` on the state branch, as JSON."""
        loaded: dict[str, object] = json.loads(
            self.git("show", f"reconciler-state:experiments/{key}.json")
        )
        return loaded

    def phase(self, key: str = KEY) -> str:
        """The live run's phase, as the state document spells it."""
        return str(self.state(key)["phase"])

    def pending(self) -> list[str]:
        """The command files on the state branch, which the loop has not answered yet."""
        return [
            line
            for line in self.git("ls-tree", "-r", "--name-only", "reconciler-state").splitlines()
            if line.startswith("commands/")
        ]

    def command(self, verb: str, *args: str, author: str = ALICE) -> tuple[int, str]:
        """Run ``reconciler VERB KEY ...`` as a person would; (exit code, output)."""
        command = next(c for c in COMMANDS if c.name == verb)
        result = CliRunner().invoke(
            command,
            [KEY, "--repo", self.harness.remote, "--author", author, *args],
            catch_exceptions=False,
        )
        return result.exit_code, result.output
