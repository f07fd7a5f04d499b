import dataclasses
from pathlib import Path

import pytest

from reconciler.cluster.lease import LeaseSettings
from reconciler.config import (
    FIELDS,
    ConfigError,
    Settings,
    build,
    lease_timing_problem,
    restart_needed,
)


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text(
        "repo: https://git.example/env.git\ninterval: 60\nprometheus:\n  url: http://file:9090\n"
        "  timeout: 3\nleaderElection:\n  enabled: true\n"
    )
    settings = build(
        flags={"interval": "5"},
        environ={"RECONCILER_INTERVAL": "20", "RECONCILER_PROMETHEUS_URL": "http://env:9090"},
        file=file,
    )
    assert settings.repo.url == "https://git.example/env.git"  # file
    assert settings.repo.interval == 5.0  # flag over environment over file
    assert settings.prometheus.url == "http://env:9090"  # environment over file
    assert settings.prometheus.timeout == 3.0  # file over default
    assert settings.leader_election.enabled is True
    assert settings.repo.main_branch == "main"  # default


def test_lists_and_maps_from_the_environment() -> None:
    settings = build(
        flags={"repo": "/env"},
        environ={
            "RECONCILER_EXPERIMENT_PATHS": "apps, teams/a",
            "RECONCILER_PROMETHEUS_HEADERS": "X-Scope-OrgID=team-a,Accept=json",
            "RECONCILER_LOG_JSON": "false",
        },
    )
    assert settings.repo.experiment_paths == ("apps", "teams/a")
    assert settings.prometheus.headers == {"X-Scope-OrgID": "team-a", "Accept": "json"}
    assert settings.log.json is False


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({}, "no Env repo"),
        ({"repo": "/env", "interval": "0"}, "interval must be above 0"),
        ({"repo": "/env", "interval": "soon"}, "flag: interval \\(RECONCILER_INTERVAL\\)"),
        (
            {"repo": "/env", "renew_deadline": "20"},
            "retry_period < renew_deadline < lease_duration",
        ),
        (
            {"repo": "/env", "argocd_application": "noslash"},
            "argocd_application must be namespace/name",
        ),
        ({"repo": "/env", "leader_election": "maybe"}, "'maybe' is not true or false"),
    ],
)
def test_invalid_settings_name_what_is_wrong(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(flags=flags, environ={})


def test_unknown_keys_in_the_file_are_errors(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("repo: /env\nprometheus:\n  uri: http://x\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'prometheus\.uri'"):
        build(flags={}, environ={}, file=file)


def test_every_setting_is_declared_once_on_its_field_and_every_field_is_a_setting() -> None:
    leaves = {
        (group.name, inner.name)
        for group in dataclasses.fields(Settings)
        if group.default_factory is not dataclasses.MISSING
        for inner in dataclasses.fields(group.default_factory)  # type: ignore[arg-type]
    } | {(None, f.name) for f in dataclasses.fields(Settings) if "setting" in f.metadata}
    assert {(f.group, f.attr) for f in FIELDS} == leaves
    assert len({f.name for f in FIELDS}) == len(FIELDS)
    assert len({f.file_path for f in FIELDS}) == len(FIELDS)
    assert all(f.env.startswith("RECONCILER_") for f in FIELDS)
    defaults = Settings()
    assert all(f.value(defaults) == f.default for f in FIELDS)


def test_each_setting_lands_in_its_group_from_every_source(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("repo: /env\ncredentials:\n  caFile: /ca.pem\nlog:\n  level: debug\n")
    settings = build(
        flags={"kube_context": "kind", "lease_duration": "30", "renew_deadline": "20"},
        environ={"RECONCILER_PROMETHEUS_TOKEN_FILE": "/token", "RECONCILER_MAX_ALIASES": "5"},
        file=file,
    )
    assert settings.credentials.ca_file == Path("/ca.pem")
    assert settings.credentials.configured
    assert settings.log.level == "debug"
    assert settings.kubernetes.context == "kind"
    assert settings.leader_election.lease_duration == 30.0
    assert settings.prometheus.token_file == Path("/token")
    assert settings.limits.max_aliases == 5
    assert not build(flags={"repo": "/env", "username": "bot"}, environ={}).credentials.configured


@pytest.mark.parametrize(
    "raw",
    [
        "X-Scope-OrgID=team-a,Authorization=Basic YTpi",
        "X-Scope-OrgID: team-a\nAuthorization: Basic YTpi\n",
        ["X-Scope-OrgID: team-a", "Authorization=Basic YTpi"],
    ],
)
def test_headers_read_as_name_equals_value_or_name_colon_value(raw: object) -> None:
    settings = build(flags={"prometheus_headers": raw}, environ={}, only={"prometheus_headers"})
    assert settings.prometheus.headers == {
        "X-Scope-OrgID": "team-a",
        "Authorization": "Basic YTpi",
    }


def test_a_command_reading_some_settings_ignores_the_others_in_the_environment() -> None:
    environ = {"RECONCILER_REPO": "/env", "RECONCILER_INTERVAL": "never"}
    settings = build(flags={}, environ=environ, only={"repo", "main_branch"})
    assert settings.repo.url == "/env"
    assert settings.repo.interval == 30.0
    with pytest.raises(ConfigError, match=r"no Env repo: give --repo or RECONCILER_REPO$"):
        build(flags={}, environ={}, only={"repo"})
    assert build(flags={}, environ={}, only={"prometheus_url"}).repo.url == ""


def test_a_reload_names_the_settings_that_take_a_restart_and_only_those() -> None:
    running = build(flags={"repo": "/env", "interval": "30"}, environ={})
    assert restart_needed(running, build(flags={"repo": "/env", "interval": "5"}, environ={})) == []
    changed = build(
        flags={"repo": "/other", "listen": "127.0.0.1:9000", "lease_duration": "30"}, environ={}
    )
    # the repos served change without a restart (the runner starts and stops workers)
    assert restart_needed(running, changed) == [
        "--lease-duration / leaderElection.leaseDuration",
        "--listen / listen",
    ]


def test_lease_timings_are_checked_alike_by_the_settings_and_the_leases() -> None:
    problem = lease_timing_problem(2, 10, 8)
    assert problem is not None
    with pytest.raises(ConfigError) as from_settings:
        build(flags={"repo": "/env", "lease_duration": "8"}, environ={})
    with pytest.raises(ValueError, match="leader election needs") as from_leases:
        LeaseSettings(lease_duration=8)
    assert str(from_settings.value) == str(from_leases.value) == problem
    assert lease_timing_problem(2, 10, 15) is None
