"""How an event is worded: a title and text for people, a JSON body for programs, its signature.

Every target gets the same words: ``render`` makes them once per event. The text names the
experiment, what happened (the state commit's subject), the weights, and the state commit:
a link to it when ``gitWebURL`` is set (``{commit}`` replaced by its id), else its id and
the branch it is on. The JSON body is canonical (sorted keys, no spaces), so the bytes
signed are the bytes sent; ``signature`` is GitHub's ``sha256=<hex>`` HMAC of them.

Pure: no I/O, no clock. It never puts a secret in a message: the only key it sees is the
one it signs with, and that goes into the signature alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.notify.events import Event, EventKind

__all__ = ["COMMIT", "Context", "Message", "link", "payload", "render", "signature"]

COMMIT = "{commit}"
"""What ``gitWebURL`` holds in place of the commit id."""
SCHEMA = 1

_TITLES = {
    EventKind.STARTED: "started",
    EventKind.STEP: "iteration",
    EventKind.AWAITING_APPROVAL: "awaiting approval",
    EventKind.PAUSED: "paused",
    EventKind.RESUMED: "resumed",
    EventKind.ABORTED: "aborted",
    EventKind.PROMOTED: "promoted",
    EventKind.ROLLED_BACK: "rolled back",
    EventKind.DRIFT_CORRECTED: "weights set again",
    EventKind.OUTCOME_PUSH_FAILED: "outcome not pushed",
}
_WARNING = frozenset(
    {
        EventKind.ABORTED,
        EventKind.ROLLED_BACK,
        EventKind.DRIFT_CORRECTED,
        EventKind.OUTCOME_PUSH_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class Context:
    """What every message of one Env repo says besides its event."""

    repo: str
    """The Env repo as the settings name it (never with credentials)."""
    branch: str
    """The state branch."""
    web_url: str | None = None
    """``gitWebURL``: a commit's web page, ``{commit}`` standing for its id."""


@dataclass(frozen=True, slots=True)
class Message:
    """One event, worded for every target."""

    event_id: str
    kind: str
    title: str
    text: str
    body: bytes
    """The JSON payload, canonical: the bytes sent and signed."""
    warning: bool
    """Whether it reports something that went wrong (chat targets colour it)."""


def link(template: str | None, commit: str | None) -> str | None:
    """The web page of ``commit`` by ``template`` (None without either)."""
    if not template or not commit:
        return None
    return template.replace(COMMIT, commit)


def payload(event: Event, context: Context) -> dict[str, Any]:
    """The JSON document a program receives (the plain webhook's body)."""
    command = event.command
    return {
        "schema": SCHEMA,
        "id": event.id,
        "event": event.kind.value,
        "rolloutId": event.run_id,
        "experiment": event.experiment,
        "target": event.target,
        "phase": event.phase,
        "iteration": event.iteration,
        "iterations": event.iterations,
        "weights": dict(event.weights),
        "winner": event.winner,
        "summary": event.summary,
        "reason": event.reason,
        "time": _iso(event.time) if event.time else None,
        "repo": context.repo,
        "branch": context.branch,
        "commit": event.commit,
        "url": link(context.web_url, event.commit),
        "outcomeCommit": event.outcome_commit,
        "command": None
        if command is None
        else {
            "command": command.command,
            "author": command.author,
            "commit": command.commit,
            "reason": command.reason,
            "result": command.result,
        },
    }


def render(event: Event, context: Context) -> Message:
    """Title, text and JSON body of ``event``."""
    title = f"{event.experiment}: {_TITLES[event.kind]}"
    lines = [event.summary]
    if event.reason and event.reason not in event.summary:
        lines.append(f"Why: {event.reason}")
    if event.command is not None and event.command.reason:
        lines.append(f"Said by {event.command.author or 'someone'}: {event.command.reason}")
    if event.weights:
        lines.append("Weights: " + ", ".join(f"{name}={w}%" for name, w in event.weights))
    if event.outcome_commit:
        lines.append(f"Outcome commit on main: {event.outcome_commit}")
    url = link(context.web_url, event.commit)
    if url is not None:
        lines.append(f"State commit: {url}")
    elif event.commit is not None:
        lines.append(f"State commit: {event.commit} on branch {context.branch} of {context.repo}")
    lines.append(f"Rollout-Id: {event.run_id}")
    body = json.dumps(payload(event, context), sort_keys=True, separators=(",", ":"))
    return Message(
        event_id=event.id,
        kind=event.kind.value,
        title=title,
        text="\n".join(lines),
        body=body.encode(),
        warning=event.kind in _WARNING,
    )


def signature(key: bytes, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` under ``key`` (GitHub's header format)."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
