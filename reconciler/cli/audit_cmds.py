"""``reconciler history`` and ``reconciler recover --dry-run``: the audit, from Git alone."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from reconciler.audit import Row, recovery_plan
from reconciler.audit import history as read_history
from reconciler.cli.repo_options import fetch_heads, open_store, repo_options
from reconciler.errors import ReconcilerError
from reconciler.gitstore.repo import GitEnvStore
from reconciler.ports import Heads


def fetch_store(options: dict[str, Any], scratch: Path) -> tuple[GitEnvStore, Heads]:
    """Open the Env repo named by ``repo_options``' values and fetch both branches."""
    try:
        store = open_store(options, scratch)
    except ReconcilerError as exc:
        raise click.ClickException(str(exc)) from exc
    return store, fetch_heads(store)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _verdicts(row: Row) -> str:
    if row.skipped is not None:
        seen = ",".join(f"{k}={v}" for k, v in (row.observed or {}).items()) or "nothing"
        return f"iteration {row.skipped} not judged (cluster had {seen})"
    return ",".join(f"{k}={v}" for k, v in row.verdicts.items()) or "-"


@click.command()
@click.argument("experiment")
@repo_options
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def history(experiment: str, output: str, **options: Any) -> None:  # noqa: ANN401
    """Every recorded transition of EXPERIMENT (namespace/name, or an id with @run)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-history-") as scratch:
        store, heads = fetch_store(options, Path(scratch))
        rows = read_history(store, heads.state, experiment) if heads.state else []
    if output == "json":
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        raise click.ClickException(f"nothing recorded for {experiment} on {store.state_branch}")
    _table(
        ("TIME", "COMMIT", "PHASE", "ITER", "WEIGHTS", "VERDICTS", "METRICS"),
        [
            (
                r.time[:19],
                r.commit[:12],
                r.phase + (" (held)" if r.held else ""),
                str(r.iteration),
                ",".join(f"{k}={v}" for k, v in r.weights.items()) or "-",
                _verdicts(r),
                "; ".join(
                    f"{version} "
                    + ",".join(
                        f"{m.rsplit('/', 1)[-1]}={'-' if v is None else f'{v:g}'}"
                        for m, v in values.items()
                    )
                    for version, values in r.metrics.items()
                )
                or "-",
            )
            for r in rows
        ],
    )


@click.command()
@repo_options
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what a fresh process would do (required: `reconciler run` acts).",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def recover(dry_run: bool, output: str, **options: Any) -> None:  # noqa: ANN401
    """What a fresh process would re-apply to the cluster and which outcomes it would redo.

    Only with --dry-run: recovery itself needs no command, `reconciler run` does it on its
    first tick (weights re-applied, unfinished outcomes redone).
    """
    if not dry_run:
        raise click.UsageError(
            "recover only shows what `reconciler run` does by itself on its first tick "
            "(re-apply the recorded weights, redo an unfinished outcome); there is nothing "
            "to run by hand. Add --dry-run to see it."
        )
    with tempfile.TemporaryDirectory(prefix="reconciler-recover-") as scratch:
        store, heads = fetch_store(options, Path(scratch))
        steps = recovery_plan(store, heads.main, heads.state)
    if output == "json":
        click.echo(
            json.dumps(
                [{"experiment": s.experiment, "action": s.action, **s.detail} for s in steps],
                indent=2,
            )
        )
        return
    if not steps:
        click.echo("nothing to recover: no live experiments")
        return
    _table(
        ("EXPERIMENT", "ACTION", "DETAIL"),
        [(s.experiment, s.action, json.dumps(s.detail, sort_keys=True)) for s in steps],
    )
