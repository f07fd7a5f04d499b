"""Hand a commit on main to the GitOps operator: ask it to look now, wait until it synced.

Argo CD: the ``argocd.argoproj.io/refresh`` annotation on the Application, then wait
until the Application is ``Synced`` at a ``status.sync.revision`` (or ``revisions``, for
multi-source apps) that names the commit, or its last sync operation to the commit has
``Succeeded`` (``status.operationState.syncResult``). Flux:
``reconcile.fluxcd.io/requestedAt`` on the GitRepository and the Kustomization, then
wait until the Kustomization's ``status.lastAppliedRevision`` (``main@sha1:<id>``) names
it. Which objects belong to an Env repo is configuration
(``ArgoCDApp`` / ``FluxSync``). The wait is bounded; clock and ``sleep`` are passed in.
The result, ``Synced``, is a value for the caller to record in Git, never stored here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from reconciler.cluster.client import MERGE_PATCH, Kube
from reconciler.cluster.resources import ObjectRef
from reconciler.config import GitOpsSettings
from reconciler.errors import TemporaryError

log = structlog.get_logger(__name__)

ARGOCD_REFRESH = "argocd.argoproj.io/refresh"
FLUX_REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
ARGOCD_API = "argoproj.io/v1alpha1"
FLUX_SOURCE_API = "source.toolkit.fluxcd.io/v1"
FLUX_KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"


@dataclass(frozen=True)
class ArgoCDApp:
    """The Argo CD Application that syncs an Env repo."""

    name: str
    namespace: str = "argocd"
    refresh: str = "normal"
    """``normal`` (compare with Git) or ``hard`` (also drop Argo CD's manifest cache)."""

    @property
    def application(self) -> ObjectRef:
        """The Application object."""
        return ObjectRef(ARGOCD_API, "Application", self.name, self.namespace)


@dataclass(frozen=True)
class FluxSync:
    """The Flux GitRepository and Kustomization that sync an Env repo."""

    git_repository: str
    kustomization: str
    namespace: str = "flux-system"
    kustomization_namespace: str | None = None
    """Where the Kustomization lives, when not beside the GitRepository."""

    @property
    def source(self) -> ObjectRef:
        """The GitRepository object."""
        return ObjectRef(FLUX_SOURCE_API, "GitRepository", self.git_repository, self.namespace)

    @property
    def applier(self) -> ObjectRef:
        """The Kustomization object."""
        namespace = self.kustomization_namespace or self.namespace
        return ObjectRef(FLUX_KUSTOMIZE_API, "Kustomization", self.kustomization, namespace)


HandoffTarget = ArgoCDApp | FluxSync


@dataclass(frozen=True)
class Synced:
    """The operator applied the commit: what it reported, and how long it took."""

    commit: str
    revision: str
    seconds: float
    object: str
    """The object whose status named the commit (``Application argocd/bookinfo ...``)."""


class SyncTimeoutError(TemporaryError):
    """The operator did not report the commit in time (it may still: check again later)."""

    def __init__(
        self, target: HandoffTarget, commit: str, seen: str | None, timeout: float
    ) -> None:
        obj = target.application if isinstance(target, ArgoCDApp) else target.applier
        super().__init__(
            f"{obj} did not report commit {commit[:12]} within {timeout:g} s "
            f"(its last synced revision: {seen or 'none'})"
        )
        self.commit = commit
        self.seen = seen


def synced_revision(target: HandoffTarget, obj: Mapping[str, Any] | None) -> list[str]:
    """The revisions the operator reports as synced (several for multi-source apps)."""
    status = (obj or {}).get("status") or {}
    if isinstance(target, ArgoCDApp):
        # status.sync.revision is the revision Argo CD last *compared* with, set before it
        # syncs: on its own it says nothing about the cluster. A revision counts once the
        # live state is Synced to it, or once a sync operation to it has Succeeded.
        sync = status.get("sync") or {}
        found = _revisions(sync) if sync.get("status") == "Synced" else []
        operation = status.get("operationState") or {}
        if operation.get("phase") == "Succeeded":
            found += [r for r in _revisions(operation.get("syncResult") or {}) if r not in found]
        return found
    revision = status.get("lastAppliedRevision")
    return [str(revision)] if revision else []


def _revisions(section: Mapping[str, Any]) -> list[str]:
    """``revision`` then ``revisions`` (multi-source apps) of an Argo CD status section."""
    found = [str(section["revision"])] if section.get("revision") else []
    return found + [str(r) for r in section.get("revisions") or [] if r]


_COMMIT_ID = re.compile(r"(?:^|[@:/])([0-9a-f]{40})$")


def commit_id(revision: str) -> str | None:
    """The full commit id a reported revision ends in, or None.

    Flux writes ``main@sha1:<id>`` (older: ``main/<id>``), Argo CD the bare id.
    """
    found = _COMMIT_ID.search(revision.strip().lower())
    return found.group(1) if found else None


def names_commit(revision: str, commit: str) -> bool:
    """Whether a reported revision is ``commit``.

    Accepts a bare id (Argo CD), Flux's ``<branch>@sha1:<id>`` and its older
    ``<branch>/<id>``; an abbreviated ``commit`` of at least 7 characters is a prefix.
    """
    reported = revision.rsplit("sha1:", 1)[-1].rsplit("/", 1)[-1].rsplit("@", 1)[-1].lower()
    wanted = commit.lower()
    if len(wanted) < 7 or not reported:  # noqa: PLR2004 - git's shortest abbreviation
        return False
    return reported == wanted or (len(reported) == 40 and reported.startswith(wanted))  # noqa: PLR2004


class GitOpsHandoff:
    """Asks Argo CD or Flux to refresh, and waits until it synced a commit."""

    def __init__(
        self,
        kube: Kube,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``clock``/``sleep`` bound the wait; ``now`` stamps Flux's ``requestedAt``."""
        self.kube = kube
        self._clock = clock
        self._sleep = sleep
        self._now = now

    def request_refresh(self, target: HandoffTarget) -> None:
        """Annotate the operator's objects so that it looks at the Env repo now."""
        if isinstance(target, ArgoCDApp):
            self._annotate(target.application, ARGOCD_REFRESH, target.refresh)
            return
        stamp = self._now().astimezone(UTC).isoformat().replace("+00:00", "Z")
        self._annotate(target.source, FLUX_REQUESTED_AT, stamp)
        self._annotate(target.applier, FLUX_REQUESTED_AT, stamp)

    def synced(self, target: HandoffTarget, commit: str) -> str | None:
        """The revision the operator reports if it names ``commit`` (one read, no wait)."""
        return next((r for r in self.reported(target) if names_commit(r, commit)), None)

    def reported(self, target: HandoffTarget) -> list[str]:
        """The revisions the operator reports applied now (one read)."""
        obj_ref = target.application if isinstance(target, ArgoCDApp) else target.applier
        return synced_revision(target, self.kube.get(obj_ref))

    def wait_synced(
        self, target: HandoffTarget, commit: str, *, timeout: float, interval: float = 2.0
    ) -> Synced:
        """Poll until the operator reports ``commit`` as synced.

        Raises:
            SyncTimeoutError: not reported within ``timeout`` seconds.
        """
        obj_ref = target.application if isinstance(target, ArgoCDApp) else target.applier
        started = self._clock()
        seen: str | None = None
        while True:
            revisions = synced_revision(target, self.kube.get(obj_ref))
            for revision in revisions:
                if names_commit(revision, commit):
                    waited = self._clock() - started
                    log.info("gitops_synced", object=str(obj_ref), commit=commit, seconds=waited)
                    return Synced(commit, revision, waited, str(obj_ref))
            seen = revisions[0] if revisions else seen
            remaining = started + timeout - self._clock()
            if remaining <= 0:
                raise SyncTimeoutError(target, commit, seen, timeout)
            self._sleep(min(interval, remaining))

    def hand_off(
        self, target: HandoffTarget, commit: str, *, timeout: float, interval: float = 2.0
    ) -> Synced:
        """``request_refresh`` then ``wait_synced``: after every commit pushed to main."""
        self.request_refresh(target)
        return self.wait_synced(target, commit, timeout=timeout, interval=interval)

    def _annotate(self, ref: ObjectRef, key: str, value: str) -> None:
        self.kube.patch(ref, {"metadata": {"annotations": {key: value}}}, content_type=MERGE_PATCH)
        log.info("gitops_refresh_requested", object=str(ref), annotation=key, value=value)


def target_from_settings(settings: GitOpsSettings) -> HandoffTarget | None:
    """The hand-off target the ``gitops`` settings name (None: no operator).

    Raises:
        ValueError: both operators, a Flux half, or a value that is not ``namespace/name``.
    """
    argocd_application = settings.argocd_application
    flux_gitrepository = settings.flux_gitrepository
    flux_kustomization = settings.flux_kustomization
    if argocd_application and (flux_gitrepository or flux_kustomization):
        raise ValueError("name either an Argo CD Application or Flux objects, not both")
    if argocd_application:
        namespace, name = _split(argocd_application, "argocdApplication")
        return ArgoCDApp(name, namespace)
    if not flux_gitrepository and not flux_kustomization:
        return None
    if not flux_gitrepository or not flux_kustomization:
        raise ValueError("Flux needs both fluxGitRepository and fluxKustomization")
    source_namespace, source = _split(flux_gitrepository, "fluxGitRepository")
    applier_namespace, applier = _split(flux_kustomization, "fluxKustomization")
    return FluxSync(source, applier, source_namespace, applier_namespace)


def _split(value: str, setting: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"{setting} must be namespace/name, got {value!r}")
    return namespace, name


@dataclass(frozen=True)
class RepoHandoff:
    """The hand-off of one Env repo, its target bound: what the loop calls after a commit."""

    handoff: GitOpsHandoff
    target: HandoffTarget

    def request_sync(self, commit: str) -> None:
        """Ask the operator to look at the Env repo now (``commit`` is for the logs)."""
        log.info("gitops_sync_requested", commit=commit)
        self.handoff.request_refresh(self.target)

    def synced(self, commit: str) -> str | None:
        """The revision the operator reports if it names ``commit``; None while it does not."""
        return self.handoff.synced(self.target, commit)

    def applied_commits(self) -> list[str]:
        """The full commit ids the operator reports applied now."""
        return [c for r in self.handoff.reported(self.target) if (c := commit_id(r))]
