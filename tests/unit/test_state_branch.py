from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.gitstore.state_branch import (
    README_PATH,
    README_TEXT,
    archive_path,
    check_name,
    live_path,
    parse_live_path,
    with_readme,
)

names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True)


def test_layout_of_live_and_archived_documents() -> None:
    assert live_path("bookinfo", "quickstart-exp") == "experiments/bookinfo/quickstart-exp.json"
    assert archive_path("bookinfo", "quickstart-exp", "3f2a9c1e07b4") == (
        "archive/bookinfo/quickstart-exp/3f2a9c1e07b4.json"
    )


@given(names, names)
def test_live_paths_parse_back_to_their_names(namespace: str, name: str) -> None:
    assert parse_live_path(live_path(namespace, name)) == (namespace, name)


@pytest.mark.parametrize(
    "bad", ["", "..", ".", "a/b", "../etc", "Upper", "-lead", "trail-", "a b", "x" * 254]
)
def test_names_that_could_escape_or_are_not_kubernetes_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        check_name("name", bad)
    with pytest.raises(ValueError, match="invalid"):
        live_path("ns", bad)
    with pytest.raises(ValueError, match="invalid"):
        live_path(bad, "name")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a..b", ".hidden", "x" * 129])
def test_bad_archive_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid experiment id"):
        archive_path("ns", "name", bad)


@pytest.mark.parametrize(
    "path",
    ["experiments/ns/name.yaml", "experiments/ns/sub/name.json", "experiments/NS/n.json", "x.json"],
)
def test_paths_outside_the_layout_do_not_parse(path: str) -> None:
    assert parse_live_path(path) is None


def test_readme_is_added_only_to_the_first_commit() -> None:
    changes = {live_path("ns", "exp"): b"{}"}
    assert with_readme(None, changes) == {README_PATH: README_TEXT.encode(), **changes}
    assert with_readme("0" * 40, changes) == changes
    assert with_readme(None, {README_PATH: b"mine"}) == {README_PATH: b"mine"}
    assert "git log" in README_TEXT
    assert "Rollout-Weights" in README_TEXT
