"""One experiment's fault stays that experiment's (DESIGN.md invariant 9).

Every step the loop takes for one experiment (or one file of main) runs inside
``Faults.boundary``: anything it raises, a bug in our own code included, is caught there,
recorded once (a log line with the traceback of an unexpected error, and an entry in the
tick's report, from which the runner counts ``reconciler_experiment_errors_total`` and the
loop sends a Kubernetes Event), and the loop goes on with the others. Only faults of the
Env repo as a whole cross the boundary: Git (fetch, read, push) and a lost Lease, which
must stop the tick. Memory is bounded by the faults still happening: a fault that did not
recur in the last tick is forgotten, so it is recorded again if it comes back.
Never decides anything about the experiment itself: a faulted experiment simply does not
take the step that raised, this tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Self

import structlog

from reconciler.errors import GitError, ReconcilerError, TemporaryError

log = structlog.get_logger("reconciler.controller")

EXCERPT = 300
"""Characters of an error message kept in logs, reports and Events (repo content is hostile)."""


class LeadershipLostError(TemporaryError):
    """This replica may no longer act on the Env repo (its Lease was not renewed)."""


REPO_WIDE: tuple[type[BaseException], ...] = (GitError, LeadershipLostError)
"""Errors that concern the Env repo as a whole: they fail the tick, never one experiment."""


@dataclass(frozen=True)
class Fault:
    """Something that went wrong for one experiment (or one file) in one step of a tick."""

    subject: str
    """The experiment's ``namespace/name``, or the path of a file on main."""
    stage: str
    """The step that raised: ``read``, ``observe``, ``plan``, ``record``, ``act``, ..."""
    error: str
    """What was raised, cut to ``EXCERPT`` characters."""
    bug: bool
    """Not an error the reconciler raises on purpose: a defect worth a bug report."""

    def __str__(self) -> str:
        kind = "internal error (please report it)" if self.bug else "error"
        return f"{self.subject}: {kind} while {self.stage}: {self.error}"


def describe(exc: BaseException) -> str:
    """``exc`` as one short line: its type when it is not ours, its message cut short."""
    text = str(exc) if isinstance(exc, ReconcilerError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 3] + "..."


class Faults:
    """The boundaries of one loop: what faulted this tick, what was recorded already."""

    def __init__(self) -> None:
        """Start with nothing seen."""
        self._seen: set[Fault] = set()
        self._now: set[Fault] = set()
        self.new: list[Fault] = []
        """Faults first seen in the current tick, in order (each is recorded once)."""

    def start_tick(self) -> None:
        """Forget faults that did not recur in the last tick; start a new report."""
        self._seen = self._now
        self._now = set()
        self.new = []

    def faulted(self, subject: str) -> bool:
        """Whether ``subject`` faulted in any step of this tick so far."""
        return any(f.subject == subject for f in self._now)

    def boundary(
        self, subject: str, stage: str, *, expected: tuple[type[Exception], ...] = ()
    ) -> _Boundary:
        """A ``with`` block whose errors are ``subject``'s alone (see the module's doc).

        Errors of the ``expected`` types are bad content, like our own errors; any other
        is a bug, logged with its traceback.
        """
        return _Boundary(self, subject, stage, expected)

    def record(
        self, subject: str, stage: str, exc: BaseException, *, expected: bool = False
    ) -> Fault:
        """Note that ``exc`` was raised for ``subject``; log it if it is new."""
        bug = not expected and not isinstance(exc, ReconcilerError)
        fault = Fault(subject, stage, describe(exc), bug=bug)
        self._now.add(fault)
        if fault not in self._seen and fault not in self.new:
            self.new.append(fault)
            log.error(
                "experiment_fault",
                experiment=subject,
                stage=stage,
                error=fault.error,
                bug=fault.bug,
                meaning="this experiment skips that step; the others go on",
                exc_info=exc if fault.bug else None,
            )
        return fault


class _Boundary:
    def __init__(
        self, faults: Faults, subject: str, stage: str, expected: tuple[type[Exception], ...]
    ) -> None:
        self._faults, self._subject, self._stage = faults, subject, stage
        self._expected = expected
        self.failed = False
        """Whether the block raised (and was stopped here)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, REPO_WIDE):
            return False
        self.failed = True
        expected = isinstance(exc, self._expected)
        self._faults.record(self._subject, self._stage, exc, expected=expected)
        return True
