import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.demo import scenario


def git_output(repo: Path, *args: str) -> str:
    """What plain git prints for ``args`` in the bare repo ``repo``."""
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.mark.e2e
@pytest.mark.parametrize(("name", "outcome"), [("pass", "promoted"), ("fail", "rolled-back")])
def test_demo_scenario_ends_as_it_should_and_git_shows_the_audit_trail(
    tmp_path: Path, name: str, outcome: str
) -> None:
    out = io.StringIO()
    result = scenario.run(name, out, workdir=tmp_path)
    assert result.ok, out.getvalue()
    assert result.outcome == outcome
    repo = tmp_path / "env.git"
    # exactly one outcome commit on main, carrying the trailers, queried with plain git
    outcomes = git_output(
        repo, "log", "main", "--format=%(trailers:key=Rollout-Outcome,valueonly)"
    ).split()
    assert outcomes == [outcome]
    files = git_output(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert files == ["apps/bookinfo/productpage.yaml", "apps/bookinfo/routing.yaml"]
    stable = git_output(repo, "show", "main:apps/bookinfo/productpage.yaml")
    expected_image = "productpage-v2" if outcome == "promoted" else "productpage-v1"
    assert f"examples-bookinfo-{expected_image}:1.18.0" in stable
    weights = git_output(
        repo, "log", "reconciler-state", "--format=%(trailers:key=Rollout-Weights,valueonly)"
    ).split()
    assert weights[0] == "productpage-stable=100,productpage-candidate=0"
    assert "productpage-stable=80,productpage-candidate=20" in weights
    # the outcome says old -> new and links the commit that brought the candidate
    body = git_output(repo, "log", "-1", "main", "--format=%B")
    if outcome == "promoted":
        assert (
            "apps/bookinfo/productpage.yaml: image docker.io/istio/examples-bookinfo-productpage-"
            "v1:1.18.0 -> docker.io/istio/examples-bookinfo-productpage-v2:1.18.0"
        ) in body
    assert "apps/bookinfo/productpage-candidate.yaml: removed" in body
    brought = git_output(
        repo, "log", "-1", "main", "--format=%(trailers:key=Rollout-Candidate-Commit,valueonly)"
    ).strip()
    candidate_files = git_output(repo, "ls-tree", "-r", "--name-only", brought).split()
    assert "apps/bookinfo/experiment.yaml" in candidate_files
    # each judged iteration's evidence is in its state commit's body
    judged = git_output(repo, "log", "reconciler-state", "--format=%B", "--grep=^Rollout-Verdict:")
    assert "Evidence of iteration 1 (confidence 0.95" in judged
    assert "istio/error-rate " in judged
    assert "(limit <= 0.01)" in judged
    printed = out.getvalue()
    assert "$ git log --oneline reconciler-state" in printed
    assert "VirtualService productpage now routes: stable=100, candidate=0" in printed


@pytest.mark.e2e
def test_status_lists_the_archived_experiment_as_json(tmp_path: Path) -> None:
    scenario.run("pass", io.StringIO(), workdir=tmp_path)
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "status",
            "--repo",
            str(tmp_path / "env.git"),
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (row,) = json.loads(shown.stdout)
    main_tip = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "env.git"), "rev-parse", "main"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert row["id"].startswith("bookinfo/productpage-canary@")
    assert row["target"] == "bookinfo/productpage"
    assert row["phase"] == "Promoted"
    assert row["iteration"] == 6
    assert row["weights"] == {"productpage-stable": 100, "productpage-candidate": 0}
    assert row["winner"] == "productpage-candidate"
    assert row["outcome_commit"] == main_tip


README = Path(__file__).resolve().parents[2] / "README.md"


def audit_commands() -> list[str]:
    """The shell commands of README's "Reading the audit trail" block, joined lines and all."""
    text = README.read_text()
    section = text[text.index("## Reading the audit trail") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("\n```", start)]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split("   #", 1)[0].strip()
        if command:
            commands.append(command)
    return commands


@pytest.mark.e2e
def test_every_audit_command_of_the_readme_answers_after_the_demo(tmp_path: Path) -> None:
    scenario.run("pass", io.StringIO(), workdir=tmp_path)
    repo = tmp_path / "env.git"
    commands = audit_commands()
    assert len(commands) >= 6, commands
    answers = {}
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        answers[command] = done
        if "experiments/" in command:  # the live document: archived once the demo ends
            assert done.returncode != 0, command
            continue
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert done.stdout.strip(), command
    shown = next(a for c, a in answers.items() if c.startswith("git show") and "archive/" in c)
    assert json.loads(shown.stdout)["phase"] == "Promoted"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.e2e
def test_a_branch_that_does_not_exist_is_an_error_naming_the_branches_that_do(
    tmp_path: Path,
) -> None:
    scenario.run("pass", io.StringIO(), workdir=tmp_path)
    repo = str(tmp_path / "env.git")
    for command in (
        ["status", "--repo", repo, "--state-branch", "reconciler-stat"],
        ["history", "bookinfo/productpage-canary", "--repo", repo, "--state-branch", "state"],
        ["recover", "--dry-run", "--repo", repo, "--main-branch", "master"],
        ["status", "--repo", repo, "--main-branch", "master"],
    ):
        done = cli(*command)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        (line,) = done.stderr.splitlines()
        branch, option = command[-1], command[-2]
        assert f"has no branch '{branch}' ({option}); its branches: main, reconciler-state" in line
        assert "no experiments recorded" not in done.stdout


@pytest.mark.e2e
def test_recover_without_dry_run_says_that_run_recovers_by_itself(tmp_path: Path) -> None:
    scenario.run("pass", io.StringIO(), workdir=tmp_path)
    done = cli("recover", "--repo", str(tmp_path / "env.git"))
    assert done.returncode == 2
    assert "`reconciler run` does by itself on its first tick" in done.stderr
    assert "Add --dry-run to see it." in done.stderr
    assert cli("recover", "--dry-run", "--repo", str(tmp_path / "env.git")).returncode == 0


def test_the_demo_says_when_the_env_repo_it_prints_is_removed(tmp_path: Path) -> None:
    out = io.StringIO()
    scenario.run("pass", out, workdir=tmp_path)
    assert out.getvalue().startswith(f"Env repo: {tmp_path / 'env.git'}  scenario: pass")
    printed = cli("demo").stdout.splitlines()[0]
    assert "(removed at the end; --workdir DIR keeps it)" in printed
    path = Path(printed.split()[2])
    assert not path.exists()
