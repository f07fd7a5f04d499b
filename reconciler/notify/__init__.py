"""Notifications: each recorded transition told to people and programs, never in the loop's way.

``events`` decides, purely, which state commits are events and of which kind (the state
commit is the event's id); ``message`` words them (text, canonical JSON, HMAC signature);
``targets`` delivers one message to a plain webhook or an Apprise URL; ``sender`` queues
them per target and delivers in the background with retries. Configured from the
reconciler's settings (``notify.*``, ``gitWebURL``), never from the Env repo; secrets come
from files and never reach a log.
"""

from reconciler.notify.events import Event, EventKind, events_of, kind_of
from reconciler.notify.message import Context, Message, render
from reconciler.notify.sender import Notifier, NotifyConfig, Retry

__all__ = [
    "Context",
    "Event",
    "EventKind",
    "Message",
    "Notifier",
    "NotifyConfig",
    "Retry",
    "events_of",
    "kind_of",
    "render",
]
