"""The circuit breaker both adapters (Prometheus, the API server) stop asking with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.breaker import CircuitBreaker


def test_it_opens_after_enough_failures_in_a_row_and_a_probe_decides_after_the_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(trip_after=3, cooldown_seconds=10.0, clock=lambda: now[0])
    assert [breaker.failed() for _ in range(3)] == [False, False, True]
    assert breaker.wait_left() == 10.0
    now[0] = 9.5
    assert breaker.wait_left() == 0.5
    now[0] = 10.0
    assert breaker.wait_left() == 0.0  # one call may go out
    assert breaker.failed()  # it failed: open again at once, for a whole cooldown
    assert breaker.wait_left() == 10.0
    now[0] = 20.0
    assert breaker.answered()  # an answer closes it (and says so once)
    assert not breaker.answered()
    assert (breaker.failures, breaker.wait_left()) == (0, 0.0)


@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=5))
def test_it_is_open_only_after_trip_after_failures_with_no_answer_between(
    calls: list[bool], trip_after: int
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(trip_after=trip_after, cooldown_seconds=1.0, clock=lambda: now[0])
    run = 0
    for failed in calls:
        now[0] += breaker.wait_left()  # callers wait out an open circuit before calling
        if failed:
            assert breaker.failed() == (run + 1 >= trip_after)
            run += 1
        else:
            assert breaker.answered() == (run >= trip_after)
            run = 0
        assert (breaker.wait_left() > 0) == (run >= trip_after)
