"""The Env repo's server as libgit2 reaches it: one fetch, one compare-and-swap push.

``Remote`` runs the two network operations of the store on the cache's ``origin``: a
fetch of named branches into their remote-tracking refs (pruning branches deleted on the
server, retried with backoff on network faults), and a push of one branch that is
accepted only if the server's branch is still where we last saw it. A lost race becomes
``PushRejectedError`` whichever way libgit2 reports it (an exception from its client-side
check, a per-reference status from the server, or our own check for local remotes);
network faults ``GitTemporaryError``; refused credentials, certificates or host keys and
missing repositories ``GitPermanentError``. It never forces a push and never shows a
credential or a URL with userinfo.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pygit2
import structlog
from pygit2.enums import FetchPrune
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reconciler.errors import GitError, GitPermanentError, GitTemporaryError, PushRejectedError
from reconciler.gitstore.credentials import (
    CredentialCallbacks,
    Credentials,
    libgit2_settings,
    redact_url,
    scrub,
    url_scheme,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["REMOTE", "SCHEMES", "Remote", "local_path", "tracking_ref"]

log = structlog.get_logger(__name__)

REMOTE = "origin"
SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_FETCH_ATTEMPTS = 4
# How libgit2 and git servers say the branch moved under us (libgit2's client-side check,
# a receive-pack status, a locked or changed ref): a lost compare-and-swap, not a fault.
_REJECTIONS = (
    "non-fastforward",
    "not present locally",
    "old reference value does not match",
    "failed to lock",
    "cannot lock ref",
    "failed to update ref",
    "fetch first",
)
_PERMANENT = ("no such repository", "repository not found", "http status code: 404")


def tracking_ref(branch: str) -> str:
    """The remote-tracking ref that holds ``branch``'s last known tip."""
    return f"refs/remotes/{REMOTE}/{branch}"


def local_path(url: str) -> Path | None:
    """The directory of a local remote (a path or ``file://``), else None."""
    if url_scheme(url) != "file":
        return None
    if "://" in url:
        return Path(unquote(urlsplit(url).path))
    return Path(url)


def _is_rejection(text: str) -> bool:
    lowered = text.lower()
    return any(hint in lowered for hint in _REJECTIONS)


class _PushCallbacks(CredentialCallbacks):
    """Credential callbacks that also record the server's per-reference verdicts."""

    def __init__(self, credentials: Credentials | None) -> None:
        super().__init__(credentials)
        self.rejections: dict[str, str] = {}

    def push_update_reference(self, refname: str, message: str | None) -> None:
        """Record a refused reference (``message`` None means accepted)."""
        if message is not None:
            self.rejections[refname] = message


class Remote:
    """Fetch and CAS-push for the cache ``repo`` whose ``origin`` points at ``url``."""

    def __init__(self, repo: pygit2.Repository, url: str, credentials: Credentials | None) -> None:
        """Wrap ``repo``'s ``origin``; ``url`` is its address (it may hold userinfo)."""
        self._repo = repo
        self._url = url
        self._credentials = credentials
        self.shown = redact_url(url)

    @retry(
        stop=stop_after_attempt(_FETCH_ATTEMPTS),
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
        retry=retry_if_exception_type(GitTemporaryError),
        reraise=True,
    )
    def fetch(self, branches: Sequence[str]) -> None:
        """Fetch ``branches`` in one fetch; a branch absent on the server loses its ref."""
        self._check_local()
        refspecs = [f"+refs/heads/{b}:{tracking_ref(b)}" for b in dict.fromkeys(branches)]
        callbacks = CredentialCallbacks(self._credentials)
        with libgit2_settings(self._credentials, self._url):
            try:
                self._repo.remotes[REMOTE].fetch(
                    refspecs, callbacks=callbacks, prune=FetchPrune.PRUNE
                )
            except (pygit2.GitError, OSError) as exc:
                raise self._translate(exc, "fetch from", callbacks) from None
        log.debug("git_fetched", url=self.shown, branches=list(branches))

    def push(self, branch: str, new_tip: str, old_tip: str | None) -> None:
        """Move ``branch`` on the server from ``old_tip`` (None: absent) to ``new_tip``.

        Raises:
            PushRejectedError: the server's branch is not at ``old_tip`` any more.
        """
        self._check_local()
        ref = f"refs/heads/{branch}"
        self._repo.references.create(ref, new_tip, force=True)  # the cache's copy only
        local = local_path(self._url)
        if local is None:
            self._push_refspec(f"{ref}:{ref}", branch)
            return
        # libgit2's local transport overwrites the target ref without comparing it with
        # the value it advertised, so for a local remote the objects go to a private ref
        # and the branch moves by a compare-and-swap on the remote's reference database.
        try:
            remote = pygit2.Repository(str(local))
        except pygit2.GitError as exc:
            raise GitPermanentError(f"cannot open {local}: {exc}", ref=branch) from None
        try:
            if not remote.is_bare:
                raise GitPermanentError(
                    f"{local} is not a bare repository: libgit2 cannot push to it "
                    "(make the Env repo bare: git clone --bare)",
                    ref=branch,
                )
            incoming = f"refs/reconciler/incoming/{uuid.uuid4().hex}"
            self._push_refspec(f"{ref}:{incoming}", branch)
            try:
                _swap_local_ref(remote, ref, new_tip, old_tip, branch)
            finally:
                if remote.references.get(incoming) is not None:
                    remote.references.delete(incoming)
        finally:
            remote.free()

    def _check_local(self) -> None:
        local = local_path(self._url)
        if local is not None and not local.exists():
            raise GitPermanentError(f"no repository at {local}", ref=self.shown)

    def _push_refspec(self, refspec: str, branch: str) -> None:
        callbacks = _PushCallbacks(self._credentials)
        with libgit2_settings(self._credentials, self._url):
            try:
                self._repo.remotes[REMOTE].push([refspec], callbacks=callbacks)
            except (pygit2.GitError, OSError) as exc:
                text = scrub(str(exc), self._url)
                if _is_rejection(text):
                    raise PushRejectedError(f"push rejected: {text}", ref=branch) from None
                raise self._translate(exc, "push to", callbacks) from None
        for refname, message in callbacks.rejections.items():
            raise PushRejectedError(
                f"push of {refname} rejected: {scrub(message, self._url)}", ref=branch
            )

    def _translate(self, exc: Exception, action: str, callbacks: CredentialCallbacks) -> GitError:
        text = scrub(str(exc), self._url)
        where = f"{action} {self.shown}"
        if isinstance(exc, pygit2.CertificateError) or callbacks.refused_host is not None:
            if url_scheme(self._url) == "ssh":
                what, fix = "SSH host key", "check ssh_known_hosts_file"
            else:
                what, fix = "TLS certificate", "check ca_file"
            host = callbacks.refused_host or "the server"
            return GitPermanentError(
                f"{where}: the {what} of {host} is not trusted ({text}); {fix}"
            )
        if isinstance(exc, pygit2.AuthError):
            return GitPermanentError(f"{where}: authentication failed ({text})")
        lowered = text.lower()
        if isinstance(exc, pygit2.InvalidSpecError) or any(p in lowered for p in _PERMANENT):
            return GitPermanentError(f"{where} failed: {text}")
        return GitTemporaryError(f"{where} failed: {text}")


def _swap_local_ref(
    remote: pygit2.Repository, ref: str, new_tip: str, old_tip: str | None, branch: str
) -> None:
    """Move ``ref`` in a local repository from ``old_tip`` to ``new_tip``, atomically."""
    current = remote.references.get(ref)
    current_id = str(current.resolve().target) if current is not None else None
    if current_id != old_tip:
        raise PushRejectedError(f"remote is at {current_id}, expected {old_tip}", ref=branch)
    try:
        if current is None:
            remote.references.create(ref, new_tip, force=False)
        else:
            # git_reference_set_target locks the ref, checks its old value, then writes.
            current.set_target(new_tip, "reconciler: compare-and-swap push")
    except pygit2.AlreadyExistsError:
        raise PushRejectedError("the branch was created concurrently", ref=branch) from None
    except pygit2.GitError as exc:
        if _is_rejection(str(exc)):
            raise PushRejectedError(f"push rejected: {exc}", ref=branch) from None
        raise GitTemporaryError(f"cannot update {ref}: {exc}", ref=branch) from None
