"""Where a tick's time goes: wall time spent inside chosen functions, by phase name.

``Phases`` wraps methods of live objects (the reconciler, its store, the store's remote)
and module functions with timers for the length of a ``with`` block, then puts the
originals back. Nested phases are subtracted from the phase they run in, so the figures
add up to the tick's time. It changes no behaviour: every call goes to the original.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Phases:
    """Seconds spent in each named phase, exclusive of the phases nested in it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[float]] = []

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - passes anything through
            self._stack.append([0.0])
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                nested = self._stack.pop()[0]
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - nested
                self.calls[name] = self.calls.get(name, 0) + 1
                if self._stack:
                    self._stack[-1][0] += elapsed

        return timed

    @contextmanager
    def timing(self, targets: list[tuple[object, str, str]]) -> Iterator[Phases]:
        """Time ``(owner, attribute, phase)`` for the block; restore the originals after."""
        saved: list[tuple[object, str, Any, bool]] = []
        try:
            for owner, attribute, phase in targets:
                original = getattr(owner, attribute)
                # A method found on the class is shadowed on the instance, then unshadowed.
                own = attribute in vars(owner)
                saved.append((owner, attribute, original, own))
                setattr(owner, attribute, self._wrap(phase, original))
            yield self
        finally:
            for owner, attribute, original, own in reversed(saved):
                if own:
                    setattr(owner, attribute, original)
                else:
                    delattr(owner, attribute)

    def reset(self) -> None:
        """Forget what was measured."""
        self.seconds.clear()
        self.calls.clear()
