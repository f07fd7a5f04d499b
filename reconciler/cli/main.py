"""The ``reconciler`` command line: ``demo``, ``status`` (and, as they land, the others).

click parses flags and maps each to a ``RECONCILER_<COMMAND>_<OPTION>`` environment
variable (``auto_envvar_prefix``). Commands build their adapters here and hand them to the
library; no module below reads flags or the environment itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler import __version__, logs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe log event shown.",
)
@click.option("--log-json/--no-log-json", default=False, help="Log JSON lines (for a cluster).")
def cli(log_level: str, log_json: bool) -> None:
    """Progressive delivery whose only state store is the GitOps Env repo."""
    logs.configure(json=log_json, level=log_level)


@cli.command()
@click.option(
    "--scenario",
    type=click.Choice(["pass", "fail"]),
    default="pass",
    show_default=True,
    help="pass: the candidate is healthy and promoted; fail: its error rate is "
    "above the objective and it is rolled back.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep everything here for inspection (the Env repo is WORKDIR/env.git); "
    "default: a temporary directory, removed afterwards.",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Give up after this many seconds.",
)
def demo(scenario: str, workdir: Path | None, timeout: float) -> None:
    """Run a canary end to end against a local Env repo, with in-process adapters."""
    from reconciler.demo.scenario import run  # noqa: PLC0415 - keeps --help fast

    result = run(scenario, sys.stdout, workdir=workdir, timeout=timeout)
    verdict = "as expected" if result.ok else f"NOT as expected ({result.expected})"
    click.echo(f"\nscenario {scenario}: {result.outcome or 'unfinished'}, {verdict}")
    if workdir is not None:
        click.echo(f"inspect it: git --git-dir {result.workdir / 'env.git'} log --all --stat")
    sys.exit(0 if result.ok else 1)


def _register() -> None:
    from reconciler.cli.audit_cmds import history, recover  # noqa: PLC0415
    from reconciler.cli.doctor import doctor  # noqa: PLC0415
    from reconciler.cli.metrics_cmd import metrics  # noqa: PLC0415
    from reconciler.cli.report_cmd import report  # noqa: PLC0415
    from reconciler.cli.run import run  # noqa: PLC0415
    from reconciler.cli.status import status  # noqa: PLC0415
    from reconciler.cli.try_cmd import try_  # noqa: PLC0415
    from reconciler.cli.validate import validate  # noqa: PLC0415
    from reconciler.cli.watch_cmd import watch  # noqa: PLC0415

    cli.add_command(watch)

    for command in (run, status, validate, history, recover, metrics, doctor, try_, report):
        cli.add_command(command)
    from reconciler.cli.control_cmds import COMMANDS  # noqa: PLC0415

    for command in COMMANDS:
        cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    _register()
    cli(auto_envvar_prefix="RECONCILER")
