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
    assert settings.repo == "https://git.example/env.git"  # file
    assert settings.interval == 5.0  # flag over environment over file
    assert settings.prometheus_url == "http://env:9090"  # environment over file
    assert settings.prometheus_timeout == 3.0  # file over default
    assert settings.leader_election is True
    assert settings.main_branch == "main"  # default


def test_lists_and_maps_from_the_environment() -> None:
    settings = build(
        flags={"repo": "/env"},
        environ={
            "RECONCILER_EXPERIMENT_PATHS": "apps, teams/a",
            "RECONCILER_PROMETHEUS_HEADERS": "X-Scope-OrgID=team-a,Accept=json",
            "RECONCILER_LOG_JSON": "false",
        },
    )
    assert settings.experiment_paths == ("apps", "teams/a")
    assert settings.prometheus_headers == {"X-Scope-OrgID": "team-a", "Accept": "json"}
    assert settings.log_json is False


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


def test_every_setting_has_a_field_and_the_other_way_round() -> None:
    declared = {f.name for f in FIELDS}
    assert declared == set(Settings.__dataclass_fields__)
    assert all(f.env.startswith("RECONCILER_") for f in FIELDS)


def test_a_reload_names_the_settings_that_take_a_restart_and_only_those() -> None:
    running = build(flags={"repo": "/env", "interval": "30"}, environ={})
    assert restart_needed(running, build(flags={"repo": "/env", "interval": "5"}, environ={})) == []
    changed = build(
        flags={"repo": "/other", "listen": "127.0.0.1:9000", "lease_duration": "30"}, environ={}
    )
    assert restart_needed(running, changed) == [
        "--repo / repo",
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
