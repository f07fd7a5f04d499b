import re

import pytest

from reconciler.cluster.lease import LeaseRecord, LeaseSettings, Step, clean_url, decide, lease_name

OTHER = LeaseRecord(
    holder="other", duration=15, renew_time="t", transitions=1, resource_version="7"
)


def test_a_missing_lease_is_created() -> None:
    assert decide(None, "me", observed_at=0, now=0) is Step.CREATE


def test_our_lease_is_renewed() -> None:
    mine = LeaseRecord("me", 15, "t", 0, "1")
    assert decide(mine, "me", observed_at=0, now=100) is Step.RENEW


def test_another_holders_lease_is_left_until_it_has_not_changed_for_its_duration() -> None:
    assert decide(OTHER, "me", observed_at=10, now=24.9) is Step.WAIT
    assert decide(OTHER, "me", observed_at=10, now=25) is Step.TAKE


def test_a_released_lease_is_taken_at_once() -> None:
    released = LeaseRecord("", 1, "t", 2, "9")
    assert decide(released, "me", observed_at=10, now=10) is Step.TAKE


def test_lease_names_are_valid_stable_and_distinct() -> None:
    names = {lease_name(f"https://git.example/team-{i}/env.git") for i in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        assert len(name) <= 63
    assert lease_name("https://git.example/a/Env.git") == lease_name(
        "https://git.example/a/Env.git"
    )


def test_credentials_never_reach_a_lease() -> None:
    url = "https://x-access-token:s3cret@git.example/a/env.git"
    assert clean_url(url) == "https://git.example/a/env.git"
    assert lease_name(url) == lease_name("https://git.example/a/env.git")
    assert "s3cret" not in lease_name(url)


@pytest.mark.parametrize(
    ("duration", "renew", "retry"),
    [(10, 10, 2), (10, 12, 2), (15, 10, 10), (15, 10, 0)],
)
def test_settings_that_would_let_two_replicas_act_at_once_are_refused(
    duration: float, renew: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseSettings(lease_duration=duration, renew_deadline=renew, retry_period=retry)


def test_defaults_are_client_go_s() -> None:
    settings = LeaseSettings()
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (15, 10, 2)
    assert LeaseSettings(lease_duration=2.5, renew_deadline=2, retry_period=1).duration_seconds == 3
