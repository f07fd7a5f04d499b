"""Commands people push to the state branch, and approval gates: the values the engine decides on.

A command (``reconciler pause | resume | abort | promote | approve``) is a file under
``commands/<namespace>/<name>/`` of the state branch, added by one commit whose author is
the person; the loop reads it (``Command``), the engine answers it (``experiment.command``)
and the commit that records the answer removes the file, so each command acts exactly once
and survives restarts. ``CommandRecord`` is what a state document keeps of an answered
command; ``Gate`` is the approval an experiment waits for. Pure: values and their JSON
form only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMANDS_LIMIT",
    "COMMAND_PREFIX",
    "DONE",
    "IGNORED",
    "REFUSED",
    "VERBS",
    "Command",
    "CommandRecord",
    "Gate",
    "command_file",
    "gate_data",
    "gate_from",
    "parse_command_file",
    "record_data",
    "record_from",
]

VERBS = ("pause", "resume", "abort", "promote", "approve")
COMMAND_PREFIX = "commands"
"""The state branch's folder of pending commands."""
COMMANDS_LIMIT = 20
"""Answered commands a live document keeps; every one is also a commit of its own."""
COMMAND_FILE_LIMIT = 4096
"""Bytes of one command file; a larger one is answered as malformed."""
DONE, REFUSED, IGNORED = "done", "refused", "ignored"


@dataclass(frozen=True, slots=True)
class Command:
    """One pending command, as the loop read it from the state branch."""

    path: str
    """Its file on the state branch (removed by the commit that answers it)."""
    verb: str
    experiment: str
    """``namespace/name``."""
    run_id: str
    """The ``Rollout-Id`` it is for: a command for another run of the experiment is ignored."""
    commit: str = ""
    """The commit that added it ("" when it could not be found)."""
    author: str = ""
    """``Name <email>`` of that commit's author."""
    reason: str = ""
    force: bool = False
    signer: str | None = None
    """The allowed signer whose signature on ``commit`` was verified (None: none was)."""
    signature: str = "none"
    """What was found: ``none``, ``good``, or why it does not count (``unknown key``...)."""
    problem: str | None = None
    """Why the file is not a command the engine can act on (then it is only recorded)."""


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """An answered command, as a state document keeps it."""

    commit: str
    command: str
    author: str
    time: float
    """When the loop answered it (seconds since the epoch)."""
    result: str
    """``done``, ``refused`` (the engine would not) or ``ignored`` (not for this run)."""
    why: str
    reason: str = ""
    """What the person gave as ``--reason``."""
    forced: bool = False
    signer: str | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """An approval the experiment waits for (phase ``AwaitingApproval``)."""

    before: str
    """``start`` or ``promotion``."""
    opened_at: float
    winner: str | None = None
    """For a promotion gate: the candidate that would be promoted."""
    reason: str = ""
    """Why the decision was taken (the promotion's reason once approved)."""


def command_file(
    verb: str, run_id: str, *, reason: str = "", force: bool = False, requested_at: str = ""
) -> bytes:
    """The content of a command file (``reconciler pause`` and the others write it)."""
    data = {
        "command": verb,
        "id": run_id,
        "reason": reason,
        "force": force,
        "requestedAt": requested_at,
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def parse_command_file(path: str, raw: bytes) -> Command:  # noqa: PLR0911 - one per problem
    """A command file read back; a malformed one comes back with ``problem`` set.

    ``path`` is ``commands/<namespace>/<name>/<file>``; its experiment is the one the path
    names (a file cannot act on another experiment than its folder's).
    """
    parts = path.split("/")
    experiment = "/".join(parts[1:3]) if len(parts) == 4 else ""  # noqa: PLR2004 - the layout
    if not experiment:
        return Command(path, "", "", "", problem="not at commands/<namespace>/<name>/<file>")
    if len(raw) > COMMAND_FILE_LIMIT:
        return Command(path, "", experiment, "", problem=f"larger than {COMMAND_FILE_LIMIT} bytes")
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        return Command(path, "", experiment, "", problem=f"not JSON: {exc}")
    if not isinstance(data, dict):
        return Command(path, "", experiment, "", problem="not a JSON object")
    verb, run_id = data.get("command"), data.get("id")
    reason, force = data.get("reason", ""), data.get("force", False)
    if verb not in VERBS:
        return Command(
            path, "", experiment, "", problem=f"'command' must be one of {', '.join(VERBS)}"
        )
    if not isinstance(run_id, str) or not run_id.startswith(experiment + "@"):
        return Command(
            path, verb, experiment, "", problem=f"'id' must be a Rollout-Id of {experiment}"
        )
    if not isinstance(reason, str) or not isinstance(force, bool):
        return Command(
            path, verb, experiment, run_id, problem="'reason' must be text, 'force' true/false"
        )
    return Command(path, verb, experiment, run_id, reason=reason[:500], force=force)


def record_data(record: CommandRecord, iso: Callable[[float], str]) -> dict[str, Any]:
    """A command record as a state document writes it (``iso`` formats a time)."""
    return {
        "commit": record.commit,
        "command": record.command,
        "author": record.author,
        "time": iso(record.time),
        "result": record.result,
        "why": record.why,
        "reason": record.reason,
        "forced": record.forced,
        "signer": record.signer,
    }


def record_from(data: dict[str, Any], epoch: Callable[[str], float]) -> CommandRecord:
    """A command record read back from a state document (``epoch`` parses a time)."""
    return CommandRecord(
        commit=data["commit"],
        command=data["command"],
        author=data["author"],
        time=epoch(data["time"]),
        result=data["result"],
        why=data["why"],
        reason=data.get("reason", ""),
        forced=data.get("forced", False),
        signer=data.get("signer"),
    )


def gate_data(gate: Gate, iso: Callable[[float], str]) -> dict[str, Any]:
    """A gate as a state document writes it."""
    return {
        "before": gate.before,
        "openedAt": iso(gate.opened_at),
        "winner": gate.winner,
        "reason": gate.reason,
    }


def gate_from(data: dict[str, Any], epoch: Callable[[str], float]) -> Gate:
    """A gate read back from a state document."""
    return Gate(
        before=data["before"],
        opened_at=epoch(data["openedAt"]),
        winner=data.get("winner"),
        reason=data.get("reason", ""),
    )
