"""``reconciler status``: live and archived experiments, read from the state branch's tip."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from reconciler.cli.repo_options import open_store, repo_options
from reconciler.engine.state import ExperimentState, from_json
from reconciler.errors import ReconcilerError
from reconciler.gitstore.state_branch import ARCHIVE_DIR, LIVE_DIR
from reconciler.ports import EnvStore


def experiment_rows(store: EnvStore, tip: str) -> list[dict[str, Any]]:
    """One row per experiment on the state branch at ``tip``: live first, then archived."""
    rows = []
    for prefix in (LIVE_DIR, ARCHIVE_DIR):
        for path, _blob in sorted(store.list_files(tip, prefix)):
            try:
                state = from_json(store.read_file(tip, path) or b"")
            except (ValueError, KeyError, TypeError) as exc:
                raise click.ClickException(
                    f"{path} at {tip[:12]}: not a state document: {exc}"
                ) from exc
            rows.append(_row(state, archived=prefix == ARCHIVE_DIR))
    return rows


def _row(state: ExperimentState, *, archived: bool) -> dict[str, Any]:
    return {
        "id": state.id,
        "target": state.spec.target,
        "phase": state.phase.value,
        "iteration": state.iteration,
        "weights": dict(state.weights),
        "winner": state.winner,
        "outcome_commit": state.outcome_commit,
        "archived": archived,
    }


@click.command()
@repo_options
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def status(output: str, **options: Any) -> None:  # noqa: ANN401 - click passes options
    """List live and archived experiments recorded on the state branch."""
    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as scratch:
        try:
            store = open_store(options, Path(scratch))
            heads = store.fetch()
        except ReconcilerError as exc:
            raise click.ClickException(str(exc)) from exc
        rows = experiment_rows(store, heads.state) if heads.state else []
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no experiments recorded on {store.state_branch}")
        return
    header = ("ID", "TARGET", "PHASE", "ITER", "WEIGHTS", "WINNER", "OUTCOME")
    table = [header] + [
        (
            r["id"],
            r["target"],
            r["phase"],
            str(r["iteration"]),
            ",".join(f"{k}={v}" for k, v in r["weights"].items()),
            r["winner"] or "-",
            (r["outcome_commit"] or "-")[:12],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
