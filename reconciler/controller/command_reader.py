"""The commands pending on the state branch, read for the plan: who sent each, signed or not.

A command is a file under ``commands/<namespace>/<name>/`` added by one commit (see
``engine.control``); it stays until the state commit that answers it removes it, so what
is pending is exactly what the tip's tree holds. Each file is read once per blob (the
cache keeps only what is still pending), its origin (the commit that added it, its author,
its SSH signature) looked up through the store, and the signature of an ``approve`` or
``promote`` checked against the reconciler's allowed signers. At most ``LIMIT`` files are
read a tick; the others wait. Never acts: the plan decides.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import islice

import structlog

from reconciler.engine.control import COMMAND_PREFIX, Command, parse_command_file
from reconciler.ports import EnvStore, SignatureVerifier

log = structlog.get_logger("reconciler.controller")

__all__ = ["LIMIT", "CommandReader"]

LIMIT = 64
"""Command files read per tick (someone pushing thousands cannot stall the loop)."""
_CHECKED = ("approve", "promote")
"""The verbs whose signature matters (``spec.approval.requireSigned``)."""


class CommandReader:
    """Reads the pending commands of a state tip."""

    def __init__(self, store: EnvStore, verifier: SignatureVerifier | None = None) -> None:
        """Read through ``store``; check signatures with ``verifier`` (None: none count)."""
        self._store = store
        self._verifier = verifier
        self._seen: dict[tuple[str, str], Command] = {}

    def pending(self, tip: str | None) -> dict[str, list[Command]]:
        """The commands at ``tip`` by the experiment key their folder names, oldest first."""
        if tip is None:
            return {}
        seen: dict[tuple[str, str], Command] = {}
        for path, blob in islice(self._store.list_files(tip, COMMAND_PREFIX), LIMIT):
            command = self._seen.get((path, blob)) or self._read(tip, path)
            seen[path, blob] = command
        self._seen = seen
        out: dict[str, list[Command]] = {}
        for (path, _), command in sorted(seen.items()):
            out.setdefault(command.experiment or path, []).append(command)
        return out

    def _read(self, tip: str, path: str) -> Command:
        raw = self._store.read_file(tip, path) or b""
        command = parse_command_file(path, raw)
        origin = self._store.origin(tip, path)
        if origin is None:
            log.warning("command_origin_unknown", path=path)
            return command
        command = replace(command, commit=origin.id, author=origin.author)
        if command.verb not in _CHECKED or command.problem is not None:
            return command
        if origin.signature is None:
            return replace(command, signature="unsigned")
        if self._verifier is None:
            return replace(command, signature="no allowed signers configured")
        signer, status = self._verifier.verify(origin.signed, origin.signature)
        log.info("command_signature", path=path, commit=origin.id, signer=signer, status=status)
        return replace(command, signer=signer, signature=status)
