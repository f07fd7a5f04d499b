"""Settings for a command that reads some of ``run``'s: its options, then the environment."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import click

from reconciler import config


def settings_from(
    options: Mapping[str, Any], *groups: Collection[str], environ: Mapping[str, str] | None = None
) -> config.Settings:
    """The settings in ``groups`` from a command's options and the environment.

    Raises:
        click.UsageError: a setting is missing or invalid (the message names it).
    """
    names = {name for group in groups for name in group}
    try:
        return config.build(
            flags=config.given(options),
            environ=os.environ if environ is None else environ,
            only=names,
        )
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
