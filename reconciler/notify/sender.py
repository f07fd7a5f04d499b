"""Sends each tick's events to every target, never in the tick's way.

``Notifier.announce`` maps a tick's report to events (``events.events_of``), keeps the kinds
configured, words each once (``message.render``) and puts it in one bounded queue per target
(``QUEUE_CAPACITY``): it never blocks and never raises. A worker thread per target delivers
its queue in order, each attempt bounded by the target's timeout, retried with exponential
backoff and jitter (tenacity), so a receiver that hangs or fails delays only its own queue.
A full queue drops the new message and counts it (``on_result(target, "dropped")``). An
event id is sent once per process: the state commit it names is recorded once, and an
outcome that keeps failing to reach main is announced once. ``close`` drains the queues
for a bounded time, then gives up what is left (the queued counted as dropped, the one
in flight as failed). ``NotifyConfig`` is built once from the settings (``from_settings``)
and may be replaced on a reload.

What it must never do: make a tick wait or fail, or log a secret (targets are named by
their label, errors by what ``targets`` says).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from reconciler.config.settings import NotifySettings, describe
from reconciler.engine.experiment import Transition
from reconciler.errors import ReconcilerError, TemporaryError
from reconciler.notify.events import Event, EventKind, events_of, parse_kinds
from reconciler.notify.message import COMMIT, Context, Message, render
from reconciler.notify.targets import AppriseTarget, Target, WebhookTarget, read_key

log = structlog.get_logger("reconciler.notify")

__all__ = ["DRAIN_SECONDS", "QUEUE_CAPACITY", "Notifier", "NotifyConfig", "Retry"]

QUEUE_CAPACITY = 1000
"""Messages waiting per target; more are dropped (and counted)."""
DRAIN_SECONDS = 10.0
"""How long ``close`` lets the queues drain when the process stops."""
SEEN_LIMIT = 10_000
"""Event ids remembered to send each once (far more than the events of one tick)."""


class AbandonedError(ReconcilerError):
    """A message still being retried when the drain's time was up."""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently one message is tried on one target."""

    attempts: int = 5
    initial: float = 1.0
    """Seconds before the second attempt; each later wait doubles, up to ``maximum``."""
    maximum: float = 60.0
    jitter: float = 1.0
    """Up to this many seconds added at random to each wait."""


@dataclass(frozen=True)
class NotifyConfig:
    """The targets, the kinds of events they hear of, and what every message names."""

    targets: tuple[Target, ...] = ()
    kinds: frozenset[EventKind] = field(default_factory=lambda: frozenset(EventKind))
    context: Context = field(default_factory=lambda: Context(repo="", branch=""))

    @classmethod
    def from_settings(cls, settings: NotifySettings, *, repo: str, branch: str) -> NotifyConfig:
        """Validate ``settings`` and load the targets (reading the Apprise URLs file).

        Raises:
            ValueError: a setting is wrong; the message names it (flag / file key) and
                never quotes a URL from the file.
        """
        if settings.timeout <= 0:
            raise ValueError(f"{describe('notify_timeout')} must be above 0 seconds")
        try:
            kinds = parse_kinds(settings.events)
        except ValueError as exc:
            raise ValueError(f"{describe('notify_events')}: {exc}") from None
        web = settings.git_web_url
        if web is not None and (COMMIT not in web or not web.startswith(("http://", "https://"))):
            raise ValueError(f"{describe('git_web_url')} must be an http(s) URL holding {COMMIT}")
        targets: list[Target] = []
        if settings.webhook_url:
            targets.append(_webhook(settings))
        elif settings.webhook_secret_file is not None:
            raise ValueError(
                f"{describe('notify_webhook_secret_file')} is set but "
                f"{describe('notify_webhook_url')} is not"
            )
        if settings.apprise_urls_file is not None:
            targets += _apprise_targets(settings.apprise_urls_file, settings.timeout)
        return cls(tuple(targets), kinds, Context(repo, branch, web))


def _webhook(settings: NotifySettings) -> WebhookTarget:
    key_file = settings.webhook_secret_file
    if key_file is not None:
        try:
            read_key(key_file)
        except ReconcilerError as exc:
            raise ValueError(f"{describe('notify_webhook_secret_file')}: {exc}") from None
    try:
        return WebhookTarget(
            settings.webhook_url or "", key_file=key_file, timeout=settings.timeout
        )
    except ValueError as exc:
        raise ValueError(f"{describe('notify_webhook_url')}: {exc}") from None


def _apprise_targets(path: Path, timeout: float) -> list[Target]:
    where = describe("notify_apprise_urls_file")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read {path}: {exc}") from None
    targets: list[Target] = []
    for number, line in enumerate(lines, start=1):
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        try:
            targets.append(AppriseTarget(url, number=len(targets) + 1, timeout=timeout))
        except ValueError as exc:
            raise ValueError(f"{where}: {path}:{number}: {exc}") from None
    return targets


class _Lane:
    """One target's bounded queue and the worker thread that delivers it."""

    def __init__(
        self,
        target: Target,
        *,
        capacity: int,
        retry: Retry,
        on_result: Callable[[str, str], None],
    ) -> None:
        self.target = target
        self._capacity = capacity
        self._on_result = on_result
        self._items: deque[Message] = deque()
        self._ready = threading.Condition()
        self._busy = False
        self._closing = False
        self._dropping = False
        self.abort = threading.Event()
        """Set to stop retrying (the drain's time is up): waits end at once."""
        self._thread: threading.Thread | None = None
        self._retrying = Retrying(
            stop=stop_after_attempt(retry.attempts) | stop_when_event_set(self.abort),
            wait=wait_exponential_jitter(
                multiplier=retry.initial, max=retry.maximum, jitter=retry.jitter
            ),
            retry=retry_if_exception_type(TemporaryError),
            sleep=self._pause,
            before_sleep=self._attempt_failed,
            reraise=True,
        )

    def put(self, message: Message) -> None:
        """Queue ``message``, or drop it when the queue is full (counted, logged once a run)."""
        with self._ready:
            if self._closing or len(self._items) >= self._capacity:
                if not self._dropping:
                    log.warning(
                        "notifications_dropped",
                        target=self.target.label,
                        queued=len(self._items),
                        why="closing" if self._closing else "the queue is full",
                    )
                self._dropping = True
                self._on_result(self.target.name, "dropped")
                return
            self._dropping = False
            self._items.append(message)
            self._ready.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"notify-{self.target.name}", daemon=True
                )
                self._thread.start()

    def wait_idle(self, deadline: float) -> bool:
        """Wait until everything queued was tried (True), or ``deadline`` (monotonic)."""
        with self._ready:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
            return True

    def close(self) -> None:
        """Accept nothing more; the worker ends once the queue is empty."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()

    def abandon(self) -> int:
        """Stop retrying and forget what is still queued; how many were forgotten."""
        self.abort.set()
        with self._ready:
            left = len(self._items)
            self._items.clear()
            self._ready.notify_all()
        for _ in range(left):
            self._on_result(self.target.name, "dropped")
        return left

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._items and not self._closing:
                    self._ready.wait()
                if not self._items:
                    return
                message = self._items.popleft()
                self._busy = True
            try:
                self._deliver(message)
            finally:
                with self._ready:
                    self._busy = False
                    self._ready.notify_all()

    def _deliver(self, message: Message) -> None:
        try:
            self._retrying(self.target.send, message)
        except ReconcilerError as exc:
            self._on_result(self.target.name, "failed")
            log.warning(
                "notification_failed",
                target=self.target.label,
                event_id=message.event_id,
                kind=message.kind,
                error=str(exc),
            )
        except Exception as exc:  # noqa: BLE001 - a fault in a sender stops one message only
            self._on_result(self.target.name, "failed")
            log.error(
                "notification_failed",
                target=self.target.label,
                event_id=message.event_id,
                kind=message.kind,
                error=f"internal error ({type(exc).__name__})",
                bug="an internal error, please report it",
            )
        else:
            self._on_result(self.target.name, "sent")
            log.info(
                "notification_sent",
                target=self.target.label,
                event_id=message.event_id,
                kind=message.kind,
            )

    def _pause(self, seconds: float) -> None:
        """Wait between two attempts; when the drain's time is up, give up instead."""
        if self.abort.wait(seconds):
            raise AbandonedError("given up: the process is stopping")

    def _attempt_failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info(
            "notification_retried",
            target=self.target.label,
            attempt=state.attempt_number,
            error=str(exc),
            wait=round(state.upcoming_sleep, 2),
        )


class Notifier:
    """Queues each tick's events for every target; delivers them in the background."""

    def __init__(
        self,
        config: NotifyConfig,
        *,
        on_result: Callable[[str, str], None] = lambda _target, _result: None,
        retry: Retry | None = None,
        capacity: int = QUEUE_CAPACITY,
    ) -> None:
        """Nothing starts yet: each target's worker starts with its first message.

        ``on_result(target name, result)`` hears of every message: ``sent``, ``failed``
        (given up after the retries, or refused) or ``dropped``.
        """
        self._on_result = on_result
        self._retry = retry or Retry()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._config = config
        self._lanes = self._make_lanes(config)

    def _make_lanes(self, config: NotifyConfig) -> list[_Lane]:
        return [
            _Lane(t, capacity=self._capacity, retry=self._retry, on_result=self._on_result)
            for t in config.targets
        ]

    @property
    def targets(self) -> tuple[str, ...]:
        """The labels of the targets (for logs: secret-free)."""
        return tuple(lane.target.label for lane in self._lanes)

    def configure(self, config: NotifyConfig) -> None:
        """Send to ``config``'s targets from now on; the old ones deliver what they hold."""
        with self._lock:
            old, self._lanes, self._config = self._lanes, self._make_lanes(config), config
        for lane in old:
            lane.close()

    def announce(
        self,
        recorded: Sequence[tuple[Transition, str]],
        outcomes: Sequence[tuple[str, str]] = (),
        errors: Sequence[str] = (),
    ) -> None:
        """Send the events of one tick's report (its ``recorded``, ``outcomes``, ``errors``).

        Never raises and never waits: a fault here is logged and the tick goes on.
        """
        if not self._lanes:
            return
        try:
            self.notify(events_of(recorded, outcomes, errors))
        except Exception as exc:
            log.error(
                "notification_mapping_failed",
                error=f"{type(exc).__name__}: {exc}",
                bug="an internal error, please report it; the tick went on",
                exc_info=exc,
            )

    def notify(self, events: Iterable[Event]) -> None:
        """Queue each event of a configured kind not sent before, for every target."""
        with self._lock:
            lanes, config = list(self._lanes), self._config
            fresh = [e for e in events if e.kind in config.kinds and self._first(e.id)]
        for event in fresh:
            message = render(event, config.context)
            for lane in lanes:
                lane.put(message)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued was tried; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        return all(lane.wait_idle(deadline) for lane in list(self._lanes))

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Accept nothing more; let the queues drain for up to ``timeout``, then give up."""
        with self._lock:
            lanes = list(self._lanes)
        for lane in lanes:
            lane.close()
        if self.wait_idle(timeout):
            return
        left = {lane.target.label: lane.abandon() for lane in lanes}
        log.warning(
            "notifications_abandoned",
            seconds=timeout,
            queued={label: n for label, n in left.items() if n},
        )

    def _first(self, event_id: str) -> bool:
        """Whether ``event_id`` is new (remembered from now on, the oldest forgotten)."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        return True
