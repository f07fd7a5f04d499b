"""``reconciler report``: write one run's report (HTML or JSON) from the Env repo alone."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from reconciler.cli.audit_cmds import fetch_store
from reconciler.cli.repo_options import repo_options
from reconciler.report import html, model
from reconciler.report.collect import ReportNotFoundError, gather

_SUFFIXES = {".html": "html", ".htm": "html", ".json": "json"}


@click.command()
@click.argument("experiment", metavar="NAMESPACE/NAME")
@click.option(
    "--id",
    "run",
    metavar="ROLLOUT_ID",
    help="The run (its Rollout-Id, or the part after '@'); default: the live run, "
    "else the one recorded last.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File to write (report.html, report.json), or - for standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "json"]),
    help="Default: from the output file's suffix.",
)
@repo_options
def report(
    experiment: str,
    run: str | None,
    output: Path,
    fmt: str | None,
    **options: Any,  # noqa: ANN401
) -> None:
    """Write a report of one run of NAMESPACE/NAME, made from Git alone.

    One self-contained HTML file (inline charts; it loads nothing when opened): weights
    and each metric per version over iterations with the objectives' limits, verdicts,
    and who and which commits started, commanded, decided and ended the run. With a
    .json output, the same data for tooling.
    """
    fmt = fmt or _SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise click.UsageError(
            f"cannot tell the format from {str(output)!r}: name it .html or .json, "
            "or give --format html|json"
        )
    with tempfile.TemporaryDirectory(prefix="reconciler-report-") as scratch:
        store, heads = fetch_store(options, Path(scratch))
        try:
            made = model.build(gather(store, heads, experiment, run))
        except (ReportNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    text = json.dumps(made.as_dict(), indent=2) + "\n" if fmt == "json" else html.render(made)
    data = text.encode()
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    output.write_bytes(data)
    judged = len(made.iterations)
    click.echo(
        f"wrote {output} ({len(data):,} bytes): {made.run_id}, {made.phase}, "
        f"{judged} iteration{'s' if judged != 1 else ''}",
        err=True,
    )
