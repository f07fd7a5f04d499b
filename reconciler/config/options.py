"""The CLI's options for settings, made from the same declarations as everything else.

Every command that takes a setting (``run`` all of them, ``status`` the repo, its
credentials and the kubeconfig, ``metrics`` Prometheus, ``validate`` the limits) gets its
options here, so a setting has one flag, one environment variable and one syntax in every
command. The options carry no defaults and do not read the environment themselves: an unset
flag is None, and ``build`` fills it from the environment, the file or the default, naming
the source when a value is wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import click

from reconciler.config.declare import Field
from reconciler.config.settings import BY_NAME, FIELDS

F = TypeVar("F", bound=Callable[..., Any])

REPO = (
    "repo",
    "main_branch",
    "state_branch",
    "token_file",
    "username",
    "ssh_key_file",
    "known_hosts_file",
    "ca_file",
)
"""What a command that opens the Env repo reads (``status``, ``history``, ``recover``); not
``cache_dir``: those commands keep a scratch cache of their own unless told otherwise."""
PROMETHEUS = (
    "prometheus_url",
    "prometheus_token_file",
    "prometheus_ca_file",
    "prometheus_timeout",
    "prometheus_headers",
)
KUBERNETES = ("kubeconfig", "kube_context")
"""What a command that reads the cluster on the side needs (``status``, ``doctor``)."""


METAVARS = {"path": "PATH", "int": "INTEGER", "float": "NUMBER", "map": "NAME=VALUE"}


def click_options(only: Collection[str] | None = None) -> list[Callable[[Any], Any]]:
    """One click option per setting (or per setting in ``only``), without defaults."""
    return [_option(spec) for spec in FIELDS if only is None or spec.name in only]


def with_settings(*groups: Collection[str]) -> Callable[[F], F]:
    """A decorator adding the options of the settings in ``groups`` to a command."""
    names = {name for group in groups for name in group}
    options = click_options(names)

    def decorate(command: F) -> F:
        return functools.reduce(lambda f, option: option(f), reversed(options), command)

    return decorate


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among a command's parameters that the user gave (unset flags are None)."""
    return {
        name: value
        for name, value in values.items()
        if name in BY_NAME and value is not None and value != ()
    }


def _option(spec: Field) -> Callable[[Any], Any]:
    default = spec.default
    shown = ",".join(default) if isinstance(default, tuple) else default
    default_text = "" if default in (None, "", {}) else f" [default: {shown}]"
    help_text = f"{spec.help}{default_text} (env {spec.env}; file {spec.key})"
    common: dict[str, Any] = {"default": None, "help": help_text, "allow_from_autoenv": False}
    if spec.kind in METAVARS:
        common["metavar"] = METAVARS[spec.kind]
    if spec.kind == "bool":
        flags = [f"{spec.flag}/--no-{spec.flag[2:]}"]
        return click.option(*flags, spec.name, **common)
    if spec.kind in {"list", "map"}:
        singular = spec.flag.removesuffix("s")
        names = [singular, *(a for a in spec.aliases if a != singular)]
        return click.option(*names, spec.name, multiple=True, **common)
    return click.option(spec.flag, *spec.aliases, spec.name, **common)
