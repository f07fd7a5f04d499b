from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.load.pacing import Pacing

PACINGS = st.builds(
    Pacing,
    qps=st.floats(min_value=0.1, max_value=2000),
    interval=st.floats(min_value=0.1, max_value=600),
    duration=st.one_of(st.none(), st.floats(min_value=0.01, max_value=900)),
    requests=st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
)


def test_without_duration_or_count_the_sends_run_on_at_qps() -> None:
    pacing = Pacing(qps=8, interval=10)
    assert pacing.per_iteration is None
    assert [pacing.send_time(k) for k in range(4)] == [0, 0.125, 0.25, 0.375]
    assert pacing.send_time(80) == 10
    assert pacing.index_at(0.126) == 2
    assert pacing.rate() == 8


def test_a_duration_sends_only_in_the_first_part_of_each_iteration() -> None:
    pacing = Pacing(qps=10, interval=5, duration=1)
    assert pacing.per_iteration == 10
    assert pacing.send_time(9) == pytest.approx(0.9)
    assert pacing.send_time(10) == 5
    assert pacing.index_at(1.5) == 10  # past the duration: the next iteration's first
    assert pacing.index_at(5.05) == 11
    assert pacing.rate() == 2


def test_a_request_count_is_sent_at_qps_at_the_start_of_each_iteration() -> None:
    pacing = Pacing(qps=20, interval=2, requests=5)
    assert pacing.per_iteration == 5
    assert [pacing.send_time(k) for k in range(6)] == [0, 0.05, 0.1, 0.15, 0.2, 2]


def test_an_iteration_never_carries_more_than_fit_at_qps() -> None:
    assert Pacing(qps=2, interval=3, requests=100).per_iteration == 6
    assert Pacing(qps=2, interval=3, duration=30).per_iteration == 6
    assert Pacing(qps=1.5, interval=1, requests=9).per_iteration == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"qps": 0, "interval": 1}, {"qps": 1, "interval": 0}, {"qps": float("inf"), "interval": 1},
     {"qps": 1, "interval": 1, "duration": 0}, {"qps": 1, "interval": 1, "requests": 0}],
)  # fmt: skip
def test_a_pacing_that_sends_nothing_or_everything_at_once_is_refused(
    kwargs: dict[str, float],
) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacing(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(PACINGS, st.floats(min_value=0, max_value=10_000))
def test_index_at_is_the_first_send_due_at_or_after_a_time(pacing: Pacing, offset: float) -> None:
    k = pacing.index_at(offset)
    assert pacing.send_time(k) >= offset - 1e-6
    if k > 0:
        assert pacing.send_time(k - 1) < offset + 1e-6


@settings(max_examples=300)
@given(PACINGS, st.integers(min_value=0, max_value=50_000))
def test_send_times_rise_and_stay_within_their_iteration(pacing: Pacing, k: int) -> None:
    assert pacing.send_time(k + 1) > pacing.send_time(k)
    per = pacing.per_iteration
    if per is not None:
        iteration, n = divmod(k, per)
        offset = pacing.send_time(k) - iteration * pacing.interval
        assert 0 <= offset < pacing.interval + 1e-9
        if pacing.duration is not None and pacing.requests is None:
            assert offset < pacing.duration + 1e-9
        assert n < per
