"""SSH commit signatures as git writes them (``gpg.format=ssh``): verify an approval, sign one.

``AllowedSigners`` checks a commit's ``gpgsig`` against an allowed-signers file named in
the reconciler's own configuration (never in the Env repo), with OpenSSH's ``ssh-keygen
-Y find-principals`` then ``-Y verify`` in the ``git`` namespace, exactly as ``git
verify-commit`` does. ``ssh_signer`` signs a commit the way ``git commit -S`` does. Both
run ``ssh-keygen`` with a time bound and read nothing else; a signature from the repo is
data passed in a file, never an argument.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pygit2
import structlog

from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.signatures")

__all__ = ["AllowedSigners", "SigningError", "git_identity", "git_signing_key", "ssh_signer"]

NAMESPACE = "git"
"""The namespace git signs commits in (``ssh-keygen -Y sign -n git``)."""
SIGNATURE_LIMIT = 16_384
"""Bytes of a signature worth checking; a larger one is refused unread."""


class SigningError(ReconcilerError):
    """A commit could not be signed (no ssh-keygen, a key it cannot use)."""


class AllowedSigners:
    """The ``SignatureVerifier`` of an allowed-signers file (``approval.allowedSignersFile``)."""

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        """Verify against ``path``; each ``ssh-keygen`` run is bounded by ``timeout`` seconds."""
        self._path = path
        self._timeout = timeout

    def verify(self, signed: bytes, signature: bytes) -> tuple[str | None, str]:  # noqa: PLR0911
        """(the principal whose allowed key made ``signature`` over ``signed``, ``good``).

        Otherwise (None, why): ``unknown key`` (not in the allowed signers), ``bad
        signature`` (the key is allowed, the signature does not match), or why it could not
        be checked.
        """
        if len(signature) > SIGNATURE_LIMIT:
            return None, "signature too large"
        if not self._path.is_file():
            return None, f"allowed signers file {self._path} is missing"
        with tempfile.TemporaryDirectory(prefix="reconciler-sig-") as scratch:
            sig = Path(scratch, "commit.sig")
            sig.write_bytes(signature)
            found = self._run(["-Y", "find-principals", "-s", str(sig), "-f", str(self._path)], b"")
            if isinstance(found, str):
                return None, found
            if found.returncode != 0:
                return None, "unknown key"
            for principal in found.stdout.decode(errors="replace").split():
                checked = self._run(
                    [
                        "-Y", "verify", "-f", str(self._path), "-I", principal,
                        "-n", NAMESPACE, "-s", str(sig),
                    ],
                    signed,
                )  # fmt: skip
                if isinstance(checked, str):
                    return None, checked
                if checked.returncode == 0:
                    return principal, "good"
            return None, "bad signature"

    def _run(self, args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes] | str:
        """``ssh-keygen args`` with ``data`` on stdin, or why it could not run."""
        try:
            return subprocess.run(
                ["ssh-keygen", *args],
                input=data,
                capture_output=True,
                timeout=self._timeout,
                check=False,
            )
        except FileNotFoundError:
            log.error("ssh_keygen_missing", fix="install OpenSSH's client (openssh-client)")
            return "ssh-keygen is not installed"
        except subprocess.TimeoutExpired:
            return f"ssh-keygen took longer than {self._timeout} s"


def ssh_signer(key: Path, *, timeout: float = 60.0) -> Callable[[bytes], bytes]:
    """A ``CommitSpec.sign`` that signs with the SSH key ``key``, as ``git commit -S`` does.

    ``key`` is a private key file, or the public key of one an ssh-agent holds (git's
    ``user.signingkey`` with ``gpg.format=ssh``).
    """

    def sign(data: bytes) -> bytes:
        try:
            done = subprocess.run(
                ["ssh-keygen", "-Y", "sign", "-n", NAMESPACE, "-f", str(key)],
                input=data,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise SigningError("cannot sign: ssh-keygen is not installed") from None
        except subprocess.TimeoutExpired:
            raise SigningError(f"cannot sign: ssh-keygen took longer than {timeout} s") from None
        if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
            why = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise SigningError(f"cannot sign with {key}: {why}")
        return done.stdout

    return sign


def git_identity() -> tuple[str, str] | None:
    """(name, e-mail) as ``git commit`` would author a commit here, or None when unset.

    ``GIT_AUTHOR_NAME``/``GIT_AUTHOR_EMAIL`` first, then ``user.name``/``user.email`` of
    the global and system Git configuration.
    """
    name = os.environ.get("GIT_AUTHOR_NAME") or _git_config("user.name")
    email = os.environ.get("GIT_AUTHOR_EMAIL") or _git_config("user.email")
    return (name, email) if name and email else None


def git_signing_key() -> Path | None:
    """Git's ``user.signingkey`` when it signs with SSH (``gpg.format=ssh``), else None."""
    if (_git_config("gpg.format") or "").lower() != "ssh":
        return None
    key = _git_config("user.signingkey")
    if not key or key.startswith(("ssh-", "key::")):
        return None  # a literal public key needs git's own agent plumbing: pass --sign-key
    return Path(key).expanduser()


def _git_config(name: str) -> str | None:
    """A value of the global (then system) Git configuration, or None."""
    for opener in (pygit2.Config.get_global_config, pygit2.Config.get_system_config):
        try:
            value = opener()[name]
        except (OSError, KeyError, pygit2.GitError):
            continue
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
