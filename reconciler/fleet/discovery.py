"""Env repos found in the cluster, served beside the listed ones.

With ``discovery.enabled``, a thread lists the annotated Argo CD Applications and Flux
GitRepositories every ``discovery.interval`` seconds (``cluster.repo_discovery``) and keeps
the last result; the runner takes it between ticks. A listed repo wins over a discovered
one with the same URL; an object that cannot be used (a bad annotation, a missing
Secret) is logged once, with what to fix, and the others are served (invariant 9). The
fleet stays within ``fleet.maxRepos``: the repos past it are refused and named.
"""

from __future__ import annotations

import threading

import structlog

from reconciler.cluster.client import Kube
from reconciler.cluster.repo_discovery import Discovered, RepoDiscovery
from reconciler.config import ConfigError, Settings, entry_settings, repo_key
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.discovery")
SECRETS_DIR = "discovered-credentials"
"""Where, under the cache directory, discovered repos' credentials are written (0600)."""


class Discoverer:
    """Lists the annotated objects in a thread; the runner merges what it found."""

    def __init__(self, discovery: RepoDiscovery, interval: float) -> None:
        """Run ``discovery`` every ``interval`` seconds once started."""
        self._discovery = discovery
        self._interval = interval
        self._lock = threading.Lock()
        self._found: Discovered | None = None
        self._changed = False
        self._told: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, kube: Kube) -> Discoverer | None:
        """The discoverer the settings ask for (None: discovery is off)."""
        if not settings.fleet.discovery:
            return None
        namespace = settings.kubernetes.namespace or kube.namespace
        secrets = settings.repo.cache_dir / SECRETS_DIR
        discovery = RepoDiscovery(kube, namespace=namespace, secrets_dir=secrets)
        return cls(discovery, settings.fleet.discovery_interval)

    def start(self, stop: threading.Event, wake: threading.Event) -> None:
        """Discover now and every interval until ``stop``; set ``wake`` when something changed."""

        def loop() -> None:
            while not stop.is_set():
                if self.discover():
                    wake.set()
                stop.wait(self._interval)

        threading.Thread(target=loop, daemon=True, name="discovery").start()

    def discover(self) -> bool:
        """List once; whether the result differs from the last one."""
        try:
            found = self._discovery.discover()
        except ReconcilerError as exc:  # the API server is away: keep what we had
            log.warning("discovery_failed", error=str(exc))
            return False
        for problem in found.problems:
            if problem not in self._told:
                log.error("discovered_repo_refused", problem=problem)
        self._told = set(found.problems)
        with self._lock:
            if self._found is not None and found.entries == self._found.entries:
                return False
            self._found, self._changed = found, True
        return True

    def changed(self) -> bool:
        """Whether a discovery found something new since the last ``merge``."""
        with self._lock:
            return self._changed

    def merge(self, settings: Settings, listed: list[Settings]) -> list[Settings]:
        """``listed``, then each discovered repo not listed, within ``fleet.maxRepos``."""
        with self._lock:
            found, self._changed = self._found, False
        wanted = list(listed)
        seen = {repo_key(s.repo.url) for s in listed}
        for entry in found.entries if found is not None else ():
            where = f"discovered repo {entry.get('repo')!r}"
            try:
                resolved = entry_settings(settings, entry, where)
            except ConfigError as exc:
                log.error("discovered_repo_refused", problem=str(exc))
                continue
            key = repo_key(resolved.repo.url)
            if key in seen:
                continue
            if len(wanted) >= settings.fleet.max_repos:
                log.error(
                    "discovered_repo_refused",
                    repo=resolved.repo.url,
                    problem=f"more than fleet_max_repos ({settings.fleet.max_repos}) repos",
                )
                continue
            seen.add(key)
            wanted.append(resolved)
        return wanted
