"""``reconciler run``: the long-running process around the loop.

It builds the real adapters from the one ``Settings`` object (the Env repo through
``GitEnvStore``, Prometheus through ``PrometheusMetrics``, Kubernetes through
``KubeCluster``), serves /metrics, /healthz, /readyz and /webhook, and ticks the loop when
the timer fires, when a verified push webhook arrives, or, for a local repo path, when a
ref in it changes (``watch.RefsWatcher``). With leader election it ticks only while this
replica holds the repo's Lease. The config file's content is watched as well
(``watch.ContentWatcher``; reads and other files never count): a valid new one replaces
the adapters between ticks, an invalid one is reported and the old one kept. When the CA
the Git store trusts no longer matches the configuration (a changed setting, a rotated
Secret), the process re-executes itself before its next fetch: libgit2 cannot forget a CA,
a new process trusts only the configured one, and all state is in Git, so nothing is lost.
Failpoints named in the settings exit the process hard at a step boundary (for the crash
tests only).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import structlog
from watchdog.observers import Observer

from reconciler import logs
from reconciler.cluster.client import KubeSettings, connect
from reconciler.cluster.events import KubeEvents
from reconciler.cluster.handoff import GitOpsHandoff, RepoHandoff, target_from_settings
from reconciler.cluster.kube import KubeCluster
from reconciler.cluster.lease import LeaseSettings, RepoLeases
from reconciler.cluster.scope import weight_policy
from reconciler.config import ConfigError, Settings, build, restart_needed
from reconciler.controller.isolation import describe
from reconciler.controller.loop import Reconciler, TickReport
from reconciler.engine.state import Phase
from reconciler.errors import ReconcilerError, TrustChangedError
from reconciler.gitstore.credentials import Credentials, url_scheme
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.signatures import AllowedSigners
from reconciler.load.generator import HttpLoad
from reconciler.metrics.catalog import Catalog
from reconciler.metrics.prometheus import PrometheusClient, PrometheusConfig, PrometheusMetrics
from reconciler.notify import Notifier, NotifyConfig
from reconciler.server.http import Health, HttpServer, Limits
from reconciler.server.telemetry import InstrumentedCluster, InstrumentedMetrics, Telemetry
from reconciler.watch import WATCHDOG_FILTER, ContentWatcher, RefsWatcher, git_dir

log = structlog.get_logger("reconciler.run")
FAILPOINT_EXIT = 70
RESTART_FAILED_EXIT = 75
"""Exit status when re-executing failed: the supervisor starting it afresh does the same."""


@dataclass(frozen=True)
class Sources:
    """Where settings come from, kept so the config file can be re-read."""

    flags: Mapping[str, Any]
    environ: Mapping[str, str]
    file: Path | None

    def settings(self) -> Settings:
        """Build and validate the settings afresh."""
        return build(flags=self.flags, environ=self.environ, file=self.file)


class Wiring:
    """The adapters and the loop for one ``Settings``."""

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        clock: Callable[[], float],
        may_act: Callable[[], bool],
    ) -> None:
        """Open the Env repo's cache, connect to Prometheus and Kubernetes, wire the loop."""
        self.settings = settings
        self.store = GitEnvStore.open(
            settings.repo.url,
            cache_path(settings),
            main_branch=settings.repo.main_branch,
            state_branch=settings.repo.state_branch,
            author=settings.repo.author,
            credentials=Credentials.from_settings(settings.credentials),
        )
        try:
            prometheus = PrometheusConfig.from_settings(settings.prometheus)
            target = target_from_settings(settings.gitops)
            self.notify = NotifyConfig.from_settings(
                settings.notify, repo=settings.repo.url, branch=settings.repo.state_branch
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.metrics = PrometheusMetrics(
            # a Prometheus that keeps failing is asked again at the next tick, not sooner
            PrometheusClient(prometheus, cooldown_seconds=settings.repo.interval),
            Catalog(),
        )
        self.kube = connect(KubeSettings.from_settings(settings.kubernetes))
        try:
            policy = weight_policy(
                self.kube,
                namespaces=settings.kubernetes.weight_namespaces,
                rules=settings.kubernetes.weight_fields,
                target=target,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.cluster = KubeCluster(self.kube, policy=policy)
        self.load = HttpLoad.from_settings(settings.load, api_server_host=self.kube.server_host)
        operator = RepoHandoff(GitOpsHandoff(self.kube), target) if target else None
        self.reconciler = Reconciler(
            self.store,
            InstrumentedCluster(self.cluster, telemetry),
            InstrumentedMetrics(self.metrics, telemetry),
            clock=clock,
            paths=settings.repo.paths,
            failpoint=failpoint(settings.failpoints),
            operator=operator,
            sync_timeout=settings.gitops.sync_timeout,
            may_act=may_act,
            events=KubeEvents(self.kube) if settings.kubernetes.events else None,
            limits=settings.limits,
            verifier=(
                AllowedSigners(settings.repo.allowed_signers_file)
                if settings.repo.allowed_signers_file
                else None
            ),
            load=self.load,
        )


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


class Runner:
    """Ticks the loop on events until stopped."""

    def __init__(
        self,
        sources: Sources,
        *,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        """Validate the settings and build everything; nothing runs before ``run``."""
        self.sources = sources
        # Made before the file is loaded: a change in between is then reloaded, not missed.
        self.config_watch = (
            ContentWatcher(sources.file, self._config_changed) if sources.file else None
        )
        self.refs_watch: RefsWatcher | None = None
        self.settings = sources.settings()
        logs.configure(json=self.settings.log.json, level=self.settings.log.level)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.wake = threading.Event()
        self.reload = threading.Event()
        self.reloads = 0
        """Config reloads attempted because the file's content changed (applied or not)."""
        self.config_rejected = 0
        """Config file changes refused (invalid): the old settings stayed."""
        self.ticks = 0
        """Ticks run, whatever their outcome (``reconciler_ticks_total`` by result)."""
        self.telemetry = Telemetry()
        self.health = Health(stale_after=max(60.0, 3 * self.settings.repo.interval))
        self.leases: RepoLeases | None = None
        self.wiring = Wiring(self.settings, self.telemetry, clock, self._holds)
        self.notifier = Notifier(self.wiring.notify, on_result=self._notified)
        self.telemetry.watch_cache(lambda: (self.repo, self.wiring.store.cache_stats()))
        self.observer: Any = None
        self.http: HttpServer | None = None

    @property
    def repo(self) -> str:
        """The Env repo, as the settings name it (userinfo is never in settings)."""
        return self.wiring.store.url

    def run(self, *, once: bool = False) -> int:
        """Tick until stopped (or once); the exit status."""
        if once:
            try:
                return 0 if self._tick() else 1
            finally:
                self.notifier.close()
                self.wiring.load.close()
        self._start_services()
        try:
            while not self.stop.is_set():
                self.wake.wait(timeout=self.settings.repo.interval)
                self.wake.clear()
                if self.stop.is_set():
                    break
                self._maybe_reload()
                if self._may_act():
                    self._tick()
        finally:
            self._stop_services()
        return 0

    def request_tick(self) -> None:
        """Tick as soon as possible (a webhook or a ref change)."""
        self.wake.set()

    # -- one tick -------------------------------------------------------------------

    def _tick(self) -> bool:
        started = time.monotonic()
        try:
            report = self.wiring.reconciler.tick()
        except TrustChangedError as exc:
            self._restart(str(exc))
        except ReconcilerError as exc:
            self.telemetry.ticks.labels(self.repo, "error").inc()
            self.health.tick_failed(str(exc))
            log.error("tick_failed", repo=self.repo, error=str(exc))
            return False
        except Exception as exc:  # invariant 9: the process never exits on content
            self.telemetry.ticks.labels(self.repo, "error").inc()
            self.health.tick_failed(f"internal error: {describe(exc)}")
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
        self.health.tick_succeeded(self.clock())
        self.telemetry.ticks.labels(self.repo, "ok").inc()
        return not report.errors

    def _count(self, report: TickReport) -> None:
        for phase in (
            Phase.PROGRESSING, Phase.AWAITING_APPROVAL, Phase.PROMOTING, Phase.ROLLING_BACK,
        ):  # fmt: skip
            live = report.live.get(phase.value, 0)
            self.telemetry.experiments.labels(self.repo, phase.value).set(live)
        for branch, attempts in report.pushes:
            self.telemetry.pushes.labels(self.repo, branch, "accepted").inc()
            if attempts > 1:
                self.telemetry.pushes.labels(self.repo, branch, "conflict").inc(attempts - 1)
        for fault in report.faults:
            self.telemetry.experiment_errors.labels(self.repo, fault.subject).inc()
        for problem in report.problems:
            if problem.severity == "error":
                self.telemetry.experiment_errors.labels(self.repo, problem.location.file).inc()
        self.telemetry.count_corrections(
            self.repo, (key for key, _what in report.corrections), report.experiments
        )
        for step, seconds in report.phases.items():
            self.telemetry.tick_phase.labels(self.repo, step).observe(seconds)
        self.telemetry.held.labels(self.repo).set(report.held)
        for transition, _commit in report.recorded:
            if transition.state.phase.final and transition.state.outcome_commit:
                promoted = transition.state.phase is Phase.PROMOTED
                outcome = "promoted" if promoted else "rolled-back"
                self.telemetry.promotions.labels(self.repo, outcome).inc()

    def _notified(self, target: str, result: str) -> None:
        """Count one notification's result (called from the notifier's threads)."""
        self.telemetry.notifications.labels(self.repo, target, result).inc()

    def _restart(self, reason: str) -> NoReturn:
        """Replace this process by a fresh run of the same command (same argv, environment).

        Only a new process trusts exactly the configured CA (``TrustChangedError``). The HTTP
        port and the watches are released first, so the new process can take them.
        """
        log.warning("trust_changed_restarting", repo=self.repo, reason=reason)
        self._stop_services()
        sys.stdout.flush()
        sys.stderr.flush()
        # orig_argv keeps how Python was started (-m reconciler, a console script, -X ...).
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            os.execv(sys.executable, argv)  # noqa: S606 - the same program, again
        except OSError as exc:
            log.error("restart_failed", repo=self.repo, error=str(exc))
            sys.stderr.flush()
            os._exit(RESTART_FAILED_EXIT)

    # -- services -------------------------------------------------------------------

    def _holds(self) -> bool:
        """Whether this replica may act on the repo now (always, without leader election)."""
        return self.leases is None or self.leases.holds(self.settings.repo.url)

    def _may_act(self) -> bool:
        if self.leases is None:
            self.health.set_role(self.repo, "single")
            return True
        holds = self.leases.holds(self.settings.repo.url)
        self.health.set_role(self.repo, "leader" if holds else "follower")
        self.telemetry.leader.labels(self.repo).set(1 if holds else 0)
        if not holds:  # standing by is this replica's job now: it is ready for it
            self.health.tick_succeeded(self.clock())
        return holds

    def _start_services(self) -> None:
        host, port = self.settings.server.address
        self.http = HttpServer(
            (host, port),
            telemetry=self.telemetry,
            health=self.health,
            clock=self.clock,
            on_push=self.request_tick,
            webhook_secret_file=self.settings.server.webhook_secret_file,
            limits=Limits.from_settings(self.settings.server),
        )
        self.http.start()
        self.observer = Observer()
        if url_scheme(self.settings.repo.url) == "file":
            repo = Path(self.settings.repo.url.removeprefix("file://"))
            if repo.is_dir():
                # Ref writes only: this process's own fetches read the repo, and a tick on
                # a read would start the next fetch, a storm.
                self.refs_watch = RefsWatcher(git_dir(repo), self.request_tick)
                self.observer.schedule(
                    self.refs_watch,
                    str(self.refs_watch.git_dir),
                    recursive=True,
                    event_filter=WATCHDOG_FILTER,
                )
        if self.config_watch is not None:
            self.observer.schedule(
                self.config_watch,
                str(self.config_watch.folder),
                recursive=False,
                event_filter=WATCHDOG_FILTER,
            )
        if self.refs_watch is not None or self.config_watch is not None:
            self.observer.start()
        if self.settings.leader_election.enabled:
            self.leases = RepoLeases(
                self.wiring.kube,
                (self.settings.repo.url,),
                identity=f"{socket.gethostname()}-{os.getpid()}",
                settings=LeaseSettings.from_settings(
                    self.settings.leader_election, self.settings.kubernetes.namespace
                ),
            )
            threading.Thread(
                target=self.leases.run,
                args=(self.stop, lambda _held: self.request_tick()),
                daemon=True,
            ).start()
        self.request_tick()

    def _stop_services(self) -> None:
        if self.observer is not None and self.observer.is_alive():
            self.observer.stop()
            self.observer.join(timeout=5)
        for watch in (self.refs_watch, self.config_watch):
            if watch is not None:
                watch.cancel()
        if self.http is not None:
            self.http.stop()
        self.notifier.close()
        self.wiring.load.close()

    def _config_changed(self) -> None:
        self.reload.set()
        self.request_tick()

    def _maybe_reload(self) -> None:
        if not self.reload.is_set():
            return
        self.reload.clear()
        self.reloads += 1
        try:
            settings = self.sources.settings()
            if settings == self.settings:
                return
            fixed = restart_needed(self.settings, settings)
            if fixed:
                raise ConfigError(
                    f"{', '.join(fixed)} changed: that takes a restart (the Leases, the HTTP "
                    "server and the repo's watch are made once); nothing of this change is "
                    "applied, restart the process to apply it"
                )
            wiring = Wiring(settings, self.telemetry, self.clock, self._holds)
        except ReconcilerError as exc:
            self.config_rejected += 1
            log.error("config_rejected", file=str(self.sources.file), error=str(exc))
            return
        logs.configure(json=settings.log.json, level=settings.log.level)
        log.info("config_reloaded", file=str(self.sources.file))
        previous, self.settings, self.wiring = self.wiring, settings, wiring
        previous.load.close()  # its runs start again from the new wiring's first tick
        self.notifier.configure(wiring.notify)
