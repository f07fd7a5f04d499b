"""The exception hierarchy: one root, split by what the caller should do.

``TemporaryError`` subclasses are retried (with backoff, by the adapter that raised them);
``PermanentError`` subclasses are reported once, with their context, and never retried.
Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReconcilerError(Exception):
    """Root of every error the reconciler raises on purpose."""


class TemporaryError(ReconcilerError):
    """A fault that may go away by itself (network, server busy, a moved branch)."""


class PermanentError(ReconcilerError):
    """A fault that retrying cannot fix (bad input, refused credentials, RBAC)."""


@dataclass(frozen=True)
class Location:
    """Where a value came from: a file in the Env repo and a 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line and self.column:
            return f"{self.file}:{self.line}:{self.column}"
        if self.line:
            return f"{self.file}:{self.line}"
        return self.file


class GitError(ReconcilerError):
    """A Git operation failed; ``ref`` names the branch or remote involved."""

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        super().__init__(f"{ref}: {message}" if ref else message)
        self.ref = ref


class GitTemporaryError(GitError, TemporaryError):
    """Network or server fault while fetching or pushing; retried."""


class GitPermanentError(GitError, PermanentError):
    """Authentication refused, repository missing, certificate invalid; not retried."""


class TrustChangedError(GitError):
    """The configured CA differs from the one this process loaded into libgit2.

    libgit2 can add a CA to its process-wide store but never remove one, so neither a retry
    nor a new store fixes this: only a fresh process trusts exactly what is configured.
    ``reconciler run`` restarts itself (re-exec) when it sees this error.
    """


class PushRejectedError(GitTemporaryError):
    """The remote branch moved since we read it (compare-and-swap lost)."""


class PromotionError(PermanentError):
    """A promotion or rollback edit cannot be applied to main's tree (file or path missing)."""
