"""``reconciler validate FILE...``: check Experiment and Metric files offline.

Every problem prints as ``FILE:LINE:COLUMN: error|warning: message``; ``-o json`` prints the
same as a list of objects. Exit status: 0 without errors, 1 with errors, 2 when the files
could not be checked (a file missing or unreadable, a limit set wrong); an internal error (a
bug) prints one line asking for a bug report and exits 2, never a traceback. Metric
references must name a builtin metric or a Metric document in one of the given files. The
loaders' limits (file size, documents, aliases, nesting) are the ``run`` command's settings,
taken from the same flags and ``RECONCILER_*`` variables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from reconciler import config
from reconciler.errors import Location
from reconciler.metrics.builtin import unnamed_versions
from reconciler.metrics.catalog import Catalog, MetricNotFoundError
from reconciler.spec import loader, metric
from reconciler.spec.limits import Limits
from reconciler.spec.loader import MetricReference, Problem, load_experiments
from reconciler.spec.metric import MetricDefinition, load_metrics
from reconciler.spec.model import Experiment
from reconciler.spec.unread import survey


def validate_files(
    files: list[tuple[str, bytes]], limits: Limits | None = None, *, strict: bool = False
) -> list[Problem]:
    """Every problem in these files, in file and line order, with the skipped documents.

    A document that is neither an Experiment nor a Metric is a note (it is skipped).
    ``spec.gitops`` paths are checked against the Git work tree that holds each file (the
    current directory when there is none), as the promotion checks them. ``strict``: the
    unknown fields of Iter8 documents are errors, as they always are in ours.
    """
    definitions: list[MetricDefinition] = []
    problems: list[Problem] = []
    objects: list[tuple[str, str | None, str]] = []
    for path, data in files:
        metrics = load_metrics(path, data, limits=limits, strict=strict)
        definitions.extend(metrics.metrics)
        problems.extend(metrics.problems)
        surveyed = survey(path, data, READ, limits, strict=strict)
        problems.extend(surveyed.unread)
        objects.extend(surveyed.objects)
    catalog = Catalog(definitions)
    problems.extend(catalog.problems)
    for path, data in files:
        repo_path = in_repository(Path(path))
        result = load_experiments(path, data, repo_path=repo_path, limits=limits, strict=strict)
        problems.extend(result.problems)
        for experiment in result.experiments:
            problems.extend(_unnamed_workloads(experiment, objects))
        problems.extend(_metric_problems(result.references, catalog))
    unique = dict.fromkeys(problems)  # a file that is not YAML is reported by both loaders
    return sorted(
        unique, key=lambda p: (p.location.file, p.location.line, p.location.column, p.message)
    )


READ = {"Experiment": loader.API_VERSIONS, "Metric": metric.API_VERSIONS}
"""The kinds validate reads, and the apiVersions of each."""


def in_repository(path: Path) -> str:
    """``path`` relative to the top of the Git work tree holding it (or the current dir)."""
    absolute = path.resolve()
    for parent in absolute.parents:
        if (parent / ".git").exists():
            return absolute.relative_to(parent).as_posix()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.name


def _metric_problems(references: Iterable[MetricReference], catalog: Catalog) -> list[Problem]:
    problems = []
    for reference in references:
        try:
            catalog.resolve(reference.metric, reference.namespace)
        except MetricNotFoundError as exc:
            problems.append(
                Problem(
                    reference.location,
                    "error",
                    f"unknown metric in '{reference.field}': {exc}; name a builtin metric "
                    "(reconciler metrics list) or pass the file that defines it",
                )
            )
    return problems


def _unnamed_workloads(
    experiment: Experiment, objects: list[tuple[str, str | None, str]]
) -> list[Problem]:
    """A warning at each version the builtin metrics would find no data for."""
    problems = []
    for unnamed in unnamed_versions(experiment, objects):
        field = (
            "spec.versionInfo.baseline"
            if unnamed.index == 0
            else f"spec.versionInfo.candidates[{unnamed.index - 1}]"
        )
        where = experiment.locations.get(f"{field}.name", Location(experiment.path))
        kind, name = unnamed.kind, unnamed.version
        problems.append(
            Problem(
                where,
                "warning",
                f"no {kind} named '{name}' among the given files (they have "
                f"{', '.join(unnamed.present[:10])}): the builtin metrics select a version's "
                f"series by its {kind}'s name, so on a real mesh '{name}' would get no "
                f"data; name the version after its {kind}",
            )
        )
    return problems


def _with_limit_options(command: Any) -> Any:  # noqa: ANN401 - click's decorators
    # Not max_experiment_files: validate reads the files it is given, not a repository.
    per_file = [name for name in config.LIMIT_SETTINGS if name != "max_experiment_files"]
    return config.with_settings(per_file)(command)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--strict",
    is_flag=True,
    help="Unknown fields of Iter8 documents are errors too (always, in reconciler/v1alpha1).",
)
@_with_limit_options
def validate(files: tuple[Path, ...], output: str, strict: bool, **limit_flags: Any) -> None:  # noqa: ANN401
    """Check Experiment and Metric files offline (several documents per file allowed).

    Prints FILE:LINE:COLUMN: error|warning|note: message (-o json: a list). A note says
    what was skipped (a document of another kind). Exit status: 0 no error, 1 errors, 2 the
    files could not be checked.
    """
    try:
        limits = config.build(flags=config.given(limit_flags), only=config.LIMIT_SETTINGS).limits
    except config.ConfigError as exc:
        click.echo(f"reconciler validate: {exc}", err=True)
        sys.exit(2)
    contents = []
    for path in files:
        try:
            contents.append((str(path), path.read_bytes()))
        except OSError as exc:
            click.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            sys.exit(2)
    try:
        problems = validate_files(contents, limits, strict=strict)
    except Exception as exc:  # noqa: BLE001 - a bug must not look like a verdict on the files
        click.echo(
            "reconciler validate: internal error, the files were not checked "
            f"({type(exc).__name__}: {str(exc)[:200]}); please report this bug with the files "
            "that caused it",
            err=True,
        )
        sys.exit(2)
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "file": p.location.file,
                        "line": p.location.line,
                        "column": p.location.column,
                        "severity": p.severity,
                        "message": p.message,
                    }
                    for p in problems
                ],
                indent=2,
            )
        )
    else:
        for problem in problems:
            click.echo(str(problem))
    sys.exit(1 if any(p.severity == "error" for p in problems) else 0)
