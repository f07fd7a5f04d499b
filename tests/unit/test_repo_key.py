"""Which Env repo a push webhook names: one key for every spelling of a repo's URL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import repo_key

SPELLINGS = [
    "https://github.com/org/env.git",
    "https://github.com/org/env",
    "https://github.com/org/env/",
    "https://github.com/org/env.git/",
    "http://github.com/org/env",
    "https://GitHub.COM/org/env.git",
    "https://x-access-token:s3cret@github.com/org/env.git",
    "https://github.com:443/org/env.git",
    "ssh://git@github.com/org/env.git",
    "ssh://git@github.com:22/org/env.git",
    "ssh://git@GITHUB.com:2222/org/env",
    "git://github.com/org/env.git",
    "git@github.com:org/env.git",
    "git@github.com:org/env",
    "git@GitHub.com:org/env.git/",
    "github.com:org/env.git",
    "  https://github.com/org/env.git\n",
]


@pytest.mark.parametrize("url", SPELLINGS)
def test_every_spelling_of_one_repo_gives_the_same_key(url: str) -> None:
    assert repo_key(url) == "github.com/org/env"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("https://github.com/org/env", "https://github.com/org/env2"),
        ("https://github.com/org/env", "https://github.com/org2/env"),
        ("https://github.com/org/env", "https://gitlab.com/org/env"),
        ("git@github.com:org/env.git", "git@github.example:org/env.git"),
        ("https://github.com/org/env", "https://github.com/org/env/sub"),
        ("https://github.com/org/env", "https://github.com/org/env.git.git"),
        ("https://gitlab.example/group/sub/env", "https://gitlab.example/group/env"),
        ("/srv/git/env", "/srv/git/env2"),
        ("/srv/git/env", "https://srv/git/env"),
    ],
)
def test_two_different_repos_never_share_a_key(one: str, other: str) -> None:
    assert repo_key(one) != repo_key(other)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/srv/git/env", "/srv/git/env"),
        ("/srv/git/env.git", "/srv/git/env"),
        ("/srv/git/env.git/", "/srv/git/env"),
        ("relative/env", "relative/env"),
        ("./env", "./env"),
    ],
)
def test_a_local_path_is_kept_as_it_is(path: str, key: str) -> None:
    assert repo_key(path) == key


def test_the_path_keeps_its_case_only_the_host_is_folded() -> None:
    assert repo_key("https://GitLab.example/Group/Env") == "gitlab.example/Group/Env"


URLISH = st.builds(
    str.__add__,
    st.sampled_from(["", "https://", "ssh://git@", "git@", "file://", "://"]),
    st.text(alphabet=st.sampled_from(list(":/@[]._-%?#\\ \t\naZ09")), max_size=30),
)


@given(st.one_of(st.text(), URLISH))
def test_any_text_gives_a_key_without_raising(text: str) -> None:
    assert isinstance(repo_key(text), str)


@pytest.mark.parametrize(
    "text",
    ["https://[oops/org/env", "https://[not-an-address]/org/env", "ssh://git@[::1/org/env.git"],
)
def test_a_url_with_a_broken_bracketed_host_still_gives_a_key(text: str) -> None:
    assert repo_key(text) != repo_key("https://github.com/org/env")


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z][a-z0-9-]{0,15}){0,2}", fullmatch=True)
segments = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}", fullmatch=True).filter(
    lambda s: not s.endswith(".git")
)
paths = st.lists(segments, min_size=1, max_size=4).map("/".join)


@given(hosts, paths)
def test_https_ssh_and_scp_like_urls_of_one_repo_agree(host: str, path: str) -> None:
    key = repo_key(f"https://{host}/{path}.git")
    assert key == f"{host}/{path}"
    assert repo_key(f"ssh://git@{host.upper()}:22/{path}") == key
    assert repo_key(f"git@{host}:{path}.git") == key
    assert repo_key(key) == key  # the key itself, read as scp-like or a path, is stable


@given(hosts, paths, hosts, paths)
def test_repos_on_different_hosts_or_paths_get_different_keys(
    host: str, path: str, other_host: str, other_path: str
) -> None:
    same = host == other_host and path == other_path
    one, other = f"https://{host}/{path}", f"git@{other_host}:{other_path}.git"
    assert (repo_key(one) == repo_key(other)) == same


@given(hosts, paths, st.sampled_from(["", "/", ".git", ".git/", "//"]))
def test_taking_the_key_again_changes_nothing(host: str, path: str, suffix: str) -> None:
    key = repo_key(f"https://{host}/{path}{suffix}")
    assert repo_key(f"https://{key}") == repo_key(key) == key
