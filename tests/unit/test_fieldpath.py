"""fieldPath: Iter8's dotted paths, plus bracketed keys for names with dots and slashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.promote.yamlset import set_scalar
from reconciler.spec import fieldpath

steps = st.lists(st.integers(min_value=0, max_value=10_000) | st.text(min_size=1), min_size=1)


@given(steps)
def test_any_path_renders_to_text_that_parses_back(path: list[int | str]) -> None:
    assert fieldpath.parse(fieldpath.render(tuple(path))) == tuple(path)


def test_iter8_paths_read_as_they_always_did() -> None:
    assert fieldpath.parse(".spec.http[0].route[1].weight") == (
        "spec",
        "http",
        0,
        "route",
        1,
        "weight",
    )
    assert fieldpath.render(("spec", "traffic", 1, "percent")) == ".spec.traffic[1].percent"


@pytest.mark.parametrize(
    "path",
    [
        '.metadata.annotations["nginx.ingress.kubernetes.io/canary-weight"]',
        ".metadata.annotations['nginx.ingress.kubernetes.io/canary-weight']",
    ],
)
def test_a_key_with_dots_and_a_slash_is_written_in_brackets(path: str) -> None:
    assert fieldpath.parse(path) == (
        "metadata",
        "annotations",
        "nginx.ingress.kubernetes.io/canary-weight",
    )


def test_quotes_and_backslashes_in_a_key_are_escaped() -> None:
    assert fieldpath.parse(r'.data["say \"hi\" \\ bye"]') == ("data", 'say "hi" \\ bye')


@pytest.mark.parametrize(
    "path", ['.metadata.annotations["unclosed]', ".a[]", '.a[""]', ".a b", "a", ".a['x\"]"]
)
def test_what_does_not_parse_is_named_with_its_offset(path: str) -> None:
    with pytest.raises(fieldpath.FieldPathError, match="does not parse at offset"):
        fieldpath.parse(path)


def test_a_promotion_can_set_a_label_whose_key_has_dots() -> None:
    manifest = (
        "metadata:\n"
        "  name: web\n"
        "  labels:\n"
        "    app.kubernetes.io/version: 1.0.0  # set by the promotion\n"
    )
    out = set_scalar(manifest, '.metadata.labels["app.kubernetes.io/version"]', "1.1.0")
    assert out == manifest.replace("1.0.0", "1.1.0")
