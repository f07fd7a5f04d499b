"""The Env repo's server as libgit2 reaches it: one fetch, one compare-and-swap push.

``Remote`` runs the two network operations of the store on the cache's ``origin``: a
fetch of named branches into their remote-tracking refs (pruning branches deleted on the
server, retried with backoff on network faults), and a push of one branch that is
accepted only if the server's branch is still where we last saw it. A lost race becomes
``PushRejectedError`` whichever way libgit2 reports it (an exception from its client-side
check, a per-reference status from the server, or our own check for local remotes);
network faults ``GitTemporaryError``; refused credentials, certificates or host keys and
missing repositories ``GitPermanentError``, saying why and which setting to change. Where
libgit2's words do not say why (a refused TLS certificate, a failed SSH key exchange), the
server is asked once more outside libgit2 (``probe``) before the failure is classified.
It never forces a push and never shows a credential or a URL with userinfo.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pygit2
import structlog
from pygit2.enums import FetchPrune
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from reconciler.errors import GitError, GitPermanentError, GitTemporaryError, PushRejectedError
from reconciler.gitstore.credentials import (
    CredentialCallbacks,
    Credentials,
    Login,
    redact_url,
    scrub,
    setting,
    split_login,
    url_scheme,
)
from reconciler.gitstore.known_hosts import KEY_TYPE_OF_ALGORITHM
from reconciler.gitstore.names import held
from reconciler.gitstore.probe import ssh_host_key_algorithms, tls_refusal
from reconciler.gitstore.sockets import server_address, set_nodelay
from reconciler.gitstore.trust import SSHTarget, libgit2_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

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
_KEX_FAILED = "unable to exchange encryption keys"
"""libssh2's words for a key exchange that failed: no host key of the types known_hosts
holds (libgit2 asks only for those), no algorithm in common, or a connection cut."""
_HTTPS_PORT = 443
_AHEAD = "refs/reconciler/ahead"
"""The cache's ref to the commit ``push_ahead`` sends (libgit2 pushes refs, not ids)."""


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

    def __init__(
        self,
        credentials: Credentials | None,
        login: Login | None,
        *,
        on_connect: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(credentials, login, on_connect=on_connect)
        self.rejections: dict[str, str] = {}

    def push_update_reference(self, refname: str, message: str | None) -> None:
        """Record a refused reference (``message`` None means accepted)."""
        if message is not None:
            self.rejections[refname] = message


class Remote:
    """Fetch and CAS-push for the cache ``repo`` whose ``origin`` points at ``url``."""

    def __init__(
        self,
        repo: pygit2.Repository,
        url: str,
        credentials: Credentials | None,
        *,
        incoming: str | None = None,
    ) -> None:
        """Wrap ``repo``'s ``origin``; ``url`` is its address (it may hold userinfo).

        ``origin`` holds ``url`` without a token (``split_login``); the token stays here.
        ``incoming`` is the private ref's name (``through``); by default a new one.
        """
        self._repo = repo
        self._url = url
        self._login = split_login(url)[1]
        self._credentials = credentials
        self.shown = redact_url(url)
        address = server_address(url)
        self._on_connect = functools.partial(set_nodelay, *address) if address else None
        """Sets TCP_NODELAY on libgit2's connection to the server (``sockets``)."""
        self._incoming = incoming or held(f"refs/reconciler/incoming/{uuid.uuid4().hex}")
        """Where a push to a local repository lands before its compare-and-swap (one name
        per process: pushes are one at a time, and each name looked up is kept, ``names``)."""

    def through(self, repo: pygit2.Repository) -> Remote:
        """This remote reached through ``repo``, another handle on the same cache.

        For a second thread (``steps``): libgit2's handles are not shared between threads.
        It pushes under the same private ref, with the same credentials.
        """
        return Remote(repo, self._url, self._credentials, incoming=self._incoming)

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
        callbacks = CredentialCallbacks(self._credentials, self._login, on_connect=self._on_connect)
        failure: pygit2.GitError | OSError | None = None
        with libgit2_settings(self._credentials, self._url) as target:
            try:
                self._repo.remotes[REMOTE].fetch(
                    refspecs, callbacks=callbacks, prune=FetchPrune.PRUNE
                )
            except (pygit2.GitError, OSError) as exc:
                failure = exc
        if failure is not None:  # classified outside the settings' lock: it may connect
            raise self._translate(failure, "fetch from", callbacks, target) from None
        log.debug("git_fetched", url=self.shown, branches=list(branches))

    def branches(self) -> list[str]:
        """The branch names the server advertises (one connection, no objects fetched)."""
        self._check_local()
        callbacks = CredentialCallbacks(self._credentials, self._login, on_connect=self._on_connect)
        failure: pygit2.GitError | OSError | None = None
        heads: list[Any] = []
        with libgit2_settings(self._credentials, self._url) as target:
            try:
                heads = self._repo.remotes[REMOTE].list_heads(callbacks=callbacks)
            except (pygit2.GitError, OSError) as exc:
                failure = exc
        if failure is not None:
            raise self._translate(failure, "list the branches of", callbacks, target) from None
        prefix = "refs/heads/"
        return sorted(h.name.removeprefix(prefix) for h in heads if h.name.startswith(prefix))

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
        with _opened(local, branch) as remote:
            if not remote.is_bare:
                raise GitPermanentError(
                    f"{local} is not a bare repository: libgit2 cannot push to it "
                    "(make the Env repo bare: git clone --bare)",
                    ref=branch,
                )
            self._push_refspec(f"{ref}:{self._incoming}", branch)
            try:
                _swap_local_ref(remote, ref, new_tip, old_tip, branch)
            finally:
                _delete_ref(remote, self._incoming)

    def push_ahead(self, commit: str, branch: str) -> None:
        """Send ``commit`` and all it needs to the server, under this process's private ref.

        A push of many commits goes in steps (``GitEnvStore``): each step moves the private
        ref (``refs/reconciler/incoming/<process>``, forced: no one else writes it) further
        along the new commits, and the branch's own compare-and-swap push then sends only
        what is left. The branch is not touched here.

        Raises:
            PushRejectedError: the server refused the private ref (a hook, a policy).
            GitTemporaryError: the network failed.
            GitPermanentError: credentials or the certificate / host key were refused.
        """
        self._check_local()
        self._repo.references.create(_AHEAD, commit, force=True)  # the cache's copy only
        self._push_refspec(f"+{_AHEAD}:{self._incoming}", branch)

    def drop_ahead(self, branch: str) -> None:
        """Delete the private ref ``push_ahead`` moved, on the server.

        Raises:
            GitError: it could not be deleted (a ref that names objects the branch holds,
                harmless; the next ``push_ahead`` overwrites it).
        """
        _delete_ref(self._repo, _AHEAD)  # it would keep a rejected step's objects
        local = local_path(self._url)
        if local is None:
            self._push_refspec(f":{self._incoming}", branch)
            return
        with _opened(local, branch) as remote:
            _delete_ref(remote, self._incoming)

    def _check_local(self) -> None:
        local = local_path(self._url)
        if local is not None and not local.exists():
            raise GitPermanentError(f"no repository at {local}", ref=self.shown)

    def _push_refspec(self, refspec: str, branch: str) -> None:
        callbacks = _PushCallbacks(self._credentials, self._login, on_connect=self._on_connect)
        failure: pygit2.GitError | OSError | None = None
        with libgit2_settings(self._credentials, self._url) as target:
            try:
                self._repo.remotes[REMOTE].push([refspec], callbacks=callbacks)
            except (pygit2.GitError, OSError) as exc:
                failure = exc
        if failure is not None:
            text = scrub(str(failure), self._url)
            if _is_rejection(text):
                raise PushRejectedError(f"push rejected: {text}", ref=branch) from None
            raise self._translate(failure, "push to", callbacks, target) from None
        for refname, message in callbacks.rejections.items():
            raise PushRejectedError(
                f"push of {refname} rejected: {scrub(message, self._url)}", ref=branch
            )

    def _translate(
        self,
        exc: Exception,
        action: str,
        callbacks: CredentialCallbacks,
        target: SSHTarget | None,
    ) -> GitError:
        text = scrub(str(exc), self._url)
        where = f"{action} {self.shown}"
        refused = isinstance(exc, pygit2.CertificateError) or callbacks.refused_host is not None
        if target is not None:
            if refused:
                return GitPermanentError(
                    f"{where}: the SSH host key of {target.name} is not trusted: it is none "
                    f"of the keys ({', '.join(target.selection.key_types)}) that "
                    f"{setting('ssh_known_hosts_file')} ({target.known_hosts}) holds for it"
                )
            if _KEX_FAILED in text.lower():
                mismatch = _host_key_type_mismatch(where, target)
                if mismatch is not None:
                    return mismatch
        elif url_scheme(self._url) == "https" and (refused or text.startswith("SSL error")):
            certificate = self._certificate_refusal(where, refused=refused)
            if certificate is not None:
                return certificate
        if isinstance(exc, pygit2.AuthError):
            return GitPermanentError(f"{where}: authentication failed ({text})")
        lowered = text.lower()
        if isinstance(exc, pygit2.InvalidSpecError) or any(p in lowered for p in _PERMANENT):
            return GitPermanentError(f"{where} failed: {text}")
        return GitTemporaryError(f"{where} failed: {text}")

    def _certificate_refusal(self, where: str, *, refused: bool) -> GitError | None:
        """Why the server's TLS certificate was refused; None: it was not (a network fault).

        libgit2 refused it (``refused``), or failed the handshake in a way that may hide a
        certificate for another name ("received early EOF"): Python's ``ssl``, trusting
        what libgit2 trusts, says which.
        """
        parts = urlsplit(self._url)
        host, port = parts.hostname or "", parts.port or _HTTPS_PORT
        ca_file = self._credentials.ca_file if self._credentials is not None else None
        trusted = (
            f"the system's CAs and those of {setting('ca_file')} ({ca_file})"
            if ca_file is not None
            else f"the system's CAs only ({setting('ca_file')} is not set)"
        )
        try:
            found = tls_refusal(host, port, ca_file)
        except OSError:
            found = None
        server = f"the TLS certificate of {host}:{port}"
        if found is not None and found.kind == "name":
            return GitPermanentError(
                f"{where}: {server} is for another host name ({found.detail}): use a host "
                f"name it names in the URL, or give the server a certificate for {host} "
                f"(CAs trusted: {trusted})"
            )
        if found is not None and found.kind == "validity":
            return GitPermanentError(f"{where}: {server} is not valid now ({found.detail})")
        if found is not None:
            return GitPermanentError(
                f"{where}: {server} is not trusted: it is not signed by any of {trusted} "
                f"({found.detail}); give its CA with {setting('ca_file')}"
            )
        if not refused:
            return None
        return GitPermanentError(
            f"{where}: {server} is not trusted: it is signed by a CA outside {trusted}, or it "
            f"is for another host name than {host}"
        )


def _host_key_type_mismatch(where: str, target: SSHTarget) -> GitError | None:
    """The refusal of a server offering no host key of a type known_hosts holds for it.

    None when that is not why the key exchange failed (or the server cannot be asked).
    """
    try:
        offered = ssh_host_key_algorithms(target.host, target.port)
    except OSError:
        return None
    kinds = target.selection.key_types
    if any(KEY_TYPE_OF_ALGORITHM.get(algorithm) in kinds for algorithm in offered):
        return None
    return GitPermanentError(
        f"{where}: the SSH server {target.name} offers no host key of the type(s) "
        f"{setting('ssh_known_hosts_file')} ({target.known_hosts}) holds for it: it holds "
        f"{', '.join(kinds)}, the server offers {', '.join(offered) or 'none'}; if its host "
        "key was replaced on purpose, put the new one in the file"
    )


@contextlib.contextmanager
def _opened(local: Path, branch: str) -> Iterator[pygit2.Repository]:
    """The local remote at ``local``, freed after the block.

    Raises:
        GitPermanentError: it cannot be opened.
    """
    try:
        remote = pygit2.Repository(str(local))
    except pygit2.GitError as exc:
        raise GitPermanentError(f"cannot open {local}: {exc}", ref=branch) from None
    try:
        yield remote
    finally:
        remote.free()


def _delete_ref(repo: pygit2.Repository, name: str) -> None:
    """Delete the reference ``name`` in ``repo`` if it is there."""
    if repo.references.get(name) is not None:
        repo.references.delete(name)


def _swap_local_ref(
    remote: pygit2.Repository, ref: str, new_tip: str, old_tip: str | None, branch: str
) -> None:
    """Move ``ref`` in a local repository from ``old_tip`` to ``new_tip``, atomically."""
    current = remote.references.get(held(ref))
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
