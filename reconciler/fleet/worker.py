"""One Env repo of the process: its adapters, its loop, and what one tick reports.

``Wiring`` builds the adapters of one repo's ``Settings`` around what the process shares
(the Kubernetes connection, the load generator, the metrics registry). ``RepoWorker`` runs
one tick of that repo's loop at a time and turns its report into metrics, notifications
and health; it never raises for a failed tick (invariant 9, at the repo's boundary: one
failing repo never stops the others), except ``TrustChangedError``, which the runner
answers by starting afresh.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from reconciler.cluster.client import Kube
from reconciler.cluster.events import KubeEvents
from reconciler.cluster.handoff import GitOpsHandoff, RepoHandoff, target_from_settings
from reconciler.cluster.kube import KubeCluster
from reconciler.cluster.scope import weight_policy
from reconciler.config import ConfigError, Settings
from reconciler.controller.actor import Actor, StampedStore
from reconciler.controller.isolation import describe
from reconciler.controller.loop import Reconciler, TickReport
from reconciler.engine.state import Phase
from reconciler.errors import ReconcilerError, TrustChangedError
from reconciler.gitstore.credentials import Credentials
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.signatures import AllowedSigners
from reconciler.load.shared import SharedLoad
from reconciler.metrics.catalog import Catalog
from reconciler.metrics.prometheus import PrometheusClient, PrometheusConfig, PrometheusMetrics
from reconciler.notify import Notifier, NotifyConfig
from reconciler.server.health import Health
from reconciler.server.telemetry import (
    CacheStats,
    InstrumentedCluster,
    InstrumentedMetrics,
    Telemetry,
)

log = structlog.get_logger("reconciler.run")
FAILPOINT_EXIT = 70


def cache_path(settings: Settings) -> Path:
    """A cache directory of its own for each Env repo URL."""
    digest = hashlib.sha256(settings.repo.url.encode()).hexdigest()[:16]
    return settings.repo.cache_dir / f"{digest}.git"


def failpoint(names: tuple[str, ...]) -> Callable[[str], None]:
    """A callback that exits the process hard when the loop crosses a named boundary."""
    armed = frozenset(names)

    def hit(name: str) -> None:
        if name in armed:
            log.warning("failpoint_hit", failpoint=name)
            os._exit(FAILPOINT_EXIT)

    return hit


class Wiring:
    """The adapters and the loop for one Env repo's ``Settings``."""

    def __init__(
        self,
        settings: Settings,
        *,
        kube: Kube,
        load: SharedLoad,
        telemetry: Telemetry,
        clock: Callable[[], float],
        may_act: Callable[[], bool],
        actor: Actor,
    ) -> None:
        """Open the repo's cache and wire its loop to the shared connections.

        Raises:
            ConfigError: a setting of this repo cannot work.
        """
        self.settings = settings
        try:
            prometheus = PrometheusConfig.from_settings(settings.prometheus)
            target = target_from_settings(settings.gitops)
            self.notify = NotifyConfig.from_settings(
                settings.notify, repo=settings.repo.url, branch=settings.repo.state_branch
            )
            policy = weight_policy(
                kube,
                namespaces=settings.kubernetes.weight_namespaces,
                rules=settings.kubernetes.weight_fields,
                target=target,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.store = GitEnvStore.open(
            settings.repo.url,
            cache_path(settings),
            main_branch=settings.repo.main_branch,
            state_branch=settings.repo.state_branch,
            author=settings.repo.author,
            credentials=Credentials.from_settings(settings.credentials),
        )
        self.metrics = PrometheusMetrics(
            # a Prometheus that keeps failing is asked again at the next tick, not sooner
            PrometheusClient(prometheus, cooldown_seconds=settings.repo.interval),
            Catalog(),
        )
        self.cluster = KubeCluster(kube, policy=policy)
        operator = RepoHandoff(GitOpsHandoff(kube), target) if target else None
        self.reconciler = Reconciler(
            StampedStore(self.store, actor),
            InstrumentedCluster(self.cluster, telemetry),
            InstrumentedMetrics(self.metrics, telemetry),
            clock=clock,
            paths=settings.repo.paths,
            failpoint=failpoint(settings.failpoints),
            operator=operator,
            sync_timeout=settings.gitops.sync_timeout,
            may_act=may_act,
            events=KubeEvents(kube) if settings.kubernetes.events else None,
            limits=settings.limits,
            verifier=(
                AllowedSigners(settings.repo.allowed_signers_file)
                if settings.repo.allowed_signers_file
                else None
            ),
            load=load.scoped(settings.repo.url),
        )


class RepoWorker:
    """Ticks one Env repo's loop and reports each tick (one tick at a time)."""

    def __init__(
        self,
        wiring: Wiring,
        *,
        telemetry: Telemetry,
        health: Health,
        clock: Callable[[], float],
    ) -> None:
        """Serve the repo ``wiring`` was built for."""
        self.wiring = wiring
        self.telemetry = telemetry
        self.health = health
        self.clock = clock
        self.ticks = 0
        self._lock = threading.Lock()
        self.notifier = Notifier(wiring.notify, on_result=self._notified)
        telemetry.watch_cache(self.repo, self._cache_stats)

    def _cache_stats(self) -> CacheStats:
        """The figures of the cache the current wiring uses."""
        return self.wiring.store.cache_stats()

    @property
    def repo(self) -> str:
        """The Env repo, as the settings name it (userinfo is never in settings)."""
        return self.wiring.store.url

    @property
    def settings(self) -> Settings:
        """This repo's settings."""
        return self.wiring.settings

    def rewire(self, wiring: Wiring) -> None:
        """Use new adapters (changed settings) from the next tick on."""
        with self._lock:
            self.wiring = wiring
            self.notifier.configure(wiring.notify)

    def tick(self) -> bool:
        """One tick; whether it went well (errors are logged, counted and shown)."""
        with self._lock:
            return self._tick()

    def _tick(self) -> bool:
        started = time.monotonic()
        try:
            report = self.wiring.reconciler.tick()
        except TrustChangedError:
            raise
        except ReconcilerError as exc:
            self._failed(str(exc))
            log.error("tick_failed", repo=self.repo, error=str(exc))
            return False
        except Exception as exc:  # invariant 9: the process never exits on content
            self._failed(f"internal error: {describe(exc)}")
            log.error(
                "tick_failed",
                repo=self.repo,
                error=describe(exc),
                bug="an internal error, please report it; the next tick tries again",
                exc_info=exc,
            )
            return False
        finally:
            self.telemetry.tick_duration.labels(self.repo).observe(time.monotonic() - started)
            self.ticks += 1
        self._count(report)
        self.notifier.announce(report.recorded, report.outcomes, report.errors)
        self.health.tick_succeeded(self.clock(), self.repo)
        self.telemetry.ticks.labels(self.repo, "ok").inc()
        self.telemetry.repo_failures.labels(self.repo).set(0)
        return not report.errors

    def _failed(self, error: str) -> None:
        self.telemetry.ticks.labels(self.repo, "error").inc()
        self.health.tick_failed(error, self.repo)

    def _count(self, report: TickReport) -> None:
        repo, telemetry = self.repo, self.telemetry
        for phase in (
            Phase.PROGRESSING, Phase.AWAITING_APPROVAL, Phase.PROMOTING, Phase.ROLLING_BACK,
        ):  # fmt: skip
            telemetry.experiments.labels(repo, phase.value).set(report.live.get(phase.value, 0))
        for branch, attempts in report.pushes:
            telemetry.pushes.labels(repo, branch, "accepted").inc()
            if attempts > 1:
                telemetry.pushes.labels(repo, branch, "conflict").inc(attempts - 1)
        for fault in report.faults:
            telemetry.experiment_errors.labels(repo, fault.subject).inc()
        for problem in report.problems:
            if problem.severity == "error":
                telemetry.experiment_errors.labels(repo, problem.location.file).inc()
        telemetry.count_corrections(
            repo, (key for key, _what in report.corrections), report.experiments
        )
        for step, seconds in report.phases.items():
            telemetry.tick_phase.labels(step).observe(seconds)
        telemetry.held.labels(repo).set(report.held)
        for transition, _commit in report.recorded:
            if transition.state.phase.final and transition.state.outcome_commit:
                promoted = transition.state.phase is Phase.PROMOTED
                outcome = "promoted" if promoted else "rolled-back"
                telemetry.promotions.labels(repo, outcome).inc()

    def _notified(self, target: str, result: str) -> None:
        """Count one notification's result (called from the notifier's threads)."""
        self.telemetry.notifications.labels(self.repo, target, result).inc()

    def close(self) -> None:
        """Stop its notifier (what it still holds is counted as dropped)."""
        self.notifier.close()
