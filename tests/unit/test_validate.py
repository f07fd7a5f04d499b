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


def validate(*paths: Path | str, output: str = "text") -> subprocess.CompletedProcess[str]:
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


DEMO = Path(__file__).parents[2] / "reconciler" / "demo" / "data" / "apps" / "bookinfo"
ISTIO = DATA / "iter8" / "istio-canary-progressive.yaml"


def misspell(source: Path, target: Path, *pairs: tuple[str, str]) -> Path:
    text = source.read_text()
    for right, wrong in pairs:
        assert right in text
        text = text.replace(right, wrong, 1)
    target.write_text(text)
    return target


def test_misspelt_fields_of_our_format_are_all_errors_in_one_pass_with_the_name_meant(
    tmp_path: Path,
) -> None:
    path = misspell(
        DEMO / "experiment.yaml",
        tmp_path / "experiment.yaml",
        ("maxCandidateWeightIncrement", "maxCandidateWeightIncremnt"),
        ("  duration:", "  durration:"),
    )
    result = validate(path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(
        ":14:7: error: unknown field 'spec.strategy.weights.maxCandidateWeightIncremnt' "
        "(did you mean 'maxCandidateWeightIncrement'?" in line
        for line in lines
    ), lines
    assert any(
        ":23:3: error: unknown field 'spec.durration' (did you mean 'duration'?" in line
        for line in lines
    ), lines


def test_iter8_files_warn_of_misspelt_fields_and_fail_only_under_strict(tmp_path: Path) -> None:
    path = misspell(ISTIO, tmp_path / "istio.yaml", ("iterationsPerLoop", "iterationsPerLop"))
    lenient = validate(path, METRICS)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "warning: unknown field 'spec.duration.iterationsPerLop' is ignored " in lenient.stdout
    assert "did you mean 'iterationsPerLoop'?" in lenient.stdout
    strict = validate(path, METRICS, "--strict")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "error: unknown field 'spec.duration.iterationsPerLop' (did you mean" in strict.stdout


def test_files_that_are_not_experiments_or_metrics_are_reported_as_skipped(
    tmp_path: Path,
) -> None:
    kustomization = tmp_path / "kustomization.yaml"
    kustomization.write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"
    )
    canary = tmp_path / "canary.yaml"
    canary.write_text(
        "# Flagger's\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\n"
    )
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    result = validate(kustomization, canary, empty, output="json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = {(p["file"], p["line"], p["severity"], p["message"]) for p in json.loads(result.stdout)}
    assert found == {
        (
            str(kustomization),
            1,
            "note",
            (
                "skipped document 1 (kind 'Kustomization', apiVersion "
                "'kustomize.config.k8s.io/v1beta1'): not an Experiment or Metric"
            ),
        ),
        (
            str(canary),
            2,
            "note",
            (
                "skipped document 1 (kind 'Canary', apiVersion 'flagger.app/v1beta1'): "
                "not an Experiment or Metric"
            ),
        ),
        (str(empty), 1, "note", "skipped: the file holds no YAML document"),
    }


def test_an_experiment_of_an_api_that_is_not_read_is_flagged_never_silently_skipped(
    tmp_path: Path,
) -> None:
    path = misspell(
        ISTIO, tmp_path / "v2beta1.yaml", ("iter8.tools/v2alpha2", "iter8.tools/v2beta1")
    )
    lenient = validate(path)
    assert lenient.returncode == 0
    assert ":1:1: warning: this Experiment is never read: apiVersion 'iter8.tools/v2beta1'" in (
        lenient.stdout
    )
    assert validate(path, "--strict").returncode == 1


def test_an_unknown_metric_shows_in_the_same_pass_as_the_documents_other_errors(
    tmp_path: Path,
) -> None:
    path = misspell(
        DEMO / "experiment.yaml",
        tmp_path / "experiment.yaml",
        ("istio/mean-latency", "istio/mean-latancy"),
        ("maxCandidateWeight: 80", "maxCandidateWeight: 180"),
    )
    result = validate(path)
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 2, errors
    assert any(":13:" in line and "maxCandidateWeight" in line for line in errors), errors
    assert any(
        ":20:7: error: unknown metric in 'spec.criteria.objectives[1].metric'" in line
        for line in errors
    ), errors


def test_a_version_not_named_after_its_deployment_is_warned_when_the_manifests_are_given(
    tmp_path: Path,
) -> None:
    manifests = sorted(DEMO.glob("productpage*.yaml"))
    shipped = validate(DEMO / "experiment.yaml", *manifests)
    assert shipped.returncode == 0
    assert ": warning: " not in shipped.stdout, shipped.stdout
    path = misspell(
        DEMO / "experiment.yaml",
        tmp_path / "experiment.yaml",
        ("- name: productpage-candidate", "- name: productpage-v2"),
    )
    renamed = validate(path, *manifests)
    assert renamed.returncode == 0
    (warning,) = [line for line in renamed.stdout.splitlines() if ": warning: " in line]
    assert warning.startswith(f"{path}:36:7: warning: no Deployment named 'productpage-v2' ")
    assert "(they have productpage-candidate, productpage-stable)" in warning
    # without the manifests there is nothing to compare with: no warning
    assert ": warning: " not in validate(path).stdout
