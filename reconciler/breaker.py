"""A circuit breaker for an adapter's backend: stop asking one that keeps failing.

After ``trip_after`` calls in a row have failed (each after the adapter's own retries),
``wait_left`` says how long not to call at all; once ``cooldown_seconds`` have passed one
call goes out, and a failure opens the circuit again at once while an answer closes it.
The adapter decides what counts as a failure and what to say; this keeps only the count
and the clock (passed in), and is safe to share between threads. Pure: no I/O, no logging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Counts failures in a row; open for a cooldown once there are enough."""

    def __init__(
        self, *, trip_after: int, cooldown_seconds: float, clock: Callable[[], float]
    ) -> None:
        """Open after ``trip_after`` failures in a row, for ``cooldown_seconds`` on ``clock``."""
        self.trip_after = trip_after
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0

    @property
    def failures(self) -> int:
        """Calls in a row that failed."""
        return self._failures

    def wait_left(self) -> float:
        """Seconds before a call may go out again; 0 while the circuit is closed."""
        with self._lock:
            return max(0.0, self._open_until - self._clock())

    def failed(self) -> bool:
        """Count a failed call; True when it opens the circuit (for the caller to log)."""
        with self._lock:
            self._failures += 1
            if self._failures < self.trip_after:
                return False
            self._open_until = self._clock() + self.cooldown_seconds
            return True

    def answered(self) -> bool:
        """Count an answer; True when it closes a circuit that had opened."""
        with self._lock:
            tripped = self._failures >= self.trip_after
            self._failures = 0
            return tripped
