"""``reconciler metrics list`` and ``reconciler metrics query``: see and try metrics.

``list`` prints the builtin library (and the Metric documents of ``--file``) with their
queries. ``query`` evaluates one metric for one version exactly as an experiment
iteration would (same catalog, same escaping, same retries, same ``no-data`` and
``unavailable`` outcomes), so a metric definition can be debugged before an experiment
depends on it. Exit status of ``query``: 0 for ``ok`` and ``no-data``, 1 for
``unavailable``, 2 for usage errors. The ``--prometheus-*`` options are ``run``'s settings
(same flags, ``RECONCILER_PROMETHEUS_*`` variables, syntax and defaults).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler import config
from reconciler.cli.settings import settings_from
from reconciler.config.options import PROMETHEUS
from reconciler.metrics.builtin import ITER8_SYSTEM, ITER8_SYSTEM_MAP, LIBRARY_NAMES
from reconciler.metrics.catalog import Catalog
from reconciler.metrics.prometheus import (
    UNAVAILABLE,
    PrometheusClient,
    PrometheusConfig,
    PrometheusMetrics,
)
from reconciler.spec.metric import MetricDefinition

F = TypeVar("F", bound=Callable[..., Any])


def prometheus_config(options: dict[str, Any]) -> PrometheusConfig:
    """The ``PrometheusConfig`` the ``--prometheus-*`` options (and environment) describe."""
    settings = settings_from(options, PROMETHEUS)
    try:
        return PrometheusConfig.from_settings(settings.prometheus)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _catalog(files: Iterable[Path], iter8_system_library: str) -> Catalog:
    contents = []
    for path in files:
        try:
            contents.append((str(path), path.read_bytes()))
        except OSError as exc:
            raise click.UsageError(f"{path}: cannot read: {exc.strerror}") from exc
    catalog = Catalog.from_files(contents, iter8_system_library=iter8_system_library)
    for problem in catalog.problems:
        click.echo(str(problem), err=True)
    return catalog


def _files_option(command: F) -> F:
    return click.option(
        "--file",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="YAML file with Metric documents (repeatable).",
    )(command)


def _iter8_option(command: F) -> F:
    return click.option(
        "--iter8-system-library",
        type=click.Choice(sorted(LIBRARY_NAMES)),
        default="istio",
        show_default=True,
        help=f"Builtin library that Iter8's {ITER8_SYSTEM}/... metrics map to.",
    )(command)


@click.group()
def metrics() -> None:
    """Builtin metrics and Metric documents: list them, or evaluate one against Prometheus."""


@metrics.command("list")
@_files_option
@_iter8_option
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_metrics(files: tuple[Path, ...], iter8_system_library: str, output: str) -> None:
    """Print every builtin metric (and those in --file) with its PromQL query."""
    catalog = _catalog(files, iter8_system_library)
    definitions = [*catalog.builtin(), *catalog.documents]
    aliases = {
        f"{ITER8_SYSTEM}/{theirs}": f"{iter8_system_library}/{ours}"
        for theirs, ours in ITER8_SYSTEM_MAP.items()
    }
    if output == "json":
        click.echo(
            json.dumps(
                {"metrics": [_row(d) for d in definitions], "iter8_system": aliases}, indent=2
            )
        )
        return
    width = max(len(d.ref) for d in definitions)
    for definition in definitions:
        units = definition.units or "-"
        source = "builtin" if definition.builtin else str(definition.location or definition.path)
        click.echo(
            f"{definition.ref.ljust(width)}  {definition.metric_type.value:<7}  {units:<12}  "
            f"{definition.description or ''} [{source}]".rstrip()
        )
        query = definition.query.text if definition.query else _mock_text(definition)
        click.echo("    " + query.replace("\n", "\n    ") + "\n")
    click.echo("Iter8's builtin metrics map to (same meaning, measured on live traffic):")
    for theirs, ours in aliases.items():
        click.echo(f"    {theirs} -> {ours}")


def _row(definition: MetricDefinition) -> dict[str, Any]:
    return {
        "metric": definition.ref,
        "type": definition.metric_type.value,
        "units": definition.units,
        "description": definition.description,
        "sample_size": definition.sample_size,
        "query": definition.query.text if definition.query else None,
        "mock": dict(definition.mock) or None,
        "source": "builtin" if definition.builtin else str(definition.location or definition.path),
    }


def _mock_text(definition: MetricDefinition) -> str:
    levels = ", ".join(f"{name}={level:g}" for name, level in definition.mock)
    return f"(mock: {levels})"


@metrics.command("query")
@click.argument("metric")
@click.option("--version", "version", required=True, help="Version name ($name).")
@click.option("--namespace", required=True, help="Namespace ($namespace).")
@click.option(
    "--elapsed",
    type=click.FloatRange(min=0),
    required=True,
    help="Seconds the experiment has run (${elapsedTime}).",
)
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="A version variable (repeatable); a 'namespace' variable overrides --namespace.",
)
@_files_option
@_iter8_option
@config.with_settings(PROMETHEUS)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def query_metric(
    metric: str,
    *,
    version: str,
    namespace: str,
    elapsed: float,
    variables: tuple[str, ...],
    files: tuple[Path, ...],
    iter8_system_library: str,
    output: str,
    **options: Any,  # noqa: ANN401 - the --prometheus-* options
) -> None:
    """Evaluate METRIC for one version, the way an experiment iteration would."""
    pairs = {}
    for variable in variables:
        name, equals, value = variable.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{variable!r} is not NAME=VALUE", param_hint="--var")
        pairs[name] = value
    catalog = _catalog(files, iter8_system_library)
    with PrometheusClient(prometheus_config(options)) as client:
        evaluation = PrometheusMetrics(client, catalog).evaluate(
            metric, version=version, namespace=namespace, elapsed_seconds=elapsed, variables=pairs
        )
    if output == "json":
        click.echo(json.dumps(evaluation.as_json(), indent=2))
        if evaluation.reason:
            click.echo(f"{evaluation.result.status}: {evaluation.reason}", err=True)
    else:
        result = evaluation.result
        rows = [
            ("metric", metric),
            ("version", version),
            ("status", result.status),
            ("value", "-" if result.value is None else f"{result.value:g}"),
            ("sample size", "-" if result.sample_size is None else str(result.sample_size)),
            ("query", evaluation.query or "-"),
        ]
        if evaluation.reason:
            rows.append(("reason", evaluation.reason))
        for label, value in rows:
            click.echo(f"{label:<12} {value}")
    sys.exit(1 if evaluation.result.status == UNAVAILABLE else 0)
