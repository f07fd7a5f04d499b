import difflib

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.promote.yamlset import YamlSetError, set_scalar

KUSTOMIZATION = """\
# Production overlay: CI bumps the tag, the reconciler promotes it.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base        # shared manifests
  - hpa.yaml
images:
  - name: ghcr.io/acme/shop
    newTag: "1.4.2"   # quoted on purpose
  - name: ghcr.io/acme/worker
    newTag: 2024.11.3
patches:
- target: {kind: Deployment, name: shop}
  patch: |-
    - op: replace
      path: /spec/replicas
      value: 3
"""

DEPLOYMENT = """\
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  labels: {app: shop, tier: 'web'}
spec:
  template:
    spec:
      containers:
        -   name: shop
            image: 'ghcr.io/acme/shop:1.4.2'    # odd indentation kept
            args: ["--port", "8080"]
"""


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_set_changes_exactly_the_intended_bytes_in_a_kustomization() -> None:
    after = set_scalar(KUSTOMIZATION, ".images[0].newTag", "1.5.0")
    assert changed_lines(KUSTOMIZATION, after) == [
        '-    newTag: "1.4.2"   # quoted on purpose',
        '+    newTag: "1.5.0"   # quoted on purpose',
    ]
    after = set_scalar(KUSTOMIZATION, ".images[1].newTag", "2024.12.1")
    assert changed_lines(KUSTOMIZATION, after) == [
        "-    newTag: 2024.11.3",
        "+    newTag: 2024.12.1",
    ]


def test_set_in_the_second_document_keeps_quotes_and_odd_indentation() -> None:
    after = set_scalar(
        DEPLOYMENT, ".spec.template.spec.containers[0].image", "ghcr.io/acme/shop:1.5.0", document=1
    )
    assert changed_lines(DEPLOYMENT, after) == [
        "-            image: 'ghcr.io/acme/shop:1.4.2'    # odd indentation kept",
        "+            image: 'ghcr.io/acme/shop:1.5.0'    # odd indentation kept",
    ]


def test_a_plain_value_that_would_change_type_is_quoted() -> None:
    after = set_scalar(KUSTOMIZATION, ".images[1].newTag", "true")
    assert '    newTag: "true"\n' in after


@pytest.mark.parametrize("word", ["yes", "no", "on", "Off", "1.10", "0o17"])
def test_a_tag_that_yaml_1_1_or_1_2_reads_as_something_else_is_quoted(word: str) -> None:
    # Kubernetes' Go YAML and kustomize read YAML 1.1, where yes/no/on/off are booleans:
    # written plain, such a tag would reach the cluster as `true`.
    after = set_scalar(KUSTOMIZATION, ".images[1].newTag", word)
    assert f'    newTag: "{word}"\n' in after
    assert yaml.safe_load(after)["images"][1]["newTag"] == word


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (".images[5].newTag", "no item [5] at .images"),
        (".images[0].oldTag", "no field 'oldTag' at .images[0]"),
        (".images", ".images is a list, not a value"),
    ],
)
def test_a_path_that_does_not_exist_is_an_error_naming_it(path: str, message: str) -> None:
    with pytest.raises(YamlSetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        set_scalar(KUSTOMIZATION, path, "x")


values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029\x85"),
    max_size=30,
)


@given(values)
def test_any_value_reads_back_and_only_its_line_changes(value: str) -> None:
    after = set_scalar(KUSTOMIZATION, ".images[1].newTag", value)
    before_lines, after_lines = KUSTOMIZATION.splitlines(), after.splitlines()
    assert len(before_lines) == len(after_lines)
    differing = [
        i for i, (a, b) in enumerate(zip(before_lines, after_lines, strict=True)) if a != b
    ]
    assert differing in ([], [10])
    for data in (yaml.safe_load(after), YAML(typ="safe").load(after)):  # YAML 1.1 and 1.2
        assert data["images"][1]["newTag"] == value
