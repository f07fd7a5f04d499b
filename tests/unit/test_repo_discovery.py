"""Env repos named by annotated Applications and GitRepositories: parsing, checks, files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cluster.repo_annotations import (
    CREDENTIALS_SECRET,
    ENABLED,
    EXPERIMENT_PATHS,
    FLUX_KUSTOMIZATION,
    INTERVAL,
    PREFIX,
    SECRET_NAMESPACES,
    STATE_BRANCH,
    Candidate,
    credentials_entry,
    opted_in,
    parse_application,
    parse_git_repository,
    parse_secret,
    secret_allows,
    url_key,
)
from reconciler.cluster.repo_discovery import (
    Discovered,
    entries_equal,
    secret_dir_name,
    write_private,
)
from reconciler.config import Settings
from reconciler.config.sources import entry_settings

TOKEN = "ghp_s3cr3t-t0ken-value"  # noqa: S105 - a test value
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
PATHS = {n: f"/secrets/abc/{n}" for n in ("token", "identity", "known_hosts", "ca.crt")}


def _notes(**extra: str) -> dict[str, str]:
    return {ENABLED: "true", CREDENTIALS_SECRET: "env-push", **extra}


def application(notes: dict[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    """An Argo CD Application in team-a, annotated ``notes``."""
    spec_source = {
        "repoURL": "https://git.example/team-a/env.git",
        "targetRevision": "main",
        "path": "apps",
        **source,
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": "env",
            "namespace": "team-a",
            "annotations": _notes() if notes is None else notes,
        },
        "spec": {"project": "default", "source": spec_source},
    }


def git_repository(
    notes: dict[str, Any] | None = None,
    ref: dict[str, Any] | None = None,
    url: str = "ssh://git@git.example/team-b/env.git",
) -> dict[str, Any]:
    """A Flux GitRepository in team-b, annotated ``notes``."""
    spec: dict[str, Any] = {"url": url, "interval": "1m"}
    if ref is not None:
        spec["ref"] = ref
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {
            "name": "env",
            "namespace": "team-b",
            "annotations": _notes(**{FLUX_KUSTOMIZATION: "flux-system/apps"})
            if notes is None
            else notes,
        },
        "spec": spec,
    }


def secret(data: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Secret whose ``data`` holds ``data``'s values base64-encoded."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "env-push", "namespace": "recon", "annotations": annotations or {}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _candidate(found: Candidate | list[str]) -> Candidate:
    assert isinstance(found, Candidate), found
    return found


def _problems(found: Candidate | list[str]) -> str:
    assert isinstance(found, list), found
    return "; ".join(found)


# -- objects -> entries ---------------------------------------------------------------


def test_an_annotated_application_names_its_repo_branch_path_and_itself() -> None:
    found = _candidate(parse_application(application()))
    assert found.source == "argocd Application team-a/env"
    assert found.secret == "env-push"  # noqa: S105 - a Secret's name
    assert found.entry == {
        "experimentPaths": ["apps"],
        "gitops": {"argocdApplication": "team-a/env"},
        "mainBranch": "main",
        "repo": "https://git.example/team-a/env.git",
    }


def test_a_multi_source_application_uses_the_first_source_with_a_path() -> None:
    app = application()
    del app["spec"]["source"]
    app["spec"]["sources"] = [
        {"repoURL": "https://charts.example", "chart": "x", "targetRevision": "1.2.3"},
        {"repoURL": "https://git.example/values.git", "ref": "values"},
        {
            "repoURL": "https://git.example/env.git",
            "path": "./clusters/prod/",
            "targetRevision": "prod",
        },
    ]
    entry = _candidate(parse_application(app)).entry
    assert (entry["repo"], entry["mainBranch"], entry["experimentPaths"]) == (
        "https://git.example/env.git",
        "prod",
        ["clusters/prod"],
    )


@pytest.mark.parametrize(
    ("revision", "branch"),
    [
        ("main", "main"),
        ("HEAD", "main"),
        ("", "main"),
        (None, "main"),
        ("refs/heads/prod", "prod"),
        ("release/2024-q1", "release/2024-q1"),
    ],
)
def test_the_main_branch_is_the_target_revision_when_it_names_a_branch(
    revision: str | None, branch: str
) -> None:
    app = application(targetRevision=revision)
    if revision is None:
        del app["spec"]["source"]["targetRevision"]
    assert _candidate(parse_application(app)).entry["mainBranch"] == branch


@pytest.mark.parametrize(
    "revision",
    ["v1.2.3", "1.4.0", "3f2a9c1e07b4d5e6f708192a3b4c5d6e7f809112", "9e1f00c", "refs/tags/v1"],
)
def test_an_application_pinned_to_a_tag_or_commit_is_a_problem_that_says_so(revision: str) -> None:
    problems = _problems(parse_application(application(targetRevision=revision)))
    assert "looks like a tag or a commit" in problems
    assert "point it at a branch" in problems


def test_a_helm_chart_application_is_not_an_env_repo() -> None:
    app = application()
    app["spec"]["source"] = {
        "repoURL": "https://charts.example",
        "chart": "app",
        "targetRevision": "main",
    }
    assert "Helm chart" in _problems(parse_application(app))


def test_an_annotated_git_repository_names_its_branch_and_the_flux_objects() -> None:
    found = _candidate(parse_git_repository(git_repository(ref={"branch": "prod"})))
    assert found.source == "flux GitRepository team-b/env"
    assert found.entry == {
        "gitops": {"fluxGitRepository": "team-b/env", "fluxKustomization": "flux-system/apps"},
        "mainBranch": "prod",
        "repo": "ssh://git@git.example/team-b/env.git",
    }


def test_a_git_repository_without_a_ref_follows_fluxs_default_branch() -> None:
    assert _candidate(parse_git_repository(git_repository())).entry["mainBranch"] == "master"


@pytest.mark.parametrize(
    "ref",
    [
        {"tag": "v1"},
        {"semver": ">=1.0"},
        {"branch": "main", "commit": "9e1f00c"},
        {"name": "refs/tags/v1"},
    ],
)
def test_a_pinned_git_repository_is_a_problem(ref: dict[str, str]) -> None:
    assert "pins a fixed revision" in _problems(parse_git_repository(git_repository(ref=ref)))


def test_a_git_repository_must_name_its_kustomization() -> None:
    problems = _problems(parse_git_repository(git_repository(notes=_notes())))
    assert FLUX_KUSTOMIZATION in problems
    assert "namespace/name" in problems


def test_optional_annotations_set_interval_paths_and_state_branch() -> None:
    notes = _notes(
        **{INTERVAL: "45", EXPERIMENT_PATHS: "apps, ./team/x/ ,.", STATE_BRANCH: "rollouts/state"}
    )
    entry = _candidate(parse_application(application(notes))).entry
    assert entry["interval"] == 45
    assert entry["experimentPaths"] == ["apps", "team/x", "."]
    assert entry["stateBranch"] == "rollouts/state"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (INTERVAL, "0"),
        (INTERVAL, "-5"),
        (INTERVAL, "nan"),
        (INTERVAL, "inf"),
        (INTERVAL, "1e9"),
        (INTERVAL, "30s"),
        (EXPERIMENT_PATHS, "/etc"),
        (EXPERIMENT_PATHS, "apps/../../etc"),
        (EXPERIMENT_PATHS, ".."),
        (EXPERIMENT_PATHS, ","),
        (EXPERIMENT_PATHS, "a\\b"),
        (EXPERIMENT_PATHS, ",".join(["a"] * 17)),
        (STATE_BRANCH, "a..b"),
        (STATE_BRANCH, "HEAD"),
        (STATE_BRANCH, "x.lock"),
        (STATE_BRANCH, "-x"),
        (STATE_BRANCH, "a b"),
        (STATE_BRANCH, "state\n"),
        (CREDENTIALS_SECRET, "Not_A_Name"),
        (ENABLED, "yes"),
        (PREFIX + "intervall", "30"),
        (FLUX_KUSTOMIZATION, "flux-system/apps"),  # an Application takes none
    ],
)
def test_a_bad_annotation_value_is_a_problem_naming_the_annotation(key: str, value: str) -> None:
    problems = _problems(parse_application(application(_notes(**{key: value}))))
    assert key in problems


def test_an_object_without_a_credentials_secret_is_a_problem() -> None:
    problems = _problems(parse_application(application({ENABLED: "true"})))
    assert CREDENTIALS_SECRET in problems


def test_only_objects_that_opt_in_are_considered() -> None:
    assert opted_in(application())
    assert opted_in(application({ENABLED: "yes"}))  # considered, then reported
    assert not opted_in(application({ENABLED: "false"}))
    assert not opted_in(application({}))
    assert not opted_in({"metadata": "nonsense"})


@pytest.mark.parametrize(
    "url",
    [
        "https://user:ghp_leaked@git.example/env.git",
        "https://ghp_leaked@git.example/env.git",
        "ssh://git:ghp_leaked@git.example/env.git",
    ],
)
def test_credentials_in_a_url_are_refused_and_never_repeated(url: str) -> None:
    problems = _problems(parse_application(application(repoURL=url)))
    assert "carries credentials" in problems
    assert "ghp_leaked" not in problems


@pytest.mark.parametrize(
    "url",
    [
        "/var/run/secrets/env",
        "file:///etc/env",
        "ftp://git.example/env",
        "https://git.example/a/../b.git",
        "https://git.example/env.git?x=1",
        "https://",
        "https://git.example:99999/env",
    ],
)
def test_urls_that_are_no_remote_repository_are_refused(url: str) -> None:
    assert "repoURL" in _problems(parse_application(application(repoURL=url)))


@pytest.mark.parametrize(
    "url",
    [
        "git@git.example:team/env.git",
        "ssh://git@git.example:2222/env.git",
        "http://gitea.local:3000/a/b",
    ],
)
def test_ssh_and_plain_http_urls_are_accepted(url: str) -> None:
    assert _candidate(parse_application(application(repoURL=url))).entry["repo"] == url


def test_two_spellings_of_one_repository_share_a_key() -> None:
    assert url_key("https://Git.Example/a/env.git") == url_key("https://git.example/a/env/")
    assert url_key("git@Git.Example:a/env.git") == url_key("git@git.example:a/env")
    assert url_key("https://git.example/a/env") != url_key("https://git.example/a/env2")


def test_entries_are_repos_the_configuration_accepts() -> None:
    """A discovered entry, with its credentials, builds as a ``repos:`` entry does."""
    found = _candidate(parse_application(application(_notes(**{INTERVAL: "12.5"}))))
    material = parse_secret(secret({"token": TOKEN, "url": "https://git.example/team-a/env.git"}))
    credentials = credentials_entry(material, found.entry["repo"], PATHS)
    assert isinstance(credentials, dict)
    repo = entry_settings(Settings(), {**found.entry, "credentials": credentials}, "discovered")
    assert repo.repo.url == "https://git.example/team-a/env.git"
    assert repo.repo.interval == 12.5
    assert repo.credentials.token_file == Path(PATHS["token"])
    assert repo.gitops.argocd_application == "team-a/env"
    flux = _candidate(parse_git_repository(git_repository()))
    material = parse_secret(
        secret(
            {
                "identity": KEY,
                "known_hosts": "git.example ssh-ed25519 AAAA",
                "url": flux.entry["repo"],
            }
        )
    )
    credentials = credentials_entry(material, flux.entry["repo"], PATHS)
    assert isinstance(credentials, dict)
    repo = entry_settings(Settings(), {**flux.entry, "credentials": credentials}, "discovered")
    assert repo.credentials.ssh_key_file == Path(PATHS["identity"])
    assert (repo.gitops.flux_gitrepository, repo.gitops.flux_kustomization) == (
        "team-b/env",
        "flux-system/apps",
    )


# -- credentials Secrets ----------------------------------------------------------------


def test_flux_and_argocd_key_names_are_both_read() -> None:
    url = "https://git.example/env.git"
    flux = parse_secret(
        secret(
            {
                "username": "bot",
                "password": TOKEN,
                "ca.crt": "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----",
                "url": url,
            }
        )
    )
    assert flux.files["token"] == TOKEN.encode()
    assert flux.username == "bot"
    assert credentials_entry(flux, url, PATHS) == {
        "caFile": PATHS["ca.crt"],
        "tokenFile": PATHS["token"],
        "username": "bot",
    }
    argocd = parse_secret(
        secret({"sshPrivateKey": KEY, "known_hosts": "h ssh-ed25519 AAAA", "url": url})
    )
    assert argocd.files["identity"] == (KEY + "\n").encode()
    assert argocd.username is None


def test_an_ssh_key_without_known_hosts_is_a_problem_saying_what_to_add() -> None:
    url = "ssh://git@git.example/env.git"
    material = parse_secret(secret({"identity": KEY, "url": url}))
    problem = credentials_entry(material, url, PATHS)
    assert isinstance(problem, str)
    assert "add key known_hosts" in problem


def test_a_token_is_not_used_for_an_ssh_url() -> None:
    url = "git@git.example:env.git"
    problem = credentials_entry(parse_secret(secret({"token": TOKEN, "url": url})), url, PATHS)
    assert isinstance(problem, str)
    assert "no SSH key" in problem


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"url": "https://git.example/env.git"}, "holds no credentials"),
        ({"token": TOKEN}, "add key url"),
        ({"token": TOKEN, "url": "/local/path"}, "key url must list"),
        ({"token": "a\x1bb", "url": "https://x.example/e"}, "key token is empty or holds control"),
        ({"identity": "not a key", "url": "ssh://x.example/e"}, "not a PEM or OpenSSH"),
        ({"token": TOKEN, "ca.crt": "junk", "url": "https://x.example/e"}, "not a PEM certificate"),
    ],
)
def test_secrets_that_cannot_be_used_say_what_to_fix(data: dict[str, str], expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as refused:
        parse_secret(secret(data))
    assert TOKEN not in str(refused.value)


def test_invalid_base64_is_refused_by_key_name() -> None:
    with pytest.raises(ValueError, match="key token is not valid base64"):
        parse_secret({"data": {"token": "***", "url": "aHR0cHM6Ly94LmV4YW1wbGUvZQ=="}})


def test_a_secrets_credentials_go_only_to_the_repositories_it_names() -> None:
    material = parse_secret(
        secret(
            {"token": TOKEN, "url": "https://git.example/team-a/\nhttps://git.example/b/env.git"}
        )
    )
    assert secret_allows(material, "https://git.example/team-a/env.git", "team-a") is None
    assert secret_allows(material, "https://GIT.example/b/env", "any") is None
    for elsewhere in (
        "https://evil.example/team-a/env.git",
        "https://git.example/team-a-evil/env.git",
        "https://git.example/team-a/",
        "https://git.example/b/env2.git",
    ):
        assert "does not name this repository" in (secret_allows(material, elsewhere, "x") or "")


def test_a_secret_can_restrict_the_namespaces_that_use_it() -> None:
    url = "https://git.example/env.git"
    material = parse_secret(
        secret({"token": TOKEN, "url": url}, {SECRET_NAMESPACES: "team-a, argocd"})
    )
    assert secret_allows(material, url, "argocd") is None
    assert "not for objects in namespace team-b" in (secret_allows(material, url, "team-b") or "")
    with pytest.raises(ValueError, match=SECRET_NAMESPACES):
        parse_secret(secret({"token": TOKEN, "url": url}, {SECRET_NAMESPACES: "Bad Name"}))


# -- hostile input ------------------------------------------------------------------------

_hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=3000),
    st.sampled_from(
        ["true", "false", "../x", "/", "a..b", "nan", "1e400", "-0", "team/x", "%2e%2e"]
    ),
    # valid values too, so that the rest of an object is checked as well
    st.sampled_from(["https://git.example/e.git", "main", "apps", "env-push", "ns/name", "30"]),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _hostile_text,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_annotation_keys = st.sampled_from(
    [
        ENABLED,
        CREDENTIALS_SECRET,
        INTERVAL,
        EXPERIMENT_PATHS,
        STATE_BRANCH,
        FLUX_KUSTOMIZATION,
        PREFIX + "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    notes=st.dictionaries(_annotation_keys, _json, max_size=7),
    source=st.dictionaries(st.sampled_from(["repoURL", "targetRevision", "path", "chart"]), _json),
    flux_spec=st.dictionaries(st.sampled_from(["url", "ref"]), _json),
)
def test_hostile_objects_give_entries_or_bounded_problems_never_exceptions(
    notes: dict[str, Any], source: dict[str, Any], flux_spec: dict[str, Any]
) -> None:
    app = application(notes)
    app["spec"]["source"] = source
    repo = git_repository(notes)
    repo["spec"] = flux_spec
    for found in (parse_application(app), parse_git_repository(repo)):
        if isinstance(found, Candidate):
            assert found.entry["repo"]
            assert all(
                isinstance(p, str) and ".." not in p.split("/")
                for p in found.entry.get("experimentPaths", [])
            )
        else:
            assert found
            assert all(isinstance(p, str) and len(p) < 1000 for p in found)


@settings(max_examples=300, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(
            [
                "token",
                "password",
                "username",
                "identity",
                "sshPrivateKey",
                "known_hosts",
                "ca.crt",
                "url",
            ]
        ),
        st.one_of(
            _json,
            st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
            _hostile_text.map(lambda t: base64.b64encode(t.encode()).decode()),
        ),
    ),
    notes=st.dictionaries(st.sampled_from([SECRET_NAMESPACES, "other"]), _json, max_size=2),
)
def test_hostile_secrets_give_material_or_a_value_error_never_a_secret_in_it(
    data: dict[str, Any], notes: dict[str, Any]
) -> None:
    obj = {
        "metadata": {"annotations": notes},
        "data": {**data, "token": base64.b64encode(TOKEN.encode()).decode()},
    }
    try:
        material = parse_secret(obj)
    except ValueError as exc:
        refused = str(exc)
    else:
        refused = ""
        assert material.urls
    assert TOKEN not in refused
    if refused:
        return
    for url in ("https://git.example/env.git", "ssh://git@git.example/env.git"):
        problem = credentials_entry(material, url, PATHS)
        assert isinstance(problem, (str, dict))
        assert TOKEN not in str(problem)


# -- files and comparisons ----------------------------------------------------------------


def test_credential_files_are_private_atomic_and_rewritten_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert write_private(path, b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    inode = path.stat().st_ino
    assert not write_private(path, b"one")
    assert path.stat().st_ino == inode
    path.chmod(0o644)
    assert not write_private(path, b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_private(path, b"two")
    assert path.read_bytes() == b"two"
    assert path.stat().st_ino != inode  # replaced by a rename, never truncated in place
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_a_secrets_directory_name_is_stable_and_does_not_show_the_name() -> None:
    assert secret_dir_name("env-push") == secret_dir_name("env-push")
    assert secret_dir_name("env-push") != secret_dir_name("env-push2")
    assert "env" not in secret_dir_name("env-push")
    assert len(secret_dir_name("x")) == 16


def test_two_discoveries_compare_by_their_entries() -> None:
    one = Discovered(({"repo": "a", "gitops": {"x": "1"}},), ("p",))
    same = Discovered(({"gitops": {"x": "1"}, "repo": "a"},), ())
    other = Discovered(({"repo": "a", "gitops": {"x": "2"}},), ("p",))
    assert one.same_repos(same)
    assert entries_equal(one.entries, same.entries)
    assert not one.same_repos(other)
    assert not one.same_repos(None)
