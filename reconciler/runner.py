"""``reconciler run``: the long-running process around the loops of its Env repos.

It serves every Env repo the configuration names (``repo``, or the ``repos:`` list) and,
with discovery on, every annotated Argo CD Application and Flux GitRepository. Each repo
has a ``RepoWorker`` (its own Git cache, Prometheus client, notifier and loop) and ticks on
its own schedule (``fleet.schedule``) in a bounded pool of threads (``fleet.workers``), so
a hanging Git server (for ``git_timeout`` seconds at most) or a slow query holds one thread
and delays no other repo; a repo that keeps failing is retried with backoff. Shared by
all: one Kubernetes connection, one load generator, one metrics registry, /metrics,
/healthz, /readyz and /webhook (a push wakes the repos it names). With leader election
each repo has its Lease and is ticked only while this replica holds it; every commit names
the replica and its Lease term (``controller.actor``). A timer, a verified push webhook
or, for a local repo path, a ref change in it (``watch.RefsWatcher``) asks for a tick.

The config file's content is watched (``watch.ContentWatcher``; reads and other files
never count): a valid new one adds and removes repos and re-wires the changed ones between
their ticks; an invalid one is reported and the old one kept. When the CA a Git store
trusts no longer matches the configuration, the process re-executes itself before its
next fetch: libgit2 cannot forget a CA, a new process trusts only the configured one, and
all state is in Git, so nothing is lost. Failpoints named in the settings exit the process
hard at a step boundary (for the crash tests only).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import structlog
from watchdog.observers import Observer

from reconciler import logs
from reconciler.cluster.client import KubeSettings, connect
from reconciler.cluster.lease import LeaseSettings, RepoLeases
from reconciler.collector import tune_collector
from reconciler.config import ConfigError, Settings, build, repo_key, restart_needed
from reconciler.controller.actor import Actor
from reconciler.errors import ReconcilerError, TrustChangedError
from reconciler.fleet.discovery import Discoverer
from reconciler.fleet.schedule import Schedule
from reconciler.fleet.worker import FAILPOINT_EXIT, RepoWorker, Wiring
from reconciler.gitstore.credentials import url_scheme
from reconciler.gitstore.native_heap import HeapTrimmer
from reconciler.gitstore.repo import bound_network, object_cache
from reconciler.load.generator import HttpLoad
from reconciler.load.shared import SharedLoad
from reconciler.server.health import Health
from reconciler.server.http import HttpServer, Limits
from reconciler.server.telemetry import Telemetry
from reconciler.watch import WATCHDOG_FILTER, ContentWatcher, RefsWatcher, git_dir

log = structlog.get_logger("reconciler.run")
RESTART_FAILED_EXIT = 75
"""Exit status when re-executing failed: the supervisor starting it afresh does the same."""
__all__ = ["FAILPOINT_EXIT", "RESTART_FAILED_EXIT", "Runner", "Sources"]


@dataclass(frozen=True)
class Sources:
    """Where settings come from, kept so the config file can be re-read."""

    flags: Mapping[str, Any]
    environ: Mapping[str, str]
    file: Path | None

    def settings(self) -> Settings:
        """Build and validate the settings afresh."""
        return build(flags=self.flags, environ=self.environ, file=self.file)


class Runner:
    """Ticks the loops of the Env repos on events until stopped."""

    def __init__(
        self,
        sources: Sources,
        *,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        """Validate the settings and build every listed repo's worker; nothing runs yet.

        Raises:
            ConfigError: a setting, or a listed repo's, cannot work.
        """
        self.sources = sources
        # Made before the file is loaded: a change in between is then reloaded, not missed.
        self.config_watch = (
            ContentWatcher(sources.file, self._config_changed) if sources.file else None
        )
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
        """Ticks run, all repos together, whatever their outcome."""
        self.identity = f"{socket.gethostname()}-{os.getpid()}"
        self.telemetry = Telemetry()
        self.telemetry.watch_object_cache(object_cache)
        self.heap = HeapTrimmer()
        """Gives the pages a tick's bursts freed back to the kernel (``gitstore.native_heap``)."""
        self.health = Health(stale_after=max(60.0, 3 * self.settings.repo.interval))
        self.leases: RepoLeases | None = None
        self._lease_thread: threading.Thread | None = None
        self.kube_settings = KubeSettings.from_settings(self.settings.kubernetes)
        self.kube = connect(self.kube_settings)
        self.load = SharedLoad(
            HttpLoad.from_settings(self.settings.load, api_server_host=self.kube.server_host)
        )
        self.workers: dict[str, RepoWorker] = {}
        self.refs_watches: dict[str, RefsWatcher] = {}
        self._watch_handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._schedule = Schedule()
        self._pending: dict[str, Settings] = {}
        """Changed settings of repos that were ticking when they changed: applied after."""
        self.observer: Any = None
        self.http: HttpServer | None = None
        self.discoverer = Discoverer.from_settings(self.settings, self.kube)
        bound_network(self.settings.fleet.git_timeout)
        self._serve(list(self.settings.served()), strict=True)

    @property
    def repo(self) -> str:
        """The first Env repo served ('' for none): the repo, for a process serving one."""
        return next(iter(self.workers), "")

    @property
    def refs_watch(self) -> RefsWatcher | None:
        """The watch on the first local repo served, if any."""
        return next(iter(self.refs_watches.values()), None)

    def run(self, *, once: bool = False) -> int:
        """Tick until stopped (or every repo once); the exit status."""
        if once:
            try:
                self._discover_now()
                results = [self._tick(repo) for repo in list(self.workers)]
                return 0 if results and all(results) else 1
            finally:
                self._close_workers()
        self._start_services()
        tune_collector()
        try:
            with ThreadPoolExecutor(
                max_workers=self.settings.fleet.workers, thread_name_prefix="repo"
            ) as pool:
                while not self.stop.is_set():
                    self._maybe_reload()
                    self._apply_discovered()
                    self._dispatch(pool)
                    with self._lock:
                        wait = self._schedule.next_wait(time.monotonic())
                    self.wake.wait(timeout=min(wait, 1.0))
                    self.wake.clear()
        finally:
            self._stop_services()
        return 0

    def request_tick(self) -> None:
        """Tick every repo as soon as possible (a ref change, a test)."""
        now = time.monotonic()
        with self._lock:
            for repo in self.workers:
                self._schedule.wake(repo, now)
        self.wake.set()

    def wake_repos(self, urls: tuple[str, ...]) -> int:
        """Tick the repos ``urls`` name (a push webhook; none named: every repo); how many."""
        if not urls:
            self.request_tick()
            return len(self.workers)
        named = {repo_key(url) for url in urls}
        now = time.monotonic()
        woken = 0
        with self._lock:
            for repo in self.workers:
                if repo_key(repo) in named and self._schedule.wake(repo, now):
                    woken += 1
        log.info("webhook_woke", repos=woken)
        self.wake.set()
        return woken

    # -- ticks ----------------------------------------------------------------------

    def _dispatch(self, pool: ThreadPoolExecutor) -> None:
        """Hand every due repo this replica may act on to a free worker thread."""
        now = time.monotonic()
        with self._lock:
            due = self._schedule.due(now)
        if not self.workers:
            self.health.idle(self.clock())
        for repo in due:
            if not self._may_act(repo):
                with self._lock:
                    self._schedule.postpone(repo, now)
                continue
            with self._lock:
                self._schedule.start(repo)
            pool.submit(self._tick_in_pool, repo)

    def _tick_in_pool(self, repo: str) -> None:
        ok = False
        try:
            ok = self._tick(repo)
        finally:
            now = time.monotonic()
            with self._lock:
                self._schedule.finish(repo, now, ok=ok)
                failures = self._schedule.failures(repo)
                retry_in = self._schedule.retry_in(repo, now)
            if not ok and repo in self.workers:
                self.telemetry.repo_failures.labels(repo).set(failures)
                self.health.set_backoff(repo, failures, retry_in)
            self.heap.after_tick()
            self.wake.set()

    def _tick(self, repo: str) -> bool:
        worker = self.workers.get(repo)
        if worker is None:
            return False
        try:
            ok = worker.tick()
        except TrustChangedError as exc:
            self._restart(str(exc))
        with self._lock:
            self.ticks += 1
        return ok

    def _restart(self, reason: str) -> NoReturn:
        """Replace this process by a fresh run of the same command (same argv, environment).

        Only a new process trusts exactly the configured CA (``TrustChangedError``). The HTTP
        port and the watches are released first, so the new process can take them.
        """
        log.warning("trust_changed_restarting", reason=reason)
        self._stop_services()
        sys.stdout.flush()
        sys.stderr.flush()
        # orig_argv keeps how Python was started (-m reconciler, a console script, -X ...).
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            os.execv(sys.executable, argv)  # noqa: S606 - the same program, again
        except OSError as exc:
            log.error("restart_failed", error=str(exc))
            sys.stderr.flush()
            os._exit(RESTART_FAILED_EXIT)

    # -- which repos, and who acts on them -------------------------------------------

    def _serve(self, wanted: list[Settings], *, strict: bool) -> None:
        """Serve exactly ``wanted``: start new repos, re-wire changed ones, stop the rest.

        Raises:
            ConfigError: with ``strict``, a repo that cannot be wired (nothing changes).
        """
        by_url = {settings.repo.url: settings for settings in wanted}
        fresh: dict[str, Wiring] = {}
        for url, settings in by_url.items():
            current = self.workers.get(url)
            if current is not None and current.settings == settings:
                continue
            try:
                fresh[url] = self._wire(settings)
            except ReconcilerError as exc:
                if strict:
                    raise
                log.error("repo_refused", repo=url, error=str(exc))
                self.health.tick_failed(str(exc), url)
        for url in [u for u in self.workers if u not in by_url]:
            self._drop(url)
        now = time.monotonic()
        for url, wiring in fresh.items():
            worker = self.workers.get(url)
            if worker is None:
                self.workers[url] = RepoWorker(
                    wiring, telemetry=self.telemetry, health=self.health, clock=self.clock
                )
                self._watch_local(url)
                log.info("repo_served", repo=url)
            else:
                with self._lock:
                    running = self._schedule.running(url)
                if running:
                    self._pending[url] = wiring.settings
                else:
                    worker.rewire(wiring)
            with self._lock:
                self._schedule.add(url, wiring.settings.repo.interval, now)
        if self.leases is not None:
            self.leases.set_repos(self.workers)

    def _wire(self, settings: Settings) -> Wiring:
        url = settings.repo.url
        lease_term = None
        if self.settings.leader_election.enabled:

            def lease_term() -> tuple[str, int] | None:
                return self.leases.term(url) if self.leases is not None else None

        return Wiring(
            settings,
            kube=self.kube,
            load=self.load,
            telemetry=self.telemetry,
            clock=self.clock,
            may_act=lambda: self._holds(url),
            actor=Actor(self.identity, lease_term),
        )

    def _drop(self, url: str) -> None:
        worker = self.workers.pop(url)
        with self._lock:
            self._schedule.remove(url)
        self._pending.pop(url, None)
        handle = self._watch_handles.pop(url, None)
        if handle is not None and self.observer is not None:
            self.observer.unschedule(handle)
        watch = self.refs_watches.pop(url, None)
        if watch is not None:
            watch.cancel()
        worker.close()
        self.load.forget(url)
        self.telemetry.forget(url)
        self.health.forget(url)
        log.info("repo_dropped", repo=url)

    def _holds(self, repo: str) -> bool:
        """Whether this replica may act on ``repo`` now (always, without leader election)."""
        return self.leases is None or self.leases.holds(repo)

    def _may_act(self, repo: str) -> bool:
        if self.leases is None:
            self.health.set_role(repo, "single")
            return True
        holds = self.leases.holds(repo)
        self.health.set_role(repo, "leader" if holds else "follower")
        self.telemetry.leader.labels(repo).set(1 if holds else 0)
        if not holds:  # standing by is this replica's job now: it is ready for it
            self.health.tick_succeeded(self.clock(), repo)
        return holds

    def _leases_changed(self, held: frozenset[str]) -> None:
        """Tick the repos this replica now holds at once."""
        now = time.monotonic()
        with self._lock:
            for repo in held:
                self._schedule.wake(repo, now)
        self.wake.set()

    # -- services -------------------------------------------------------------------

    def _watch_local(self, url: str) -> None:
        """Tick a local repo when one of its refs changes (not on reads)."""
        if url_scheme(url) != "file":
            return
        repo = Path(url.removeprefix("file://"))
        if not repo.is_dir():
            return
        # Ref writes only: this process's own fetches read the repo, and a tick on a read
        # would start the next fetch, a storm.

        def changed() -> None:
            self.wake_repos((url,))

        self.refs_watches[url] = RefsWatcher(git_dir(repo), changed)
        if self.observer is not None:
            self._schedule_watch(url)

    def _schedule_watch(self, url: str) -> None:
        watch = self.refs_watches[url]
        self._watch_handles[url] = self.observer.schedule(
            watch, str(watch.git_dir), recursive=True, event_filter=WATCHDOG_FILTER
        )

    def _start_services(self) -> None:
        host, port = self.settings.server.address
        self.http = HttpServer(
            (host, port),
            telemetry=self.telemetry,
            health=self.health,
            clock=self.clock,
            on_push=self.wake_repos,
            webhook_secret_file=self.settings.server.webhook_secret_file,
            limits=Limits.from_settings(self.settings.server),
        )
        self.http.start()
        self.observer = Observer()
        for url in self.refs_watches:
            self._schedule_watch(url)
        if self.config_watch is not None:
            self.observer.schedule(
                self.config_watch,
                str(self.config_watch.folder),
                recursive=False,
                event_filter=WATCHDOG_FILTER,
            )
        self.observer.start()
        if self.settings.leader_election.enabled:
            self.leases = RepoLeases(
                self.kube,
                tuple(self.workers),
                identity=self.identity,
                settings=LeaseSettings.from_settings(
                    self.settings.leader_election, self.settings.kubernetes.namespace
                ),
            )
            self._lease_thread = threading.Thread(
                target=self.leases.run,
                args=(self.stop, self._leases_changed),
                daemon=True,
                name="leases",
            )
            self._lease_thread.start()
        if self.discoverer is not None:
            self.discoverer.start(self.stop, self.wake)
        self.request_tick()

    def _stop_services(self) -> None:
        if self.observer is not None and self.observer.is_alive():
            self.observer.stop()
            self.observer.join(timeout=5)
        for watch in (*self.refs_watches.values(), self.config_watch):
            if watch is not None:
                watch.cancel()
        if self.http is not None:
            self.http.stop()
        self._close_workers()
        if self.stop.is_set() and self._lease_thread is not None:
            # Stopping (not re-executing): the Leases are handed back on the way out
            # (RepoLeases.run). The thread is a daemon, so without this join the process
            # exits first and the Leases it did not release yet wait to expire. Waiting longer
            # than a Lease duration gains nothing: by then they have expired anyway.
            self._lease_thread.join(timeout=self.settings.leader_election.lease_duration)

    def _close_workers(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.load.close()

    # -- configuration and discovery --------------------------------------------------

    def _config_changed(self) -> None:
        self.reload.set()
        self.request_tick()

    def _maybe_reload(self) -> None:
        self._apply_pending()
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
                    "server and the worker pool are made once); nothing of this change is "
                    "applied, restart the process to apply it"
                )
            if KubeSettings.from_settings(settings.kubernetes) != self.kube_settings:
                raise ConfigError(
                    "the Kubernetes connection (kubeconfig / context) changed: that takes a "
                    "restart; nothing of this change is applied"
                )
            previous = self.settings
            self.settings = settings
            wanted = list(settings.served())
            if self.discoverer is not None:
                wanted = self.discoverer.merge(settings, wanted)
            try:
                self._serve(wanted, strict=True)
            except ReconcilerError:
                self.settings = previous
                raise
        except ReconcilerError as exc:
            self.config_rejected += 1
            log.error("config_rejected", file=str(self.sources.file), error=str(exc))
            return
        logs.configure(json=settings.log.json, level=settings.log.level)
        bound_network(settings.fleet.git_timeout)
        log.info("config_reloaded", file=str(self.sources.file), repos=len(self.workers))

    def _apply_pending(self) -> None:
        """Re-wire the repos whose settings changed while they were ticking."""
        for url, settings in list(self._pending.items()):
            with self._lock:
                busy = self._schedule.running(url)
            if busy:
                continue
            del self._pending[url]
            worker = self.workers.get(url)
            if worker is not None:
                try:
                    worker.rewire(self._wire(settings))
                except ReconcilerError as exc:
                    log.error("repo_refused", repo=url, error=str(exc))

    def _discover_now(self) -> None:
        """List the annotated objects once, in this thread (``run --once``)."""
        if self.discoverer is not None:
            self.discoverer.discover()
            self._apply_discovered()

    def _apply_discovered(self) -> None:
        """Serve what the last discovery found, when it found something new."""
        if self.discoverer is not None and self.discoverer.changed():
            listed = list(self.settings.served())
            self._serve(self.discoverer.merge(self.settings, listed), strict=False)
