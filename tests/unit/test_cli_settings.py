"""Every command takes a setting the same way: one flag, one variable, one syntax, one default."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli.main import _register, cli
from reconciler.cli.metrics_cmd import prometheus_config
from reconciler.config import BY_NAME, build

NOT_THE_SETTING = {
    ("status", "cache_dir"),  # the read-only commands keep a scratch cache of their own
    ("history", "cache_dir"),
    ("recover", "cache_dir"),
    ("try", "cache_dir"),
    ("watch", "cache_dir"),
    ("watch", "interval"),  # how often the view fetches (5 s), not the reconciler's timer
    ("report", "cache_dir"),
    *(
        (verb, "cache_dir")  # the commands people send: a scratch cache too
        for verb in ("pause", "resume", "abort", "promote", "approve")
    ),
    ("metrics query", "namespace"),  # the experiment's ($namespace), not the Leases'
}


def _commands() -> dict[str, click.Command]:
    _register()
    found: dict[str, click.Command] = {}
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def test_a_setting_has_the_same_flags_and_help_in_every_command_that_takes_it() -> None:
    seen: dict[str, tuple[tuple[str, ...], str | None]] = {}
    takers: dict[str, list[str]] = {}
    for command_name, command in _commands().items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name not in BY_NAME:
                continue
            if (command_name, param.name) in NOT_THE_SETTING:
                continue
            spec = BY_NAME[param.name]
            declared = (tuple(param.opts) + tuple(param.secondary_opts), param.help)
            assert seen.setdefault(param.name, declared) == declared, command_name
            assert spec.env in (param.help or ""), (command_name, param.name)
            assert not param.allow_from_autoenv  # the one variable is RECONCILER_<NAME>
            takers.setdefault(param.name, []).append(command_name)
    assert {"run", "status", "history", "recover", "try"} <= set(takers["repo"])
    assert {"run", "metrics query"} <= set(takers["prometheus_url"])
    assert {"run", "status", "doctor"} <= set(takers["kube_context"])


def test_metrics_query_reads_prometheus_as_run_does(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {
        "RECONCILER_PROMETHEUS_URL": "http://prom:9090",
        "RECONCILER_PROMETHEUS_HEADERS": "X-Scope-OrgID=team-a",
        "RECONCILER_PROMETHEUS_TOKEN_FILE": "/var/run/token",
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    from_run = build(flags={"repo": "/env"}, environ=environ).prometheus
    from_metrics = prometheus_config({})
    assert from_metrics.base_url == from_run.url
    assert from_metrics.headers == tuple(from_run.headers.items()) == (("X-Scope-OrgID", "team-a"),)
    assert from_metrics.bearer_token_file == from_run.token_file == Path("/var/run/token")
    assert from_metrics.timeout_seconds == from_run.timeout == 10.0


def test_flags_other_commands_used_before_still_work() -> None:
    config = prometheus_config(
        {"prometheus_url": "http://prom:9090", "prometheus_headers": ("A: b", "C=d")}
    )
    assert config.headers == (("A", "b"), ("C", "d"))
    query = _commands()["metrics query"]
    (token,) = [p for p in query.params if p.name == "prometheus_token_file"]
    assert "--prometheus-bearer-token-file" in token.opts
    (context,) = [p for p in _commands()["doctor"].params if p.name == "kube_context"]
    assert {"--kube-context", "--context"} <= set(context.opts)


def test_a_command_without_its_repo_says_how_to_give_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_REPO", raising=False)
    result = CliRunner().invoke(_commands()["status"], [])
    assert result.exit_code == 2
    assert "no Env repo: give --repo or RECONCILER_REPO" in result.output
