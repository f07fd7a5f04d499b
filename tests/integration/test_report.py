"""``reconciler report``: a run's page and JSON, made from a real Env repo's Git alone.

Each world runs a real experiment through the real loop (in-process, driven clock, the
in-memory cluster and profile metrics) against a real bare repository; people's commands
go through the real CLI. The assertions read what a user reads: the JSON's series and
commits, the HTML's text, and what headless Chromium (Debian's ``chromium``) renders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli.report_cmd import report
from reconciler.demo import scenario
from reconciler.engine.state import HISTORY_LIMIT
from reconciler.metrics.profile import Profile
from tests.browser import png_colours, render
from tests.integration.bookinfo import ALICE, APP, CANDIDATE, KEY, STABLE, BookinfoWorld

BOB = "Bob Ops <bob@example.com>"
HOSTILE = '<script>alert("pwned")</script> & <img src=x onerror=alert(1)>'
METRICS = ["istio/error-rate", "istio/mean-latency", "istio/latency-p95", "istio/request-count"]


def experiment(iterations: int) -> bytes:
    """The demo's canary with ``iterations`` iterations and a third objective (p95)."""
    text = scenario.demo_file("experiment.yaml")
    text = text.replace(b"iterationsPerLoop: 6", f"iterationsPerLoop: {iterations}".encode())
    return text.replace(
        b"      upperLimit: 300\n",
        b"      upperLimit: 300\n    - metric: istio/latency-p95\n      upperLimit: 500\n",
    )


class World(BookinfoWorld):
    """The bookinfo world running a canary of ``iterations`` iterations, and its report."""

    def __init__(self, tmp: Path, iterations: int, candidate: Profile) -> None:
        super().__init__(tmp, candidate, file=experiment(iterations))

    def command_ok(self, verb: str, *args: str, author: str = ALICE) -> None:
        """``reconciler VERB KEY ...`` as a person runs it; it must succeed."""
        code, out = self.command(verb, *args, author=author)
        assert code == 0, out

    def report(self, name: str, *args: str) -> tuple[Path, str]:
        """``reconciler report KEY -o NAME ...``: the file it wrote and what it said."""
        out = self.tmp / name
        result = CliRunner().invoke(
            report, [KEY, "--repo", self.harness.remote, "-o", str(out), *args]
        )
        assert result.exit_code == 0, result.output
        return out, result.output

    def report_json(self, *args: str) -> dict[str, Any]:
        out, _ = self.report("report.json", *args)
        loaded: dict[str, Any] = json.loads(out.read_text())
        return loaded

    def commit_with(self, branch: str, trailer: str) -> str:
        """The newest commit of ``branch`` whose message carries ``trailer``."""
        return self.git("log", "-1", "--format=%H", f"--grep=^{trailer}", branch).strip()


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> World:
    """24 iterations (more than a document keeps), paused and resumed by two people."""
    world = World(
        tmp_path_factory.mktemp("promoted"),
        24,
        Profile(error_rate=0.002, mean_latency_ms=60, p95_latency_ms=150),
    )
    for _ in range(4):
        world.tick()
    world.command_ok("pause", "--reason", HOSTILE)
    for _ in range(3):
        world.tick(advance=5)
    world.command_ok("resume", "--reason", "dashboards are green again", author=BOB)
    world.run_until_final(limit=200)
    return world


def test_the_json_holds_every_iteration_its_weights_metrics_limits_and_the_outcome(
    promoted: World,
) -> None:
    data = promoted.report_json()
    assert data["experiment"] == KEY
    assert data["phase"] == "Promoted"
    assert data["winner"] == CANDIDATE
    assert data["versions"] == [STABLE, CANDIDATE]
    # every iteration once, though each state document keeps only the last 20
    assert HISTORY_LIMIT < 24
    assert [i["iteration"] for i in data["iterations"]] == list(range(1, 25))
    assert all(i["verdicts"] == {STABLE: "pass", CANDIDATE: "pass"} for i in data["iterations"])
    weights = data["weights"]
    assert weights["iterations"] == list(range(25))
    assert weights["versions"][CANDIDATE] == [20, 40, 60, *[80] * 21, 0]
    assert weights["versions"][STABLE] == [80, 60, 40, *[20] * 21, 100]
    series = {m["metric"]: m for m in data["metrics"]}
    assert list(series) == METRICS
    assert (series["istio/error-rate"]["upperLimit"], series["istio/error-rate"]["lowerLimit"]) == (
        0.01,
        None,
    )
    assert series["istio/mean-latency"]["upperLimit"] == 300
    assert series["istio/latency-p95"]["upperLimit"] == 500
    assert series["istio/request-count"]["upperLimit"] is None
    assert series["istio/error-rate"]["values"][CANDIDATE] == [0.002] * 24
    assert series["istio/error-rate"]["values"][STABLE] == [0.001] * 24
    assert series["istio/latency-p95"]["values"][CANDIDATE] == [150] * 24
    served = series["istio/request-count"]["values"][CANDIDATE]
    assert served == sorted(served)
    assert served[0] < served[-1]


def test_the_json_names_the_commits_that_started_commanded_decided_and_ended_the_run(
    promoted: World,
) -> None:
    data = promoted.report_json()
    commits = data["commits"]
    first = promoted.git("rev-list", "--max-parents=0", "reconciler-state").strip()
    assert commits["started"]["commit"] == first
    assert commits["started"]["author"] == "reconciler demo <reconciler-demo@example.invalid>"
    decided = promoted.commit_with("reconciler-state", "Rollout-Phase: Promoting")
    assert commits["decided"]["commit"] == decided
    ended = promoted.commit_with("reconciler-state", "Rollout-Phase: Promoted")
    assert commits["ended"]["commit"] == ended
    outcome = commits["outcome"]
    assert outcome["commit"] == promoted.git("rev-parse", "main").strip()
    assert (outcome["outcome"], outcome["winner"], outcome["stateCommit"]) == (
        "promoted",
        CANDIDATE,
        decided,
    )
    pause, resume = data["commands"]
    asked = promoted.git("log", "-1", "--format=%H", "--author=Alice", "reconciler-state")
    assert pause["commit"] == asked.strip()
    assert (pause["command"], pause["author"], pause["status"], pause["reason"]) == (
        "pause",
        ALICE,
        "done",
        HOSTILE,
    )
    answer = promoted.commit_with("reconciler-state", f"Rollout-Command-Commit: {pause['commit']}")
    assert pause["answeredIn"] == answer
    assert (resume["command"], resume["author"], resume["status"]) == ("resume", BOB, "done")
    assert resume["reason"] == "dashboards are green again"


def test_the_page_escapes_what_the_repo_holds_and_draws_one_chart_per_metric(
    promoted: World,
) -> None:
    page, said = promoted.report("report.html")
    text = page.read_text()
    assert f"wrote {page}" in said
    assert "<script" not in text
    assert "<img" not in text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &lt;img" in text
    assert "Alice Example &lt;alice@example.com&gt;" in text
    assert text.count('<svg class="chart"') == 1 + len(METRICS)
    for metric in METRICS:
        assert f"<h3>{metric}</h3>" in text
    assert "upper limit 0.01" in text
    assert "Rollout-Outcome promoted, Rollout-Winner productpage-candidate" in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text


CHARTS = """
Array.from(document.querySelectorAll("svg.chart")).map((svg) => ({
  title: svg.getAttribute("aria-label"),
  width: svg.getBoundingClientRect().width,
  limits: svg.querySelectorAll("path.limit").length,
  series: Array.from(svg.querySelectorAll("path.series")).map((path) => ({
    d: path.getAttribute("d") || "",
    length: path.getTotalLength(),
  })),
  scripts: document.scripts.length,
}))
"""


def test_chromium_renders_the_page_with_its_charts_and_no_console_errors(
    promoted: World, tmp_path: Path
) -> None:
    page, _ = promoted.report("browser.html")
    started = time.monotonic()
    rendered = render(page, CHARTS, tmp_path)
    shot = tmp_path / "report.png"
    shot.write_bytes(rendered.screenshot)
    print(f"chromium rendered the report in {time.monotonic() - started:.1f} s: {shot}")  # noqa: T201
    assert rendered.errors == []
    charts = rendered.value
    assert [c["title"] for c in charts] == [
        "Traffic weight (%) per version over iterations",
        *(f"{m} per version over iterations" for m in METRICS),
    ]
    assert [c["limits"] for c in charts] == [0, 1, 1, 1, 0]
    for chart in charts:
        assert chart["scripts"] == 0
        assert chart["width"] > 300
        assert len(chart["series"]) == 2, chart["title"]
        for path in chart["series"]:
            assert path["d"].startswith("M")
            assert path["length"] > 100, chart["title"]
    assert shot.stat().st_size > 10_000
    assert png_colours(rendered.screenshot) > 50, "the screenshot is blank"


def test_a_rolled_back_run_shows_the_failed_verdicts_and_the_rollback_commit(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, 12, Profile(error_rate=0.2))
    world.run_until_final(limit=200)
    data = world.report_json()
    assert data["phase"] == "RolledBack"
    assert data["winner"] is None
    assert [i["verdicts"][CANDIDATE] for i in data["iterations"]] == ["fail"] * 3
    error_rate = next(m for m in data["metrics"] if m["metric"] == "istio/error-rate")
    assert error_rate["values"][CANDIDATE] == [0.2] * 3
    assert error_rate["upperLimit"] == 0.01
    assert data["weights"]["versions"][CANDIDATE][-1] == 0
    assert data["weights"]["versions"][STABLE][-1] == 100
    outcome = data["commits"]["outcome"]
    assert outcome["commit"] == world.git("rev-parse", "main").strip()
    assert (outcome["outcome"], outcome["winner"]) == ("rolled-back", None)
    assert data["commits"]["decided"]["subject"].startswith("productpage: ")
    page, _ = world.report("report.html")
    assert "RolledBack" in page.read_text()


def test_without_an_id_the_live_run_is_reported_and_an_id_picks_an_older_one(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, 12, Profile(error_rate=0.2))
    world.run_until_final(limit=200)
    first = world.report_json()["id"]
    # CI brings the candidate back with a changed experiment file: a new run starts.
    world.harness.push_main(
        "ci: productpage v2 again",
        {
            f"{APP}/productpage-candidate.yaml": scenario.demo_file("productpage-candidate.yaml"),
            f"{APP}/experiment.yaml": experiment(10),
        },
    )
    world.harness.sync()
    world.tick()
    world.tick()
    world.command_ok("pause", "--reason", "look at it first")  # not answered yet: pending
    live = world.report_json()
    assert live["id"] != first
    assert live["phase"] == "Progressing"
    assert live["commits"]["outcome"] is None
    assert [(c["command"], c["status"], c["author"]) for c in live["commands"]] == [
        ("pause", "pending", ALICE)
    ]
    assert world.report_json("--id", first)["phase"] == "RolledBack"
    assert world.report_json("--id", first.partition("@")[2])["id"] == first


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )


def test_an_unknown_experiment_or_run_is_one_line_and_a_non_zero_exit(promoted: World) -> None:
    out = promoted.tmp / "nothing.html"
    remote = promoted.harness.remote
    unknown = cli("report", "bookinfo/nope", "--repo", remote, "-o", str(out))
    assert unknown.returncode == 1
    assert unknown.stderr == "Error: nothing recorded for bookinfo/nope on reconciler-state\n"
    run = cli("report", KEY, "--id", "0123456789ab", "--repo", remote, "-o", str(out))
    assert run.returncode == 1
    assert run.stderr == (
        f"Error: nothing recorded for run {KEY}@0123456789ab on reconciler-state\n"
    )
    other = cli(
        "report", KEY, "--id", "shop/checkout@0123456789ab", "--repo", remote, "-o", "x.json"
    )
    assert other.returncode == 1
    assert other.stderr == f"Error: run shop/checkout@0123456789ab is not a run of {KEY}\n"
    unsure = cli("report", KEY, "--repo", remote, "-o", str(promoted.tmp / "report.txt"))
    assert unsure.returncode == 2
    assert "name it .html or .json, or give --format html|json" in unsure.stderr
    assert not out.exists()


def test_a_50_iteration_report_stays_small(tmp_path: Path) -> None:
    world = World(tmp_path, 50, Profile(error_rate=0.002, mean_latency_ms=60))
    world.run_until_final(limit=200)
    started = time.monotonic()
    page, _ = world.report("report.html")
    took = time.monotonic() - started
    data = world.report_json()
    size = page.stat().st_size
    assert len(data["iterations"]) == 50
    assert len(data["versions"]) == 2
    assert len(data["metrics"]) == 4
    print(f"50 iterations, 2 versions, 4 metrics: {size:,} bytes of HTML, made in {took:.2f} s")  # noqa: T201
    assert size < 200_000
