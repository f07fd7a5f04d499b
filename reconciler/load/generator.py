"""The built-in load generator: HTTP requests to each version, paced, bounded, measured.

``HttpLoad`` implements ``ports.LoadGenerator``. It owns one background thread running its
own asyncio event loop; every request of every run is a task on that loop (``sender``: a
``Run`` per admitted plan, a paced, bounded ``Sender`` per version). ``converge`` checks the
plans (``admission``: targets, headers, caps) under a lock, hands the admitted ones to the
loop (``call_soon_threadsafe``) and returns at once with the refused ones; ``observe`` reads
one version's counts (``stats``) under the same lock. Neither waits for the loop, so a
target that hangs costs only its own connections. A run whose target resolved to a refused
address is stopped, its stats dropped, and ``converge`` says why for as long as the plan
asks for the same load. A plan with ``active=False`` sends nothing and keeps its stats; a
plan that disappears stops, and its stats are dropped.

What it must never do: block ``converge``/``observe`` on the network, run a command, or let
one run's failure stop another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Collection, Mapping
from typing import Self

import structlog

from reconciler.config import ConfigError, LoadSettings
from reconciler.load.admission import Caps, admit
from reconciler.load.resolver import HookResolver, Resolver, SystemResolver
from reconciler.load.sender import CLOSE_SECONDS, Run, Shared
from reconciler.load.stats import BUILTIN_METRICS, VersionStats
from reconciler.ports import LoadPlan, MetricValue
from reconciler.spec.targets import parse_resolve

log = structlog.get_logger("reconciler.load")

__all__ = ["HttpLoad"]


def _work(plan: LoadPlan | None) -> tuple[object, ...] | None:
    """What a plan asks to be sent (all of it but whether it is active)."""
    if plan is None:
        return None
    return (plan.load, plan.interval_seconds, plan.payload, plan.namespace)


class HttpLoad:
    """HTTP load to the versions of every admitted run, measured as Iter8's built-in metrics."""

    def __init__(
        self,
        caps: Caps | None = None,
        *,
        resolver: Resolver | None = None,
        api_servers: Collection[str] = (),
    ) -> None:
        self._caps = caps or Caps()
        self._lock = threading.Lock()
        self._shared = Shared(
            resolver or SystemResolver(),
            frozenset(api_servers),
            self._refuse,
            self._record,
            payload_limit=self._caps.max_payload_bytes,
        )
        # guarded by _lock: what the caller sees
        self._accepted: dict[str, LoadPlan] = {}
        self._stats: dict[str, dict[str, VersionStats]] = {}
        self._late: dict[str, tuple[LoadPlan, str]] = {}
        self._closed = False
        # the loop thread's own
        self._runs: dict[str, Run] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="load-generator", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(
        cls,
        settings: LoadSettings,
        *,
        api_server_host: str | None = None,
        resolver: Resolver | None = None,
    ) -> HttpLoad:
        """The generator the configuration describes.

        ``api_server_host`` is ``KUBERNETES_SERVICE_HOST`` (the API server's address, never a
        target); ``resolver`` replaces the system's (the ``load.resolve`` hook goes first).

        Raises:
            ConfigError: a ``load.*`` setting that cannot work.
        """
        try:
            hook = parse_resolve(settings.resolve)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        checks = (
            (settings.max_qps_per_experiment > 0, "load_max_qps_per_experiment must be above 0"),
            (settings.max_qps_total > 0, "load_max_qps_total must be above 0"),
            (settings.max_payload_bytes >= 0, "load_max_payload_bytes must be 0 or more"),
            (settings.max_connections >= 1, "load_max_connections must be at least 1"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        caps = Caps(
            max_qps_per_experiment=settings.max_qps_per_experiment,
            max_qps_total=settings.max_qps_total,
            max_payload_bytes=settings.max_payload_bytes,
            max_connections=settings.max_connections,
            allowed_namespaces=tuple(settings.allowed_namespaces),
        )
        base = resolver or SystemResolver()
        return cls(
            caps,
            resolver=HookResolver(hook, base) if hook else base,
            api_servers=(api_server_host,) if api_server_host else (),
        )

    def converge(self, plans: Mapping[str, LoadPlan]) -> dict[str, str]:
        """Load exactly the admitted ``plans`` from now on; return why the others are refused."""
        with self._lock:
            if self._closed:
                return dict.fromkeys(plans, "the load generator is closed")
            self._late = {
                run_id: (plan, why)
                for run_id, (plan, why) in self._late.items()
                if _work(plans.get(run_id)) == _work(plan)
            }
            candidates = {rid: plan for rid, plan in plans.items() if rid not in self._late}
            admitted, refused = admit(candidates, self._accepted.keys(), self._caps)
            refused.update({run_id: why for run_id, (_plan, why) in self._late.items()})
            self._stats = {rid: self._stats.get(rid, {}) for rid in admitted}
            for run_id, plan in admitted.items():
                names = {v.version for v in plan.load.versions}
                kept = self._stats[run_id]
                self._stats[run_id] = {n: kept.get(n) or VersionStats() for n in sorted(names)}
            if admitted != self._accepted:
                stats = {rid: dict(per) for rid, per in self._stats.items()}
                # under the lock, so that close() comes wholly before or after it
                self._loop.call_soon_threadsafe(self._apply, admitted, stats)
            self._accepted = admitted
        for run_id, why in refused.items():
            log.debug("load_refused", run=run_id, reason=why)
        return refused

    def observe(self, run_id: str, version: str, metric: str) -> MetricValue:
        """One Iter8 built-in metric of one version, over every request finished so far."""
        if metric not in BUILTIN_METRICS:
            return MetricValue(None, None, "unavailable")
        with self._lock:
            plan = self._accepted.get(run_id)
            found = self._stats.get(run_id, {}).get(version)
            if plan is None or plan.load.load_only or found is None:
                return MetricValue(None, None, "no-data")
            if found.requests == 0:
                return MetricValue(None, 0, "no-data")
            if metric in {"request-count", "error-count", "error-rate", "mean-latency"}:
                return found.metric(metric)
            snapshot = found.copy()
        return snapshot.metric(metric)

    def stats(self, run_id: str, version: str) -> VersionStats | None:
        """A copy of one version's counts (statuses included), or None when it has none."""
        with self._lock:
            found = self._stats.get(run_id, {}).get(version)
            return None if found is None else found.copy()

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Stop every run and the loop; waits at most about ``timeout`` seconds."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._accepted, self._stats, self._late = {}, {}, {}
        deadline = time.monotonic() + timeout
        done = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), self._loop)
        try:
            done.result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            log.warning("load_close_timeout", seconds=timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(max(0.1, deadline - time.monotonic()))
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the loop thread ------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _apply(
        self, plans: Mapping[str, LoadPlan], stats: Mapping[str, dict[str, VersionStats]]
    ) -> None:
        with self._lock:
            late = dict(self._late)
        for run_id in [rid for rid in self._runs if rid not in plans]:
            self._stop(run_id, "removed")
        for run_id, plan in plans.items():
            if run_id in late and _work(late[run_id][0]) == _work(plan):
                continue
            run = self._runs.get(run_id)
            if run is not None and _work(run.plan) == _work(plan):
                run.set_active(active=plan.active)
                continue
            if run is not None:
                self._stop(run_id, "changed")
            try:
                self._runs[run_id] = Run(run_id, plan, stats.get(run_id, {}), self._shared)
            except Exception as exc:  # one bad plan stops its own run, never the others
                log.exception("load_start_failed", run=run_id)
                self._refuse(run_id, plan, f"the load could not start: {exc}")
                continue
            log.info(
                "load_started",
                run=run_id,
                versions=[v.version for v in plan.load.versions],
                qps=plan.load.qps,
                active=plan.active,
            )

    def _stop(self, run_id: str, why: str) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        log.info("load_stopped", run=run_id, reason=why)
        closing = self._loop.create_task(run.stop())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _refuse(self, run_id: str, plan: LoadPlan, why: str) -> None:
        """An address check refused a running plan: stop it and say why from now on."""
        with self._lock:
            if _work(self._accepted.get(run_id)) != _work(plan):
                return
            del self._accepted[run_id]
            self._stats.pop(run_id, None)
            self._late[run_id] = (plan, why)
        log.warning("load_refused", run=run_id, reason=why)
        run = self._runs.get(run_id)
        if run is not None and _work(run.plan) == _work(plan):
            self._stop(run_id, "refused")

    def _record(self, stats: VersionStats, status: int | None, micros: int) -> None:
        with self._lock:
            stats.record(status, micros)

    async def _shutdown(self, seconds: float) -> None:
        for run_id in list(self._runs):
            self._stop(run_id, "closed")
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=seconds)
