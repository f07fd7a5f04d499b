"""No kubeconfig, or a broken one: one line that says which and what to set, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def reconciler(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "RECONCILER_"))}
    env["HOME"] = str(home)  # no ~/.kube/config
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    not_yaml = tmp_path / "not-yaml"
    not_yaml.write_text("clusters: [\n")
    wrong_shape = tmp_path / "wrong-shape"
    wrong_shape.write_text("apiVersion: v1\nkind: Config\nclusters: 3\n")
    return {
        "missing": (tmp_path / "no-such-kubeconfig", "no such file"),
        "not-yaml": (not_yaml, "while parsing"),
        "wrong-shape": (wrong_shape, "not iterable"),
    }


@pytest.mark.parametrize("case", ["missing", "not-yaml", "wrong-shape"])
def test_doctor_names_the_kubeconfig_it_cannot_use_and_exits_2(tmp_path: Path, case: str) -> None:
    path, reason = broken_files(tmp_path)[case]
    done = reconciler(
        tmp_path, "doctor", "--argocd-application", "argocd/env", "--kubeconfig", str(path)
    )
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"doctor: cannot check: the kubeconfig {path} cannot be used: ")
    assert reason in line
    assert "RECONCILER_KUBECONFIG" in line


def test_without_any_kubeconfig_doctor_and_run_say_what_to_set(tmp_path: Path) -> None:
    doctor = reconciler(tmp_path, "doctor", "--flux-kustomization", "flux-system/apps")
    assert doctor.returncode == 2, doctor.stdout + doctor.stderr
    (line,) = doctor.stderr.splitlines()
    assert "no Kubernetes configuration: not running in a cluster" in line
    assert "set --kubeconfig or RECONCILER_KUBECONFIG" in line
    run = reconciler(
        tmp_path,
        "run",
        "--once",
        "--repo",
        str(tmp_path / "env.git"),
        "--prometheus-url",
        "http://127.0.0.1:9",
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "no Kubernetes configuration" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
