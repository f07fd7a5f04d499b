"""Hostile and careless input to the experiment and Metric loaders (issue 16).

Each input once crashed ``validate`` or the loop, or took minutes and gigabytes; now each
is one located problem. The limits' errors name the limit and the setting that raises it.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from dataclasses import fields
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import config
from reconciler.gitstore.trailers import encode_mapping
from reconciler.spec.limits import Limits, setting
from reconciler.spec.loader import load_experiments
from reconciler.spec.metric import load_metrics
from reconciler.spec.repopath import split_path

DEMO = resources.files("reconciler.demo").joinpath("data", "apps", "bookinfo", "experiment.yaml")
DEMO_PATH = "apps/bookinfo/experiment.yaml"
HEAD = b"apiVersion: reconciler/v1alpha1\nkind: Experiment\nmetadata: {name: x}\n"


def demo() -> bytes:
    return DEMO.read_bytes()


def errors(data: bytes, path: str = "f.yaml", limits: Limits | None = None) -> list[str]:
    """Every error loading ``data`` as experiments and as Metric documents gives."""
    found = load_experiments(path, data, limits=limits).errors
    found += load_metrics(path, data, limits=limits).errors
    return [str(p) for p in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"apiVersion: [iter8.tools/v2alpha2]\nkind: Experiment\nmetadata: {name: x}\n",
            "f.yaml:1:1: error: 'apiVersion' must be one of",
        ),
        (HEAD + b"spec: !!omap\n- a: 1\n- a: 2\n", "f.yaml:4:7: error: the tag '!!omap'"),
        (HEAD + b"spec: {a: !!bool maybe}\n", "f.yaml:4:11: error: cannot read 'maybe' as bool"),
        (HEAD + b"spec: {a: !!int x}\n", "f.yaml:4:11: error: cannot read 'x' as int"),
        (HEAD + b"spec: {a: !!float y}\n", "f.yaml:4:11: error: cannot read 'y' as float"),
        (HEAD + b"spec: {a: " + b"7" * 5000 + b"}\n", "f.yaml:4:11: error: cannot read '777"),
        (HEAD + b"spec: " + b"[" * 10_000 + b"]" * 10_000, "f.yaml:4:"),
        (HEAD + b"spec: !custom {a: 1}\n", "f.yaml:4:7: error: the tag '!custom'"),
        (HEAD + b"spec: &a [*a]\n", "f.yaml:4:7: error: an alias refers to"),
        (b"kind: Experiment\nname: \xff\n", "f.yaml:2:7: error: not UTF-8 text"),
        (b"kind: Experiment\nname: \x07\n", "f.yaml:2:7: error: not valid YAML"),
    ],
)
def test_inputs_that_once_raised_are_one_located_error(text: bytes, expected: str) -> None:
    found = errors(text)
    assert found
    assert all(line.startswith(expected) for line in found), found


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("1" + "0" * 400, "an integer of about 401 digits"),
        (".nan", "nan"),
        ("-.inf", "-inf"),
        ("1e400", "inf"),
        ('"1e16"', "'1e16'"),
        ("true", "true"),
    ],
)
def test_limits_must_be_finite_numbers_of_sane_size(limit: str, expected: str) -> None:
    text = demo().replace(b'upperLimit: "0.01"', f"upperLimit: {limit}".encode())
    (found,) = errors(text, DEMO_PATH)
    assert found.startswith(f"{DEMO_PATH}:19:7: error: 'spec.criteria.objectives[0].upperLimit'")
    assert found.endswith(f"not {expected}")


def test_a_key_that_is_not_a_string_is_an_error_at_the_key() -> None:
    text = demo().replace(b"    - copy:\n", b"    - 1: x\n      copy:\n")
    (found,) = errors(text, DEMO_PATH)
    assert re.match(rf"{DEMO_PATH}:\d+:7: error: mapping keys must be strings, not 1", found)


def test_an_alias_bomb_is_refused_fast_without_expanding() -> None:
    levels = ['a0: &a0 ["lol"]'] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)
    ]
    text = HEAD + b"spec:\n" + "".join(f"  {line}\n" for line in levels).encode()
    assert len(text) < 1800
    tracemalloc.start()
    start = time.process_time()
    try:
        found = errors(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.process_time() - start < 1
    assert peak < 5_000_000
    assert found
    assert all("max_alias_nodes" in line and "--max-alias-nodes" in line for line in found)


def test_errors_quote_a_short_excerpt_of_a_long_value() -> None:
    text = demo().replace(b'upperLimit: "0.01"', b"upperLimit: " + b"x" * 100_000)
    (found,) = errors(text, DEMO_PATH)
    assert len(found) < 400
    assert "(100,000 characters)" in found


def test_a_reused_anchor_is_legal_and_warns_nothing() -> None:
    text = demo().replace(b"name: productpage-canary", b"name: &n productpage-canary")
    text = text.replace(b"namespace: bookinfo\nspec", b"namespace: &n bookinfo\nspec")
    result = load_experiments(DEMO_PATH, text)
    assert len(result.experiments) == 1


@pytest.mark.parametrize(
    "name", ["productpage v2", "pp=v2,x", "a\\nb", "\\ud800", "V2", "-v2", "x" * 254, ""]
)
def test_version_names_must_be_kubernetes_names(name: str) -> None:
    text = demo().replace(b"- name: productpage-candidate", f'- name: "{name}"'.encode())
    found = errors(text, DEMO_PATH)
    assert len(found) == 1
    assert found[0].startswith(f"{DEMO_PATH}:36:7: error:"), found


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_every_version_name_the_loader_accepts_can_be_recorded(name: str) -> None:
    # A \\u escape per character, so any text (newlines, lone surrogates) reaches the loader.
    literal = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in name)
    text = demo().replace(b"- name: productpage-candidate", f'- name: "{literal}"'.encode())
    result = load_experiments(DEMO_PATH, text)
    for experiment in result.experiments:
        for version in experiment.versions:
            version.name.encode()
            assert encode_mapping({version.name: 50})


@pytest.mark.parametrize(
    "bad", ["../../.git/config", "a\\\\b.yaml", "a\\0b.yaml", ".", "sub/..", "../bookinfo"]
)
def test_gitops_paths_a_promotion_would_refuse_are_refused_at_load(bad: str) -> None:
    text = demo().replace(b"    - productpage-candidate.yaml\n", f'    - "{bad}"\n'.encode())
    found = errors(text, DEMO_PATH)
    assert len(found) == 1
    assert re.match(rf"{DEMO_PATH}:\d+:7: error: 'spec.gitops.cleanup\[0\]'", found[0]), found


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(["a", "..", ".", "", ".git", ".GIT", "b\\c", "d\0"]), max_size=5))
def test_validate_accepts_only_paths_the_promotion_accepts(parts: list[str]) -> None:
    raw = "/".join(parts) or "x"
    literal = raw.replace("\\", "\\\\").replace("\0", "\\0")
    text = demo().replace(b"    - productpage-candidate.yaml\n", f'    - "{literal}"\n'.encode())
    for experiment in load_experiments(DEMO_PATH, text).experiments:
        for path in experiment.gitops.cleanup:
            split_path(path)


@pytest.mark.parametrize(
    ("make", "limit"),
    [
        (lambda: b"# filler\n" * (50 * 1024 * 1024 // 9), "max_file_bytes"),
        (lambda: b"---\n" * 100_000, "max_documents_per_file"),
        (lambda: b"{kind: Experiment}\n---\n" * 100_000, "max_file_bytes"),
        (lambda: b"kind: Experiment\n---\n" * 40_000, "max_documents_per_file"),
    ],
    ids=["50MB", "100k-empty-documents", "100k-experiments", "40k-experiments-under-1MiB"],
)
def test_huge_files_are_refused_well_under_a_second(make: object, limit: str) -> None:
    data = make()  # type: ignore[operator]
    # CPU time of this process: a busy machine (the suite runs on two workers) must not
    # fail it, an input that makes the loader work for seconds must
    start = time.process_time()
    found = errors(data)
    assert time.process_time() - start < 0.5
    assert found
    assert all(limit in line and setting(limit) in line for line in found), found


def test_limits_are_configurable_and_each_error_names_its_setting() -> None:
    tight = Limits(max_aliases=1, max_nesting_depth=3, max_documents_per_file=1)
    assert "max_aliases" in errors(HEAD + b"spec: {a: &a 1, b: *a, c: *a}\n", limits=tight)[0]
    assert "max_nesting_depth" in errors(HEAD + b"spec: {a: [[1]]}\n", limits=tight)[0]
    assert "max_documents_per_file" in errors(HEAD + b"...\n" + HEAD, limits=tight)[0]
    assert errors(demo(), DEMO_PATH, Limits(max_file_bytes=len(demo()))) == []
    assert "max_file_bytes" in errors(demo(), DEMO_PATH, Limits(max_file_bytes=100))[0]


def test_every_limit_is_a_setting_of_the_same_name() -> None:
    defaults = config.Settings()
    assert defaults.limits == Limits()
    for spec in fields(Limits):
        declared = next(f for f in config.FIELDS if f.name == spec.name)
        assert setting(spec.name) == (
            f"{declared.flag}, {declared.env} or {'.'.join(declared.file_path)}"
        )
    built = config.build(flags={"repo": "x"}, environ={"RECONCILER_MAX_ALIASES": "7"})
    assert built.limits.max_aliases == 7
    with pytest.raises(config.ConfigError, match="max_nesting_depth"):
        config.build(flags={"repo": "x", "max_nesting_depth": "0"}, environ={})
