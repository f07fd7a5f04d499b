"""Where messages go: a plain webhook signed with HMAC-SHA256, or any Apprise URL.

``WebhookTarget`` POSTs the JSON body with ``X-Rollout-Event``, ``X-Rollout-Event-Id``
(the state commit: receivers de-duplicate by it) and, with a key file, ``X-Rollout-Signature:
sha256=<hex>`` over the exact bytes sent, as GitHub signs its webhooks; the key is read at
each send, so a rotated Secret counts at once. ``AppriseTarget`` hands the title and text to
Apprise (Slack, Microsoft Teams, Discord, Google Chat, e-mail, json://, ...), one Apprise
instance per URL so one slow service never waits for another. Each ``send`` makes one
attempt, bounded by the configured timeout; the sender retries.

What it must never do: put a secret in a log line or an error. URLs carry tokens, so a
target is named by its scheme and host (the webhook) or its number and scheme (an Apprise
URL), errors are described without the exception's text (which may quote a URL), and
``REDACTOR`` scrubs every configured URL's parts and every key from what Apprise and
urllib3 log themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from reconciler import __version__
from reconciler.errors import PermanentError, TemporaryError
from reconciler.notify.message import Message, signature

__all__ = [
    "REDACTOR",
    "AppriseTarget",
    "DeliveryError",
    "DeliveryRefusedError",
    "Redactor",
    "Target",
    "WebhookTarget",
    "read_key",
]

USER_AGENT = f"gitops-reconciler/{__version__}"
RETRIED_STATUS = frozenset({408, 425, 429})
"""Answers besides 5xx that mean "try again later"."""
_SECRET_MIN = 4
"""Shorter URL parts are not worth scrubbing (and would mangle every log line)."""


class DeliveryError(TemporaryError):
    """One attempt failed in a way another may not (no answer, 5xx, 429): retried."""


class DeliveryRefusedError(PermanentError):
    """The receiver refused the message (4xx) or the key cannot be read: not retried."""


class Target(Protocol):
    """One receiver of messages."""

    @property
    def name(self) -> str:
        """Short and secret-free: the ``target`` label of the notification metrics."""

    @property
    def label(self) -> str:
        """How logs name it (scheme and host, or number and scheme; never a token)."""

    def send(self, message: Message) -> None:
        """Deliver ``message`` once.

        Raises:
            DeliveryError: this attempt failed; another may not.
            DeliveryRefusedError: no attempt can succeed as configured.
        """


class Redactor(logging.Filter):
    """Scrubs known secrets from log records (installed on Apprise's and urllib3's loggers)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()

    def add(self, secrets: Iterable[str]) -> None:
        """Scrub ``secrets`` (and their URL-decoded forms) from now on."""
        fresh = {s for text in secrets for s in (text, unquote(text)) if len(s) >= _SECRET_MIN}
        with self._lock:
            self._secrets = self._secrets | fresh

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, its message scrubbed."""
        if self._secrets:
            message = record.getMessage()
            scrubbed = self.scrub(message)
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True


REDACTOR = Redactor()
for _name in ("apprise", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(REDACTOR)


def url_secrets(url: str, *, keep_host: bool) -> list[str]:
    """The parts of ``url`` that may be secret: all of it, userinfo, path, query values."""
    parts = urlsplit(url)
    found = [url, parts.password or "", parts.username or ""]
    if not keep_host:
        found.append(parts.hostname or "")
    found += [segment for segment in parts.path.split("/") if segment]
    found += [value for _key, value in parse_qsl(parts.query, keep_blank_values=False)]
    found += [parts.fragment]
    return [part for part in found if part]


def read_key(path: Path) -> bytes:
    """The signing key in ``path`` (a trailing newline, as editors and Secrets add, removed).

    Raises:
        DeliveryRefusedError: the file cannot be read or is empty.
    """
    try:
        key = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise DeliveryRefusedError(f"webhook key file {path}: {exc.strerror}") from None
    if not key:
        raise DeliveryRefusedError(f"webhook key file {path} is empty")
    REDACTOR.add([key.decode(errors="replace")])
    return key


class WebhookTarget:
    """POSTs the JSON body to one URL, signed when a key file is configured."""

    name = "webhook"

    def __init__(self, url: str, *, key_file: Path | None, timeout: float) -> None:
        """Check ``url`` (http or https, with a host); nothing is sent yet.

        Raises:
            ValueError: ``url`` is not an http(s) URL with a host.
        """
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        REDACTOR.add(url_secrets(url, keep_host=True))
        self._url = url
        self._key_file = key_file
        self._timeout = timeout
        port = f":{parts.port}" if parts.port else ""
        self.label = f"webhook {parts.scheme}://{parts.hostname}{port}"
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT

    def send(self, message: Message) -> None:
        """POST ``message.body`` once (no redirect followed: a signed body goes where named)."""
        headers = {
            "Content-Type": "application/json",
            "X-Rollout-Event": message.kind,
            "X-Rollout-Event-Id": message.event_id,
        }
        if self._key_file is not None:
            headers["X-Rollout-Signature"] = signature(read_key(self._key_file), message.body)
        try:
            answer = self._session.post(
                self._url,
                data=message.body,
                headers=headers,
                timeout=(self._timeout, self._timeout),
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise DeliveryError(f"no answer within {self._timeout:g} s") from exc
        except requests.RequestException as exc:
            # The exception's text may quote the URL: name its kind only.
            raise DeliveryError(f"not delivered ({type(exc).__name__})") from None
        status = answer.status_code
        answer.close()
        if status >= 500 or status in RETRIED_STATUS:  # noqa: PLR2004 - server errors
            raise DeliveryError(f"answered {status}")
        if status >= 300:  # noqa: PLR2004 - anything but success
            raise DeliveryRefusedError(f"answered {status}")

    def close(self) -> None:
        """Release the connections."""
        self._session.close()


class AppriseTarget:
    """One Apprise URL (its own Apprise instance, so no other service waits for it)."""

    def __init__(self, url: str, *, number: int, timeout: float) -> None:
        """Load ``url`` into Apprise (imported here: a process without targets never does).

        Raises:
            ValueError: Apprise knows no service by this URL (the message quotes its scheme
                only).
        """
        import apprise  # noqa: PLC0415 - 0.2 s and 20 MB, paid only when configured

        scheme = url.partition("://")[0].lower() if "://" in url else "?"
        REDACTOR.add(url_secrets(url, keep_host=False))
        self.name = f"apprise-{number}"
        self.label = f"apprise-{number} ({scheme}://)"
        self._apprise: Any = apprise.Apprise()
        if not self._apprise.add(_with_timeouts(url, timeout)):
            raise ValueError(f"Apprise has no service for this {scheme}:// URL")
        self._types = (apprise.NotifyType.INFO, apprise.NotifyType.WARNING)
        self._text = apprise.NotifyFormat.TEXT

    def send(self, message: Message) -> None:
        """Notify through Apprise once; its own log of the failure says why, scrubbed."""
        result = self._apprise.notify(
            body=message.text,
            title=message.title,
            notify_type=self._types[message.warning],
            body_format=self._text,
        )
        if not result:
            raise DeliveryError(f"not delivered: {_why(result)}")


def _with_timeouts(url: str, timeout: float) -> str:
    """``url`` with Apprise's connect and read timeouts (``cto``, ``rto``) unless it sets them."""
    query = urlsplit(url).query
    given = {key for key, _ in parse_qsl(query, keep_blank_values=True)}
    extra = [f"{key}={timeout:g}" for key in ("cto", "rto") if key not in given]
    if not extra:
        return url
    base, hash_mark, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    return base + joiner + "&".join(extra) + hash_mark + fragment


def _why(result: object) -> str:
    """The last warning Apprise logged for a failed call (Apprise 2: ``result.logs()``)."""
    logs = getattr(result, "logs", None)
    if not callable(logs):
        return "Apprise reported a failure"
    entries = [str(getattr(e, "message", e)) for e in logs()]
    return REDACTOR.scrub(entries[-1]) if entries else "Apprise reported a failure"
