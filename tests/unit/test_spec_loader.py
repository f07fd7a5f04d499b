from importlib import resources

import pytest

from reconciler.spec import codec, model
from reconciler.spec.loader import load_experiments, looks_like_experiment
from reconciler.spec.model import CopyEdit, DeleteEdit

DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")

ITER8 = b"""\
apiVersion: iter8.tools/v2alpha2
kind: Experiment
metadata:
  name: quickstart-exp
spec:
  target: bookinfo-iter8/productpage
  strategy:
    testingPattern: Canary
    deploymentPattern: Progressive
    actions:
      finish:
      - task: common/exec
        with:
          cmd: /bin/bash
          args: ["-c", "rm -rf /"]
  criteria:
    requestCount: iter8-istio/request-count
    objectives:
    - metric: iter8-istio/mean-latency
      upperLimit: 300
    - metric: iter8-istio/error-rate
      upperLimit: "0.01"
  duration:
    intervalSeconds: 10
    iterationsPerLoop: 10
  versionInfo:
    baseline:
      name: productpage-v1
      weightObjRef:
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        namespace: bookinfo-iter8
        name: bookinfo
        fieldPath: .spec.http[0].route[0].weight
    candidates:
    - name: productpage-v2
      variables:
      - name: image
        value: bookinfo/productpage:v2
      weightObjRef:
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        namespace: bookinfo-iter8
        name: bookinfo
        fieldPath: .spec.http[0].route[1].weight
"""


def test_iter8_experiment_loads_with_one_warning_about_actions() -> None:
    result = load_experiments("env/experiment.yaml", ITER8)
    assert result.errors == ()
    (experiment,) = result.experiments
    assert experiment.key == "bookinfo-iter8/quickstart-exp"
    assert experiment.testing_pattern is model.TestingPattern.CANARY
    assert experiment.criteria.objectives[1].upper_limit == 0.01
    assert experiment.candidates[0].variable("image") == "bookinfo/productpage:v2"
    warnings = [str(p) for p in result.problems]
    assert len(warnings) == 1
    assert warnings[0].startswith("env/experiment.yaml:10:5: warning: 'spec.strategy.actions'")
    assert "spec.gitops" in warnings[0]


def test_gitops_paths_resolve_relative_to_the_experiment_file() -> None:
    result = load_experiments("apps/bookinfo/experiment.yaml", DEMO.read_bytes())
    assert result.problems == ()
    (experiment,) = result.experiments
    (copy,) = experiment.gitops.promote
    assert isinstance(copy, CopyEdit)
    assert (copy.source, copy.destination) == (
        "apps/bookinfo/productpage-candidate.yaml",
        "apps/bookinfo/productpage.yaml",
    )
    assert experiment.gitops.cleanup == ("apps/bookinfo/productpage-candidate.yaml",)


def test_normalised_spec_survives_a_round_trip_through_data() -> None:
    (experiment,) = load_experiments("apps/bookinfo/experiment.yaml", DEMO.read_bytes()).experiments
    assert codec.from_data(codec.to_data(experiment)) == experiment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"kind: Experiment\nspec: [unclosed\n", "f.yaml:3:1: error: not valid YAML"),
        (
            (
                b"apiVersion: reconciler/v1alpha1\nkind: Experiment\nmetadata:\n  name: x\n"
                b"spec:\n  strategy:\n    testingPattern: Canary\n"
            ),
            "f.yaml:5:1: error: 'spec.target' is missing",
        ),
        (
            ITER8.replace(b"fieldPath: .spec.http[0].route[1].weight", b"fieldPath: spec..http"),
            "f.yaml:45:9: error: fieldPath 'spec..http' does not parse",
        ),
        (
            ITER8.replace(b'upperLimit: "0.01"', b"upperLimit: lots"),
            "f.yaml:22:7: error: 'spec.criteria.objectives[1].upperLimit' must be a number",
        ),
    ],
)
def test_broken_files_report_file_line_and_column(text: bytes, expected: str) -> None:
    result = load_experiments("f.yaml", text)
    assert result.experiments == ()
    assert any(str(p).startswith(expected) for p in result.errors), [
        str(p) for p in result.problems
    ]


def test_errors_in_different_sections_all_show_at_once() -> None:
    text = ITER8.replace(
        b"fieldPath: .spec.http[0].route[1].weight", b"fieldPath: spec..http"
    ).replace(b'upperLimit: "0.01"', b"upperLimit: lots")
    result = load_experiments("f.yaml", text)
    assert result.experiments == ()
    assert [str(p).split(": error: ")[0] for p in result.errors] == ["f.yaml:22:7", "f.yaml:45:9"]


def test_a_valid_document_beside_a_broken_one_still_loads() -> None:
    broken = ITER8.replace(b'upperLimit: "0.01"', b"upperLimit: lots")
    fine = ITER8.replace(b"name: quickstart-exp", b"name: second-exp")
    assert fine != ITER8
    result = load_experiments("f.yaml", broken + b"---\n" + fine)
    assert [e.name for e in result.experiments] == ["second-exp"]
    assert len(result.errors) == 1


def test_a_blue_green_promotion_keeps_its_deletions_for_the_cleanup_and_wants_readiness() -> None:
    demo = DEMO.read_bytes()
    assert b"cleanup:" in demo
    blue_green = demo.replace(b"deploymentPattern: Progressive", b"deploymentPattern: BlueGreen")
    assert blue_green != demo
    result = load_experiments("apps/bookinfo/experiment.yaml", blue_green)
    (experiment,) = result.experiments
    # the candidate's manifests go in the cleanup commit, once the baseline serves again
    assert "apps/bookinfo/productpage-candidate.yaml" in experiment.blue_green_cleanup
    assert load_experiments("e.yaml", demo).experiments[0].blue_green_cleanup == ()
    # without readiness objects the switch back cannot wait for the baseline's rollout
    (warning,) = [p for p in result.problems if "BlueGreen" in p.message]
    assert warning.severity == "warning"
    assert "spec.readiness.objects" in warning.message
    ready = blue_green.replace(
        b"  duration:",
        b"  readiness:\n    objects:\n    - apiVersion: apps/v1\n      kind: Deployment\n"
        b"      name: productpage-stable\n  duration:",
        1,
    )
    assert ready != blue_green
    assert not [p for p in load_experiments("e.yaml", ready).problems if "BlueGreen" in p.message]
    assert not [p for p in load_experiments("e.yaml", demo).problems if "BlueGreen" in p.message]


def test_unknown_fields_are_warnings_with_their_line() -> None:
    text = ITER8.replace(b"  duration:\n", b"  durashun: 3\n  duration:\n")
    result = load_experiments("f.yaml", text)
    assert len(result.experiments) == 1
    assert any(
        str(p).startswith("f.yaml:23:3: warning: unknown field 'spec.durashun'")
        for p in result.problems
    )


@pytest.mark.parametrize("bad", ["/etc/passwd", "../../../outside.yaml", "../../.."])
def test_gitops_paths_that_leave_the_repository_are_errors(bad: str) -> None:
    text = DEMO.read_bytes().replace(
        b"    - productpage-candidate.yaml\n", f"    - {bad}\n".encode()
    )
    result = load_experiments("apps/bookinfo/experiment.yaml", text)
    assert result.experiments == ()
    assert any("cleanup[0]" in p.message for p in result.errors)


def test_delete_edit_and_prefilter() -> None:
    text = DEMO.read_bytes().replace(
        b"    promote:\n",
        b"    rollback:\n    - delete: [old.yaml]\n    promote:\n",
    )
    (experiment,) = load_experiments("apps/bookinfo/experiment.yaml", text).experiments
    assert experiment.gitops.rollback == (DeleteEdit(("apps/bookinfo/old.yaml",)),)
    assert looks_like_experiment(text)
    assert not looks_like_experiment(b"kind: Deployment\nmetadata:\n  name: kind: Experiment\n")


def test_set_edits_load_with_repo_relative_files() -> None:
    text = DEMO.read_bytes().replace(
        b"    promote:\n",
        b"    promote:\n    - set:\n        file: ../base/kustomization.yaml\n"
        b"        path: .images[0].newTag\n        value: '{{ variables.image }}'\n",
    )
    (experiment,) = load_experiments("apps/bookinfo/experiment.yaml", text).experiments
    first = experiment.gitops.promote[0]
    assert first == model.SetEdit(
        "apps/base/kustomization.yaml", ".images[0].newTag", "{{ variables.image }}"
    )
    assert codec.from_data(codec.to_data(experiment)) == experiment


def test_min_request_count_loads_and_survives_the_state_document() -> None:
    text = ITER8.replace(b"  criteria:\n", b"  criteria:\n    minRequestCount: 1000\n")
    (experiment,) = load_experiments("f.yaml", text).experiments
    assert experiment.criteria.min_request_count == 1000
    assert codec.from_data(codec.to_data(experiment)) == experiment


@pytest.mark.parametrize("bad", [b"0", b"-5", b"lots", b"1.5", b"true"])
def test_a_min_request_count_that_is_not_a_positive_integer_is_an_error_with_its_line(
    bad: bytes,
) -> None:
    text = ITER8.replace(b"  criteria:\n", b"  criteria:\n    minRequestCount: " + bad + b"\n")
    result = load_experiments("f.yaml", text)
    assert result.experiments == ()
    assert any(
        str(p).startswith("f.yaml:17:5: error: 'spec.criteria.minRequestCount' must be an integer")
        for p in result.errors
    ), [str(p) for p in result.problems]


def test_the_old_method_name_wilson_loads_as_exact_with_a_warning() -> None:
    text = ITER8.replace(b"  criteria:\n", b"  criteria:\n    method: wilson\n")
    result = load_experiments("f.yaml", text)
    (experiment,) = result.experiments
    assert experiment.criteria.method == "exact"
    assert any("write 'exact'" in str(p) for p in result.problems)


def test_a_state_document_from_before_issue_17_reads_back_as_exact() -> None:
    (experiment,) = load_experiments("apps/bookinfo/experiment.yaml", DEMO.read_bytes()).experiments
    old = codec.to_data(experiment)
    old["criteria"]["method"] = "wilson"
    del old["criteria"]["minRequestCount"]
    assert codec.from_data(old) == experiment


def test_a_proportion_limit_that_can_never_pass_is_warned_about_with_its_line() -> None:
    text = ITER8.replace(b'upperLimit: "0.01"', b"upperLimit: 0")
    result = load_experiments("f.yaml", text)
    assert len(result.experiments) == 1
    assert any(
        str(p).startswith("f.yaml:22:7: warning: 'spec.criteria.objectives[1].upperLimit: 0'")
        and "can never pass" in str(p)
        for p in result.problems
    ), [str(p) for p in result.problems]
    point = text.replace(b"  criteria:\n", b"  criteria:\n    method: point\n")
    assert not any("can never pass" in str(p) for p in load_experiments("f.yaml", point).problems)
