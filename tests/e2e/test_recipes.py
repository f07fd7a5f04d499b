"""README's kustomize recipe (docs/recipes/kustomize), file for file: it renders, validates
strictly, and a promotion on it sets the base's newTag and removes the candidate's folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_try import git, reconciler_try
from tests.integration.kube.manifests import kubectl

RECIPE = Path(__file__).resolve().parents[2] / "docs" / "recipes" / "kustomize"

pytestmark = pytest.mark.e2e


def images(folder: Path) -> list[str]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, check=True
    )
    return [
        line.split("image:", 1)[1].strip() for line in done.stdout.splitlines() if "image:" in line
    ]


def test_the_candidate_keeps_its_tag_only_in_a_folder_of_its_own(tmp_path: Path) -> None:
    apps = RECIPE / "apps"
    assert images(apps / "backend") == ["ghcr.io/stefanprodan/podinfo:6.1.0"]
    assert images(apps / "backend-candidate") == ["ghcr.io/stefanprodan/podinfo:6.2.0"]
    # beside the base, its images: transformer would run the stable tag as the candidate
    together = tmp_path / "together"
    shutil.copytree(apps / "backend", together)
    shutil.copy(apps / "backend-candidate" / "deployment.yaml", together / "candidate.yaml")
    text = (together / "kustomization.yaml").read_text()
    (together / "kustomization.yaml").write_text(
        text.replace("  - deployment.yaml\n", "  - deployment.yaml\n  - candidate.yaml\n")
    )
    assert images(together) == ["ghcr.io/stefanprodan/podinfo:6.1.0"] * 2


def validate_strictly(files: list[str]) -> str:
    """``reconciler validate --strict`` on a recipe's files, as a user runs it: clean.

    Returns what it printed (the notes on files that are not experiments).
    """
    checked = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--strict", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ": warning: " not in checked.stdout, checked.stdout
    return checked.stdout


def test_the_recipe_validates_strictly_and_a_promotion_sets_the_tag_and_removes_the_folder(
    tmp_path: Path,
) -> None:
    files = sorted(str(p) for p in (RECIPE / "apps").rglob("*.yaml"))
    validate_strictly(files)
    repo = tmp_path / "env"
    shutil.copytree(RECIPE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "backend with a canary")
    done = reconciler_try(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    changes = done.stdout.split("Changes:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert changes == [
        "  apps/backend-candidate/deployment.yaml: removed",
        "  apps/backend-candidate/experiment.yaml: removed",
        "  apps/backend-candidate/kustomization.yaml: removed",
        "  apps/backend-candidate/service.yaml: removed",
        "  apps/backend/kustomization.yaml: newTag 6.1.0 -> 6.2.0",
    ]
    assert "test/backend-canary: promoted" in done.stdout
