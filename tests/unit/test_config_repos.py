"""The config file's ``repos:`` list: each Env repo's own settings over the global ones."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import (
    PROCESS_WIDE,
    ConfigError,
    Settings,
    build,
    repo_key,
    restart_needed,
)


def config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_each_entry_resolves_its_own_settings_over_the_global_ones(tmp_path: Path) -> None:
    file = config(
        tmp_path,
        """
        interval: 60
        mainBranch: trunk
        credentials:
          tokenFile: /secrets/token
        prometheus:
          url: http://prometheus:9090
        repos:
          - repo: https://git.example/a/env.git
            interval: 15
            credentials:
              tokenFile: /secrets/a-token
          - repo: git@git.example:b/env.git
            mainBranch: main
            stateBranch: b-state
            credentials:
              sshKeyFile: /secrets/b-key
            prometheus:
              url: http://b-prometheus:9090
        """,
    )
    settings = build(flags={}, environ={}, file=file)
    first, second = settings.served()
    assert settings.served() == settings.repos
    assert first.repo.url == "https://git.example/a/env.git"
    assert (first.repo.interval, first.repo.main_branch) == (15.0, "trunk")
    assert first.credentials.token_file == Path("/secrets/a-token")
    assert first.prometheus.url == "http://prometheus:9090"
    assert second.repo.url == "git@git.example:b/env.git"
    assert (second.repo.interval, second.repo.main_branch) == (60.0, "main")
    assert second.repo.state_branch == "b-state"
    assert second.credentials.ssh_key_file == Path("/secrets/b-key")
    assert second.prometheus.url == "http://b-prometheus:9090"
    assert first.repos == second.repos == ()  # an entry is one repo, not a fleet


def test_an_entry_is_resolved_over_flags_and_environment_too(tmp_path: Path) -> None:
    file = config(
        tmp_path,
        """
        interval: 60
        repos:
          - repo: /srv/a
          - repo: /srv/b
            interval: 15
        """,
    )
    settings = build(
        flags={"main_branch": "release"}, environ={"RECONCILER_INTERVAL": "5"}, file=file
    )
    a, b = settings.served()
    assert (a.repo.interval, b.repo.interval) == (5.0, 15.0)  # the entry's own beats all
    assert a.repo.main_branch == b.repo.main_branch == "release"


def test_process_wide_settings_stay_the_processs_in_every_entry(tmp_path: Path) -> None:
    file = config(
        tmp_path,
        """
        listen: 127.0.0.1:9000
        fleet:
          workers: 8
        repos:
          - repo: /srv/a
        """,
    )
    (entry,) = build(flags={}, environ={}, file=file).served()
    assert entry.server.listen == "127.0.0.1:9000"
    assert entry.fleet.workers == 8


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("listen: 0.0.0.0:9000", "listen"),
        ("leaderElection: {enabled: true}", "leaderElection.enabled"),
        ("fleet: {workers: 2}", "fleet.workers"),
        ("fleet: {maxRepos: 2}", "fleet.maxRepos"),
        ("cacheDir: /elsewhere", "cacheDir"),
        ("log: {level: debug}", "log.level"),
        ("load: {maxQpsTotal: 5}", "load.maxQpsTotal"),
        ("kubernetes: {namespace: other}", "kubernetes.namespace"),
        ("webhook: {secretFile: /s}", "webhook.secretFile"),
        ("failpoints: [after-fetch]", "failpoints"),
    ],
)
def test_an_entry_setting_a_process_wide_key_is_refused_naming_the_entry_and_key(
    tmp_path: Path, setting: str, key: str
) -> None:
    file = config(
        tmp_path,
        f"""
        repos:
          - repo: /srv/a
          - repo: /srv/b
            {setting}
        """,
    )
    with pytest.raises(ConfigError) as refused:
        build(flags={}, environ={}, file=file)
    message = str(refused.value)
    assert f"config file {file}: repos[1]: {key} is a setting of the whole process" in message
    assert "set it at the top of the config file" in message


def test_every_process_wide_setting_is_one_no_entry_may_set() -> None:
    assert {"listen", "leader_election", "fleet_workers", "fleet_max_repos", "cache_dir"} <= (
        PROCESS_WIDE
    )
    assert not {"repo", "interval", "token_file", "main_branch", "prometheus_url"} & PROCESS_WIDE


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("https://git.example/org/env.git", "https://GIT.example/org/env"),
        ("https://git.example/org/env", "https://git.example/org/env/"),
        ("/srv/env", "/srv/env.git"),
        # one repository over HTTPS and over SSH: two workers and two Leases would act on it
        ("https://github.com/org/env", "git@github.com:org/env.git"),
        ("https://github.com/org/env.git", "ssh://git@github.com:22/org/env"),
    ],
)
def test_two_entries_for_one_repo_are_refused(tmp_path: Path, one: str, other: str) -> None:
    file = config(
        tmp_path,
        f"""
        repos:
          - repo: {one}
          - repo: /srv/another
          - repo: {other}
            interval: 5
        """,
    )
    with pytest.raises(ConfigError, match=f"{other} is listed twice; keep one entry"):
        build(flags={}, environ={}, file=file)


def test_different_repos_on_one_host_are_all_served(tmp_path: Path) -> None:
    file = config(
        tmp_path,
        """
        repos:
          - repo: https://git.example/org/env
          - repo: https://git.example/org/env2
          - repo: https://git.example/other/env
          - repo: https://other.example/org/env
        """,
    )
    assert len(build(flags={}, environ={}, file=file).served()) == 4


@given(st.sampled_from(["", "/", ".git", ".git/"]), st.sampled_from(["git.example", "GIT.Example"]))
def test_spellings_of_one_url_share_a_repo_key(suffix: str, host: str) -> None:
    assert repo_key(f"https://{host}/org/env{suffix}") == repo_key("https://git.example/org/env")
    assert repo_key(f"https://{host}/org/env{suffix}") != repo_key("https://git.example/org/env2")


def test_more_entries_than_fleet_max_repos_are_refused(tmp_path: Path) -> None:
    file = config(
        tmp_path,
        """
        fleet:
          maxRepos: 2
        repos:
          - repo: /srv/a
          - repo: /srv/b
          - repo: /srv/c
        """,
    )
    with pytest.raises(ConfigError, match=r"3 repos listed, more than fleet_max_repos \(2\)"):
        build(flags={}, environ={}, file=file)
    assert len(build(flags={"fleet_max_repos": "3"}, environ={}, file=file).served()) == 3


def test_an_unknown_key_in_an_entry_is_refused_by_its_name(tmp_path: Path) -> None:
    file = config(
        tmp_path,
        """
        repos:
          - repo: /srv/a
            credentials:
              tokenFlie: /secrets/token
        """,
    )
    with pytest.raises(ConfigError, match=r"repos\[0\]: unknown setting 'credentials\.tokenFlie'"):
        build(flags={}, environ={}, file=file)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("  - interval: 5", r"repos\[0\]: no 'repo': name the Env repo's URL"),
        ("  - repo: ''", r"repos\[0\]: no 'repo'"),
        ("  - https://git.example/org/env", "repos must be a list of mappings"),
        ("  repo: /srv/a", "repos must be a list of mappings"),
        ("  - repo: /srv/a\n    interval: 0", r"repos\[0\] \(/srv/a\): interval must be above 0"),
        ("  - repo: /srv/a\n    interval: soon", r"repos\[0\]: interval \(RECONCILER_INTERVAL\)"),
        (
            "  - repo: /srv/a\n    gitops:\n      argocdApplication: noslash",
            r"repos\[0\] \(/srv/a\): argocd_application must be namespace/name",
        ),
    ],
)
def test_a_broken_entry_is_refused_naming_it(tmp_path: Path, entries: str, message: str) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(f"repos:\n{entries}\n")
    with pytest.raises(ConfigError, match=message):
        build(flags={}, environ={}, file=file)


@pytest.mark.parametrize(
    ("flags", "environ", "top"),
    [
        ({}, {}, "repo: /srv/a\n"),
        ({}, {"RECONCILER_REPO": "/srv/a"}, ""),
        ({"repo": "/srv/a"}, {}, ""),
    ],
    ids=["file", "environment", "flag"],
)
def test_repo_and_repos_together_are_refused_wherever_repo_comes_from(
    tmp_path: Path, flags: dict[str, str], environ: dict[str, str], top: str
) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(f"{top}repos:\n  - repo: /srv/a\n  - repo: /srv/b\n")
    with pytest.raises(ConfigError, match="both repo and repos are set"):
        build(flags=flags, environ=environ, file=file)


def test_one_repo_alone_is_served_by_the_top_level_settings() -> None:
    settings = build(flags={"repo": "/srv/a", "interval": "7"}, environ={})
    assert settings.repos == ()
    assert settings.served() == (settings,)
    assert settings.served()[0].repo.interval == 7.0


def test_neither_repo_nor_repos_serves_nothing_and_needs_discovery() -> None:
    assert Settings().served() == ()
    assert build(flags={"discovery": "true"}, environ={}).served() == ()
    with pytest.raises(ConfigError, match="no Env repo"):
        build(flags={}, environ={})


def test_an_empty_repos_list_is_no_repo_at_all(tmp_path: Path) -> None:
    file = config(tmp_path, "repos: []\n")
    with pytest.raises(ConfigError, match="no Env repo"):
        build(flags={}, environ={}, file=file)
    assert build(flags={"repo": "/srv/a"}, environ={}, file=file).served()[0].repo.url == "/srv/a"


def test_changing_the_repos_listed_needs_no_restart_but_workers_and_cache_do(
    tmp_path: Path,
) -> None:
    before = config(
        tmp_path,
        """
        repos:
          - repo: /srv/a
          - repo: /srv/b
            interval: 5
        """,
        "before.yaml",
    )
    after = config(
        tmp_path,
        """
        repos:
          - repo: /srv/b
            interval: 60
            mainBranch: trunk
          - repo: /srv/c
        """,
        "after.yaml",
    )
    running = build(flags={}, environ={}, file=before)
    changed = build(flags={}, environ={}, file=after)
    assert running.served() != changed.served()
    assert restart_needed(running, changed) == []
    workers = build(flags={"fleet_workers": "16"}, environ={}, file=after)
    assert restart_needed(running, workers) == ["--fleet-workers / fleet.workers"]
    cache = build(flags={"cache_dir": str(tmp_path / "cache")}, environ={}, file=after)
    assert restart_needed(running, cache) == ["--cache-dir / cacheDir"]
    single = build(flags={"repo": "/srv/a"}, environ={})
    assert restart_needed(running, single) == []  # from a list to one repo: no restart
