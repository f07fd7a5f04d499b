"""``reconciler run``: every setting as a flag, a RECONCILER_* variable, or a config file key."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.config import FIELDS, given, with_settings
from reconciler.errors import ReconcilerError


@click.command(context_settings={"max_content_width": 100})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="RECONCILER_CONFIG",
    help="YAML config file (env RECONCILER_CONFIG); watched and reloaded when it "
    "changes. Precedence: flags > environment > file > defaults.",
)
@click.option("--once", is_flag=True, help="Run a single tick and exit (status 1 if it failed).")
@with_settings([f.name for f in FIELDS])
def run(config_file: Path | None, once: bool, **flags: Any) -> None:  # noqa: ANN401
    """Reconcile the Env repo: fetch, plan, record on the state branch, act."""
    from reconciler.runner import Runner, Sources  # noqa: PLC0415 - keeps --help fast

    try:
        runner = Runner(Sources(given(flags), dict(os.environ), config_file))
    except ReconcilerError as exc:
        raise click.ClickException(str(exc)) from exc

    def terminate(*_: object) -> None:
        runner.stop.set()
        runner.request_tick()

    signal.signal(signal.SIGTERM, terminate)
    try:
        status = runner.run(once=once)
    except KeyboardInterrupt:
        status = 0
    sys.exit(status)
