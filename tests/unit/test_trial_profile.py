"""``reconciler try --profile FILE``: whatever the file holds, profiles or one located error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.demo.trial import HEALTHY, TrialError, load_profile
from reconciler.metrics.profile import Profile


def test_each_version_takes_the_values_given_and_a_healthy_versions_otherwise() -> None:
    profiles = load_profile("p.yaml", b"v1: {}\nv2: {errorRate: 0.05, meanLatencyMs: '300'}\n")
    assert profiles["v1"] == HEALTHY
    assert profiles["v2"] == Profile(
        error_rate=0.05, mean_latency_ms=300.0, p95_latency_ms=HEALTHY.p95_latency_ms
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"- v1\n", "p.yaml:1: a profile is one mapping"),
        (b"v1: 3\n", "p.yaml:1:1: 'v1' must map to errorRate"),
        (b"v1: {errorRate: -1}\n", "p.yaml:1:6: 'v1.errorRate' must be one of"),
        (b"v1: {errorRate: .nan}\n", "p.yaml:1:6: 'v1.errorRate' must be one of"),
        (b"v1: [\n", "p.yaml:"),
    ],
)
def test_a_bad_profile_file_says_where_and_what(text: bytes, message: str) -> None:
    with pytest.raises(TrialError) as raised:
        load_profile("p.yaml", text)
    assert str(raised.value).startswith(message), str(raised.value)


@given(st.binary(max_size=400))
def test_any_bytes_give_profiles_or_a_trial_error(data: bytes) -> None:
    error: TrialError | None = None
    profiles: dict[str, Profile] = {}
    try:
        profiles = load_profile("p.yaml", data)
    except TrialError as exc:
        error = exc
    assert error is None or str(error).startswith("p.yaml:")
    assert all(isinstance(p, Profile) for p in profiles.values())
