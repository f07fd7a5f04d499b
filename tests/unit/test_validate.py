"""``reconciler validate`` over a corpus of Iter8-style files and a corpus of broken ones."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli.validate import validate_files
from reconciler.spec.loader import load_experiments

DATA = Path(__file__).parent.parent / "data"
GOOD = sorted((DATA / "iter8").glob("*.yaml"))
BROKEN = sorted((DATA / "broken").glob("*.yaml"))
METRICS = DATA / "iter8" / "istio-metrics.yaml"


def validate(*paths: Path, output: str = "text") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "-o", output, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_iter8_corpus_loads_with_only_warnings() -> None:
    problems = validate_files([(str(p), p.read_bytes()) for p in GOOD])
    assert [p for p in problems if p.severity == "error"] == []
    experiments = [e for p in GOOD for e in load_experiments(str(p), p.read_bytes()).experiments]
    patterns = {(e.testing_pattern.value, e.deployment_pattern.value) for e in experiments}
    assert patterns == {
        ("Canary", "Progressive"),
        ("A/B", "FixedSplit"),
        ("A/B/n", "Progressive"),
        ("Conformance", "Progressive"),
        ("Canary", "BlueGreen"),
    }
    actions = [p for p in problems if "spec.strategy.actions" in p.message]
    assert len(actions) == 1  # one warning per file, not one per task


def test_the_iter8_corpus_passes_validate_with_exit_0() -> None:
    result = validate(*GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": warning: " in result.stdout


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_each_broken_file_yields_its_documented_message_at_its_line(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    problems = validate_files(
        [(str(path), path.read_bytes()), (str(METRICS), METRICS.read_bytes())]
    )
    mine = [str(p) for p in problems if p.location.file == str(path)]
    assert any(line.startswith(f"{path}:{expected}") for line in mine), mine


def test_exit_status_and_json_output() -> None:
    broken = DATA / "broken" / "missing-target.yaml"
    result = validate(broken, output="json")
    assert result.returncode == 1
    (problem,) = json.loads(result.stdout)
    assert problem == {
        "file": str(broken),
        "line": 5,
        "column": 1,
        "severity": "error",
        "message": "'spec.target' is missing",
    }
    assert validate(DATA / "no-such-file.yaml").returncode == 2


def test_exit_2_when_the_files_could_not_be_checked(tmp_path: Path) -> None:
    missing = validate(DATA / "no-such-file.yaml")
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    directory = validate(tmp_path)
    assert directory.returncode == 2
    assert "cannot read" in directory.stderr
    bad_limit = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--max-aliases", "0", *map(str, GOOD)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_limit.returncode == 2
    assert "max_aliases" in bad_limit.stderr
    assert "Traceback" not in missing.stderr + directory.stderr + bad_limit.stderr


@pytest.mark.parametrize(
    "text",
    [
        b"apiVersion: [iter8.tools/v2alpha2]\nkind: Experiment\nmetadata: {name: x}\n",
        b"kind: Metric\na: !!omap [{x: 1}, {x: 2}]\n",
        b"kind: Experiment\na: " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
        b"kind: Experiment\n" + b"---\n" * 100_000,
    ],
    ids=["apiVersion-list", "omap", "deep", "documents"],
)
def test_hostile_files_exit_1_with_located_errors_and_no_traceback(
    tmp_path: Path, text: bytes
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(text)
    result = validate(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith(f"{path}:") for line in result.stdout.splitlines())
