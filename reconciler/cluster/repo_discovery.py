"""Find the Env repos the cluster names: one discovery pass, as config-file-shaped entries.

Every Argo CD ``Application`` and Flux ``GitRepository``, in every namespace, annotated
``reconciler.gitops.io/enabled: "true"`` is an Env repo (``repo_annotations`` turns one
into a repo entry, or into the problems that keep it out). Its push credentials come from
the Secret its ``reconciler.gitops.io/credentials-secret`` annotation names, read with
one GET by name in the reconciler's own namespace (Secrets are never listed or watched),
and written as files of mode 0600 under ``secrets_dir/<hash of the Secret's name>/``
(directories 0700; a file is replaced atomically, and only when its content changed),
because the Env repo store reads credentials from files. A kind whose CRD is not
installed is absent; a kind RBAC forbids to list, and every object that cannot be used,
is a problem string and the others go on (invariant 9). Only an API server that gives no
answer fails the pass (``ClusterTemporaryError``): the caller keeps the last discovery,
and no credential file is removed. This module decides nothing about workers, never
logs a Secret's value, and never deletes anything under ``secrets_dir`` it did not name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from reconciler.cluster.client import Kube
from reconciler.cluster.errors import (
    ClusterError,
    ClusterTemporaryError,
    ForbiddenError,
    NotFoundError,
)
from reconciler.cluster.handoff import ARGOCD_API, FLUX_SOURCE_API
from reconciler.cluster.repo_annotations import (
    ARGOCD,
    ENABLED,
    FLUX,
    Candidate,
    SecretMaterial,
    credentials_entry,
    files_for,
    label,
    opted_in,
    parse_application,
    parse_git_repository,
    parse_secret,
    secret_allows,
    url_key,
)
from reconciler.cluster.resources import ObjectRef

log = structlog.get_logger(__name__)

_OUR_DIR = re.compile(r"^[0-9a-f]{16}$")
_TEMP_PREFIX = ".tmp-"
RBAC_HINT = "manifests/fleet/rbac.yaml"


@dataclass(frozen=True)
class Discovered:
    """One discovery pass: the repo entries found, and the objects that could not be used."""

    entries: tuple[dict[str, Any], ...]
    """Config-file-shaped repo entries (keys sorted), sorted by ``repo``, one per URL."""
    problems: tuple[str, ...]
    """``argocd Application team-a/env: <what is wrong and what to fix>``, sorted."""

    def same_repos(self, other: Discovered | None) -> bool:
        """Whether ``other`` found the same entries (so no worker needs to change)."""
        return other is not None and entries_equal(self.entries, other.entries)


def entries_equal(
    first: tuple[Mapping[str, Any], ...], second: tuple[Mapping[str, Any], ...]
) -> bool:
    """Whether two discoveries' entries are the same repos with the same settings."""
    return first == second


@dataclass(frozen=True)
class _Kind:
    api_version: str
    kind: str
    label: str
    plural: str
    parse: Callable[[Mapping[str, Any]], Candidate | list[str]]

    @property
    def flux(self) -> bool:
        return self.label == FLUX


KINDS = (
    _Kind(ARGOCD_API, "Application", ARGOCD, "argocd Applications", parse_application),
    _Kind(FLUX_SOURCE_API, "GitRepository", FLUX, "flux GitRepositories", parse_git_repository),
)


def list_everywhere(
    kube: Kube, api_version: str, kind: str, *, page_size: int = 500
) -> list[dict[str, Any]] | None:
    """Every object of ``kind`` in all namespaces; None when the API server serves no such kind.

    Raises:
        ClusterError: the list was refused (``ForbiddenError``) or got no answer.
    """
    try:
        return kube.list_objects(api_version, kind, None, page_size=page_size, all_namespaces=True)
    except NotFoundError:  # no such kind, or its CRD was deleted since discovery
        return None


def secret_dir_name(secret: str) -> str:
    """The directory of a Secret's files under ``secrets_dir``: stable, and no name in it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def write_private(path: Path, content: bytes) -> bool:
    """Make ``path`` hold ``content`` with mode 0600; True when it was (re)written.

    Atomic: a temporary file beside it, then a rename; an unchanged file is left alone.
    """
    with contextlib.suppress(OSError):
        if not path.is_symlink() and path.is_file() and path.read_bytes() == content:
            if path.stat().st_mode & 0o777 != 0o600:  # noqa: PLR2004 - owner read/write
                path.chmod(0o600)
            return False
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return True


class RepoDiscovery:
    """Discover Env repos from annotated Applications and GitRepositories (see the module)."""

    def __init__(self, kube: Kube, *, namespace: str, secrets_dir: Path) -> None:
        """Read credentials Secrets in ``namespace``; write their files under ``secrets_dir``."""
        self._kube = kube
        self._namespace = namespace
        self._secrets_dir = secrets_dir
        self._last: Discovered | None = None
        self.files_written = 0
        """Credential files (re)written so far (an unchanged Secret writes none)."""

    def discover(self) -> Discovered:
        """One pass: list, parse, read the Secrets named, write their files, prune the rest.

        Raises:
            ClusterTemporaryError: the API server gave no answer (after the client's
                retries); nothing on disk was changed or removed.
        """
        problems: list[str] = []
        candidates: list[Candidate] = []
        for kind in KINDS:
            try:
                objects = list_everywhere(self._kube, kind.api_version, kind.kind)
            except ClusterTemporaryError:
                raise
            except ForbiddenError as exc:
                problems.append(
                    f"{kind.plural} cannot be listed: RBAC denies list on "
                    f"{exc.target.resource} in all namespaces (grant get, list, watch in "
                    f"a ClusterRole: {RBAC_HINT})"
                )
                continue
            except ClusterError as exc:
                problems.append(f"{kind.plural} cannot be listed: {exc}")
                continue
            for obj in objects or ():
                if not opted_in(obj):
                    continue
                found = kind.parse(obj)
                if isinstance(found, Candidate):
                    candidates.append(found)
                else:
                    problems.append(f"{label(obj, flux=kind.flux)}: {'; '.join(found)}")
        usable = self._with_credentials(candidates, problems)
        entries = self._materialize(_first_per_url(usable, problems), problems)
        result = Discovered(
            tuple(sorted(entries, key=lambda e: str(e["repo"]))),
            tuple(sorted(problems)),
        )
        if result != self._last:
            log.info(
                "repos_discovered",
                repos=[e["repo"] for e in result.entries],
                problems=list(result.problems),
            )
        self._last = result
        return result

    # -- credentials --------------------------------------------------------------------

    def _with_credentials(
        self, candidates: list[Candidate], problems: list[str]
    ) -> list[tuple[Candidate, SecretMaterial, dict[str, str]]]:
        read: dict[str, SecretMaterial | str] = {}
        usable = []
        for candidate in candidates:
            if candidate.secret not in read:
                read[candidate.secret] = self._read_secret(candidate.secret)
            material = read[candidate.secret]
            about = f"{candidate.source}: the Secret {self._namespace}/{candidate.secret}"
            if isinstance(material, str):
                problems.append(f"{about} {material}")
                continue
            url = candidate.entry["repo"]
            if why := secret_allows(material, url, candidate.namespace):
                problems.append(f"{about} {why}")
                continue
            credentials = credentials_entry(material, url, self._paths(candidate.secret))
            if isinstance(credentials, str):
                problems.append(f"{about} {credentials}")
                continue
            usable.append((candidate, material, credentials))
        return usable

    def _read_secret(self, name: str) -> SecretMaterial | str:
        """The Secret's checked credentials, or what is wrong (its values never quoted)."""
        try:
            obj = self._kube.get(ObjectRef("v1", "Secret", name, self._namespace))
        except ClusterTemporaryError:
            raise
        except ForbiddenError:
            return (
                f"cannot be read: RBAC denies get on it (grant get on secrets in "
                f"{self._namespace}: {RBAC_HINT})"
            )
        except ClusterError as exc:
            return f"cannot be read: {exc}"
        if obj is None:
            return "does not exist: create it with the credentials to push to the repository"
        try:
            return parse_secret(obj)
        except ValueError as exc:
            return str(exc)

    def _paths(self, secret: str) -> dict[str, str]:
        directory = self._secrets_dir / secret_dir_name(secret)
        return {
            name: str(directory / name) for name in ("token", "identity", "known_hosts", "ca.crt")
        }

    # -- files --------------------------------------------------------------------------

    def _materialize(
        self,
        chosen: list[tuple[Candidate, SecretMaterial, dict[str, str]]],
        problems: list[str],
    ) -> list[dict[str, Any]]:
        """Write the chosen entries' credential files; the entries whose files were written."""
        kept: dict[str, set[str]] = {}
        entries = []
        for candidate, material, credentials in chosen:
            directory = self._secrets_dir / secret_dir_name(candidate.secret)
            names = files_for(credentials)
            try:
                self._secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                directory.mkdir(mode=0o700, exist_ok=True)
                directory.chmod(0o700)
                for name in sorted(names):
                    self.files_written += write_private(directory / name, material.files[name])
            except OSError as exc:
                problems.append(
                    f"{candidate.source}: its credential files cannot be written under "
                    f"{self._secrets_dir}: {exc.strerror or type(exc).__name__}"
                )
                continue
            kept.setdefault(directory.name, set()).update(names)
            entries.append(dict(sorted({**candidate.entry, "credentials": credentials}.items())))
        self._prune(kept)
        return entries

    def _prune(self, kept: Mapping[str, set[str]]) -> None:
        """Remove our directories and files no entry refers to any more (nothing else)."""
        try:
            children = list(self._secrets_dir.iterdir())
        except OSError:
            return
        for child in children:
            if not _OUR_DIR.match(child.name) or child.is_symlink() or not child.is_dir():
                continue
            try:
                if child.name not in kept:
                    shutil.rmtree(child)
                    log.info("repo_credentials_removed", directory=str(child))
                    continue
                for path in child.iterdir():
                    if path.name not in kept[child.name]:
                        path.unlink()
            except OSError as exc:
                log.warning("repo_credentials_not_removed", directory=str(child), error=str(exc))


def _first_per_url(
    usable: list[tuple[Candidate, SecretMaterial, dict[str, str]]], problems: list[str]
) -> list[tuple[Candidate, SecretMaterial, dict[str, str]]]:
    """One object per repository: the first by namespace/name; the others are problems."""
    first: dict[str, Candidate] = {}
    chosen = []
    for item in sorted(usable, key=lambda u: u[0].order):
        candidate = item[0]
        key = url_key(candidate.entry["repo"])
        if key in first:
            problems.append(
                f"{candidate.source}: its repository is already an Env repo through "
                f"{first[key].source}: set {ENABLED} on one of them only"
            )
            continue
        first[key] = candidate
        chosen.append(item)
    return chosen
