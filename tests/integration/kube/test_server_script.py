"""``hack/kube-test-server up/down`` by hand: kubeconfig printed, nothing left running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.kube import SCRIPT, KubeServer

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_up_prints_a_kubeconfig_and_down_leaves_nothing_running(
    kube_server: KubeServer, tmp_path: Path
) -> None:
    del kube_server  # built and proven startable by the session fixture
    directory = tmp_path / "by-hand"
    up = _run("up", "--dir", str(directory))
    try:
        assert up.returncode == 0, up.stderr
        config = json.loads(up.stdout)
        assert config["current-context"] == "admin"
        assert config["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
        assert (directory / "kubeconfig").read_text() == up.stdout
        pids = json.loads((directory / "server.json").read_text())["pids"]
        assert all(_alive(pid) for pid in pids.values())
        assert _run("status", "--dir", str(directory)).returncode == 0
    finally:
        down = _run("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not any(_alive(pid) for pid in pids.values())
    assert _run("status", "--dir", str(directory)).returncode == 3


def test_the_server_stops_when_the_process_it_follows_exits(
    kube_server: KubeServer, tmp_path: Path
) -> None:
    del kube_server
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    directory = tmp_path / "followed"
    up = _run("up", "--dir", str(directory), "--follow-pid", str(owner.pid), "--quiet")
    assert up.returncode == 0, up.stderr
    pids = json.loads((directory / "server.json").read_text())["pids"]
    supervisor = int((directory / "supervisor.pid").read_text())
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (_alive(supervisor) or any(map(_alive, pids.values()))):
        time.sleep(0.1)
    assert not _alive(supervisor)
    assert not any(_alive(pid) for pid in pids.values())
    assert (directory / "supervisor.log").exists()
