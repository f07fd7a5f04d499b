"""``reconciler try`` on a user's own Env repo: the loop on a scratch copy, theirs untouched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitutil import git_env, require_git

DEMO = Path(__file__).resolve().parents[2] / "reconciler" / "demo" / "data" / "apps" / "bookinfo"

pytestmark = pytest.mark.e2e


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [require_git(), "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env=git_env(),
    ).stdout


def user_repo(tmp_path: Path, *, leave_out: str = "") -> Path:
    """A work tree with the demo app under apps/bookinfo, one commit on main."""
    repo = tmp_path / "my-env"
    app = repo / "apps" / "bookinfo"
    app.mkdir(parents=True)
    for path in DEMO.glob("*.yaml"):
        if path.name != leave_out:
            shutil.copy(path, app / path.name)
    (repo / "README.md").write_text("# my Env repo\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the app")
    return repo


def reconciler_try(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "try", "--repo", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_healthy_candidate_is_promoted_on_the_scratch_copy_and_the_repo_is_untouched(
    tmp_path: Path,
) -> None:
    repo = user_repo(tmp_path)
    refs_before = git(repo, "show-ref")
    done = reconciler_try(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Trying 1 experiment(s) of " in out
    assert "What a real cluster would need" not in out
    assert "iteration 6/6, objectives met, promoting productpage-candidate" in out
    assert (
        "productpage.yaml: image docker.io/istio/examples-bookinfo-productpage-v1:1.18.0 -> " in out
    )
    assert "$ git log --oneline reconciler-state" in out
    assert out.rstrip().endswith(
        f"bookinfo/productpage-canary: promoted\nnothing was pushed to {repo}"
    )
    assert git(repo, "show-ref") == refs_before  # no state branch, main where it was


def test_a_bad_profile_rolls_back_and_a_profile_file_sets_each_version(tmp_path: Path) -> None:
    repo = user_repo(tmp_path)
    bad = reconciler_try(repo, "--profile", "bad")
    assert bad.returncode == 0, bad.stdout + bad.stderr
    assert bad.stdout.rstrip().splitlines()[-2] == "bookinfo/productpage-canary: rolled-back"
    slow = tmp_path / "slow.yaml"
    slow.write_text("productpage-stable: {}\nproductpage-candidate: {meanLatencyMs: 900}\n")
    done = reconciler_try(repo, "--profile", str(slow))
    assert "bookinfo/productpage-canary: rolled-back" in done.stdout
    typo = tmp_path / "typo.yaml"
    typo.write_text("productpage-stable: {}\nproductpage-candidate: {errorRat: 0.5}\n")
    refused = reconciler_try(repo, "--profile", str(typo))
    assert refused.returncode == 1
    assert f"{typo}:2:25: 'productpage-candidate.errorRat' must be one of errorRate" in (
        refused.stderr
    )


def test_what_the_repo_lacks_is_said_first_and_a_stuck_experiment_stops(tmp_path: Path) -> None:
    repo = user_repo(tmp_path, leave_out="routing.yaml")
    done = reconciler_try(repo)
    assert done.returncode == 1
    assert "What a real cluster would need that the repo lacks:" in done.stdout
    assert (
        "productpage-stable's weight is in VirtualService bookinfo/productpage, which no "
        "manifest in the repo defines"
    ) in done.stdout
    assert "stopped: nothing advanced in 10 iterations' time" in done.stdout
    assert "1 experiment(s) did not end" in done.stdout


def test_an_experiment_file_from_the_work_tree_runs_alone_and_misnamed_versions_are_named(
    tmp_path: Path,
) -> None:
    repo = user_repo(tmp_path, leave_out="experiment.yaml")
    draft = repo / "apps" / "bookinfo" / "experiment.yaml"  # written, not committed yet
    draft.write_text(
        (DEMO / "experiment.yaml")
        .read_text()
        .replace("- name: productpage-candidate", "- name: v2")
    )
    done = reconciler_try(repo, "--experiment", str(draft), "--profile", "good")
    assert "bookinfo/productpage-canary: " in done.stdout, done.stdout + done.stderr
    assert (
        "no Deployment named 'v2' in the repo: the builtin metrics select a version's series "
        "by its Deployment's name"
    ) in done.stdout
    missing = reconciler_try(repo, "--experiment", "apps/nope.yaml")
    assert missing.returncode == 1
    assert "--experiment apps/nope.yaml: neither a YAML file on main nor a readable local file" in (
        missing.stderr
    )
