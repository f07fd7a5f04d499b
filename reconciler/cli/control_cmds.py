"""``reconciler pause | resume | abort | promote | approve``: a person's command, as one commit.

Each pushes one commit on the state branch (compare-and-swap, as every write) that adds
the command's file under ``commands/<namespace>/<name>/``, authored by the person (their
Git identity, or ``--author``), with trailers a plain ``git log`` can query. It needs push
rights on the Env repo only, no cluster credentials. The command is checked against the
live run first (a command for a run that is over, for another ``Rollout-Id``, or that
cannot apply now is an error here, and nothing is pushed); the reconciler acts on its next
tick and records its answer citing this commit. ``--wait`` waits for that answer.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconciler.cli.repo_options import fetch_heads, open_store, repo_options
from reconciler.controller import records
from reconciler.engine import commands
from reconciler.engine.control import COMMAND_PREFIX, command_file
from reconciler.engine.state import ExperimentState, Phase, from_json
from reconciler.errors import ReconcilerError
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.signatures import git_identity, git_signing_key, ssh_signer
from reconciler.gitstore.state_branch import live_path
from reconciler.gitstore.trailers import format_message
from reconciler.ports import CommitSpec

__all__ = ["COMMANDS"]

_HELP = {
    "pause": "Freeze EXPERIMENT's weights and iterations until a resume.",
    "resume": "Let a paused EXPERIMENT go on (its next iteration a full interval later).",
    "abort": "Return EXPERIMENT's traffic to the baseline and push the rollback outcome.",
    "promote": (
        "End EXPERIMENT now with its leading candidate, if that met its objectives at the "
        "last iteration (--force: even if not; recorded as forced)."
    ),
    "approve": "Pass the approval gate EXPERIMENT waits at (spec.approval).",
}


def _check(verb: str, state: ExperimentState, run_id: str | None) -> None:
    """Refuse a command the live run cannot take now (the reconciler would ignore it).

    Raises:
        click.ClickException: with what stands in the way.
    """
    if run_id is not None and run_id != state.id:
        raise click.ClickException(f"the live run of {state.key} is {state.id}, not {run_id}")
    if not commands.running(state):
        raise click.ClickException(
            f"{state.id} is not running ({state.phase.value}): nothing to {verb}"
        )
    paused = state.paused is not None
    awaiting = state.phase is Phase.AWAITING_APPROVAL
    problem = {
        "pause": f"already paused by {state.paused.author}" if state.paused else None,
        "resume": None if paused else "it is not paused",
        "promote": "it waits for an approval: use approve" if awaiting else None,
        "approve": None if awaiting else "it does not wait for an approval",
    }.get(verb)
    if problem is not None:
        raise click.ClickException(f"cannot {verb} {state.id}: {problem}")


def _live(store: GitEnvStore, tip: str | None, key: str) -> ExperimentState:
    namespace, _, name = key.partition("/")
    raw = store.read_file(tip, live_path(namespace, name)) if tip else None
    if raw is None:
        raise click.ClickException(
            f"{key} has no live run on {store.state_branch} (not started yet, or over: "
            f"see reconciler history {key})"
        )
    try:
        return from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{key}'s state document cannot be read: {exc}") from exc


def _author(given: str | None) -> tuple[str, str]:
    if given is None:
        found = git_identity()
        if found is None:
            raise click.UsageError(
                "who is this command by? Set git's user.name and user.email, or pass "
                "--author 'Name <email>'"
            )
        return found
    name, _, rest = given.partition("<")
    email = rest.rstrip().rstrip(">").strip()
    if not name.strip() or not email:
        raise click.UsageError(f"--author must read 'Name <email>', not {given!r}")
    return name.strip(), email


def _command(verb: str) -> click.Command:
    @click.command(name=verb, help=_HELP[verb])
    @click.argument("experiment")
    @click.option("--reason", default="", help="Why: recorded in the command and its answer.")
    @click.option("--id", "run_id", help="The Rollout-Id it is for (default: the live run's).")
    @click.option("--author", help="'Name <email>' (default: git's user.name and user.email).")
    @click.option(
        "--sign-key",
        type=click.Path(dir_okay=False, path_type=Path),
        help="SSH key to sign the commit with, as git commit -S does (default: git's "
        "user.signingkey when gpg.format is ssh and --sign is given).",
    )
    @click.option("--sign", is_flag=True, help="Sign with git's SSH user.signingkey.")
    @click.option(
        "--wait",
        type=float,
        default=0.0,
        show_default=True,
        help="Seconds to wait for the reconciler's answer (0: push and return).",
    )
    @repo_options
    def command(  # noqa: PLR0917 - click passes each option
        experiment: str,
        reason: str,
        run_id: str | None,
        author: str | None,
        sign_key: Path | None,
        sign: bool,
        wait: float,
        **options: Any,  # noqa: ANN401 - click passes options
    ) -> None:
        force = bool(options.pop("force", False))
        key = experiment.partition("@")[0]
        if key.count("/") != 1:
            raise click.UsageError(f"EXPERIMENT must read NAMESPACE/NAME, not {experiment!r}")
        who = _author(author)
        key_file = sign_key or (git_signing_key() if sign else None)
        if sign and key_file is None:
            raise click.UsageError(
                "--sign needs git's gpg.format=ssh and user.signingkey, or --sign-key"
            )
        signer = ssh_signer(key_file) if key_file else None
        with tempfile.TemporaryDirectory(prefix="reconciler-command-") as scratch:
            try:
                store = open_store(options, Path(scratch))
                heads = fetch_heads(store)
                del heads  # fetched for the branches' check; the push reads its own tip
                pushed = _push(
                    store, verb=verb, key=key, run_id=run_id, who=who, reason=reason,
                    force=force, signer=signer,
                )  # fmt: skip
                click.echo(f"{verb} for {pushed[1]} pushed as {pushed[0]} on {store.state_branch}")
                if wait > 0:
                    _await_answer(store, key, pushed[0], pushed[2], wait)
            except ReconcilerError as exc:
                raise click.ClickException(str(exc)) from exc

    if verb == "promote":
        command = click.option(
            "--force", is_flag=True, help="Promote even if the objectives were not met."
        )(command)
    return command


def _push(
    store: GitEnvStore,
    *,
    verb: str,
    key: str,
    run_id: str | None,
    who: tuple[str, str],
    reason: str,
    force: bool,
    signer: Callable[[bytes], bytes] | None,
) -> tuple[str, str, str]:
    """Push the command commit; (its id, the run it is for, its file's path)."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    namespace, _, name = key.partition("/")
    path = f"{COMMAND_PREFIX}/{namespace}/{name}/{stamp}-{verb}-{secrets.token_hex(3)}.json"
    target: list[str] = []

    def plan(current: str | None) -> list[CommitSpec]:
        state = _live(store, current, key)
        _check(verb, state, run_id)
        target[:] = [state.id]
        trailers = [
            (records.EXPERIMENT, state.key),
            (records.ID, state.id),
            (records.COMMAND, verb),
        ]
        if reason:
            trailers.append((records.REASON, reason.replace("\n", " ")[:500]))
        if force:
            trailers.append(("Rollout-Forced", "yes"))
        subject = f"{state.spec.target.rsplit('/', 1)[-1]}: {verb} asked by {who[0]}"
        content = command_file(
            verb, state.id, reason=reason, force=force, requested_at=now.isoformat()
        )
        message = format_message(subject, trailers, body=reason)
        return [CommitSpec(message, {path: content}, author=who, sign=signer)]

    result = store.update_branch(store.state_branch, plan)
    return result.commits[-1], target[0], path


def _await_answer(store: GitEnvStore, key: str, commit: str, path: str, wait: float) -> None:
    """Poll the state branch until the command's file is gone; print the answer."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        heads = store.fetch()
        if heads.state is None or store.blob_id(heads.state, path) is not None:
            continue
        for info in store.log(heads.state, hide=commit):
            if info.trailer(records.COMMAND_COMMIT) == commit or path in info.message:
                click.echo(f"answered in {info.id[:12]}: {info.subject}")
                return
        click.echo(f"answered on {store.state_branch} (see reconciler history {key})")
        return
    raise click.ClickException(f"no answer within {wait:g} s; the command stays pending")


COMMANDS = [_command(verb) for verb in ("pause", "resume", "abort", "promote", "approve")]
