"""What /readyz reports: the process's readiness and each Env repo's health.

The process is ready while some repo it serves had a successful tick within
``stale_after`` seconds (standing by for a repo another replica holds counts), or, serving
none, while its loop is alive: one repo whose Git server is down or whose credentials
were revoked shows in its own entry and never fails the pod. Updated by the workers and
read by the server, so every method takes the lock. Entries are dropped with the repo
(``forget``), so the report is bounded by the repos served.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RepoHealth:
    """One Env repo's last ticks, as /readyz shows them."""

    role: str = "single"
    """``leader``, ``follower`` or ``single`` (no leader election)."""
    last_ok: float | None = None
    last_error: str | None = None
    failures: int = 0
    """Ticks in a row that failed."""
    retry_in: float | None = None
    """Seconds until the next try while its circuit is open (None: closed)."""


@dataclass
class Health:
    """The readiness report, fed by the loop (thread-safe)."""

    stale_after: float
    last_ok: float | None = None
    """When any repo last ticked well (or the loop ran, serving no repo)."""
    last_error: str | None = None
    repos: dict[str, RepoHealth] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tick_succeeded(self, now: float, repo: str = "") -> None:
        """Record a tick of ``repo`` that ended well (or a stand-by as a follower)."""
        with self._lock:
            self.last_ok = now
            self.last_error = None
            if repo:
                entry = self.repos.setdefault(repo, RepoHealth())
                entry.last_ok, entry.last_error, entry.failures, entry.retry_in = now, None, 0, None

    def tick_failed(self, error: str, repo: str = "") -> None:
        """Record a tick of ``repo`` that raised."""
        with self._lock:
            self.last_error = error
            if repo:
                self.repos.setdefault(repo, RepoHealth()).last_error = error

    def set_backoff(self, repo: str, failures: int, retry_in: float | None) -> None:
        """``repo`` failed ``failures`` ticks in a row; its circuit opens for ``retry_in`` s."""
        with self._lock:
            entry = self.repos.get(repo)
            if entry is not None:
                entry.failures, entry.retry_in = failures, retry_in

    def idle(self, now: float) -> None:
        """The loop ran with no repo to serve: ready, there is nothing to fail."""
        with self._lock:
            if not self.repos:
                self.last_ok = now

    def set_role(self, repo: str, role: str) -> None:
        """``leader``, ``follower`` or ``single`` for one Env repo."""
        with self._lock:
            self.repos.setdefault(repo, RepoHealth()).role = role

    def forget(self, repo: str) -> None:
        """Drop a repo no longer served."""
        with self._lock:
            self.repos.pop(repo, None)

    @property
    def roles(self) -> dict[str, str]:
        """Each repo's role."""
        with self._lock:
            return {repo: entry.role for repo, entry in self.repos.items()}

    def report(self, now: float) -> tuple[bool, dict[str, Any]]:
        """Whether the process is ready, and the details."""
        with self._lock:
            age = None if self.last_ok is None else round(now - self.last_ok, 3)
            ready = age is not None and age <= self.stale_after
            return ready, {
                "ready": ready,
                "lastSuccessfulTickAgeSeconds": age,
                "lastError": self.last_error,
                "roles": {repo: entry.role for repo, entry in self.repos.items()},
                "repos": {
                    repo: {
                        "role": entry.role,
                        "lastSuccessfulTickAgeSeconds": (
                            None if entry.last_ok is None else round(now - entry.last_ok, 3)
                        ),
                        "lastError": entry.last_error,
                        "failuresInARow": entry.failures,
                        "circuit": "closed" if entry.retry_in is None else "open",
                        "retryInSeconds": entry.retry_in,
                    }
                    for repo, entry in sorted(self.repos.items())
                },
            }
