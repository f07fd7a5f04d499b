"""``reconciler try --repo PATH_OR_URL``: your Env repo's experiments, run on a scratch copy.

The cluster and the metrics are simulated; your repo is only read, never pushed to.

Exit status: 0 every experiment reached an outcome, 1 one did not (or the trial found
nothing to run), 2 the repo or a file could not be read.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from reconciler.cli.repo_options import open_store, repo_options, require_branches
from reconciler.cli.validate import in_repository
from reconciler.errors import ReconcilerError
from reconciler.spec.limits import Limits
from reconciler.spec.yamldoc import load_documents

MAX_FILES = 5000
"""YAML files read from main: a bound on what a hostile or huge repo costs."""
YAML_SUFFIXES = (".yaml", ".yml")


@click.command(name="try")
@repo_options
@click.option(
    "--experiment",
    help="Run only this experiment file: a path in the repo, or a local file added to the "
    "scratch copy at its place in its Git work tree.",
)
@click.option(
    "--profile",
    default="good",
    show_default=True,
    help="good: every version healthy; bad: every candidate failing; or a YAML file "
    "mapping each version to errorRate, meanLatencyMs, p95LatencyMs, reward.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the scratch copy here (WORKDIR/env.git); default: removed at the end.",
)
def try_(experiment: str | None, profile: str, workdir: Path | None, **options: Any) -> None:  # noqa: ANN401
    """Run your Env repo's experiments on a scratch copy, with simulated traffic and metrics.

    Prints each iteration, what a real cluster would need that the repo lacks, the outcome
    commit and both branches' logs. Exit status: 0 every experiment ended, 1 not, 2 the
    repo or a file could not be read.
    """
    from reconciler.demo.trial import TrialError, run_trial  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="reconciler-try-") as scratch:
        try:
            store = open_store(options, Path(scratch))
            heads = store.fetch()
            require_branches(store, heads, state=False)
            main = heads.main or ""
            files = _yaml_files(store, main)
            source = f"{store.url} ({store.main_branch} at {main[:12]})"
        except ReconcilerError as exc:
            click.echo(f"try: cannot read the repo: {exc}", err=True)
            sys.exit(2)
        only = None
        if experiment is not None:
            only = _experiment(experiment, files)
        chosen = _profile(profile)
        where = workdir or Path(scratch) / "trial"
        where.mkdir(parents=True, exist_ok=True)
        if (where / "env.git").exists():
            raise click.ClickException(f"{where / 'env.git'} exists; give an empty --workdir")
        try:
            result = run_trial(files, source, sys.stdout, workdir=where, profile=chosen, only=only)
        except TrialError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo("")
    for key, outcome in sorted(result.outcomes.items()):
        click.echo(f"{key}: {outcome}")
    if not result.ended:
        click.echo(f"{result.experiments - len(result.outcomes)} experiment(s) did not end")
    kept = f"; inspect it: git --git-dir {result.remote} log --all" if workdir else ""
    click.echo(f"nothing was pushed to {store.url}{kept}")
    sys.exit(0 if result.ended else 1)


def _profile(given: str) -> Any:  # noqa: ANN401 - a profile name or Profile per version
    """``good``/``bad``, or the profiles a file gives (exit 2 when it cannot be read)."""
    from reconciler.demo.trial import PROFILES, TrialError, load_profile  # noqa: PLC0415

    if given in PROFILES:
        return given
    try:
        return load_profile(given, Path(given).read_bytes())
    except OSError as exc:
        click.echo(f"try: cannot read the profile {given}: {exc.strerror}", err=True)
        sys.exit(2)
    except TrialError as exc:
        raise click.ClickException(str(exc)) from None


def _yaml_files(store: Any, main: str) -> dict[str, bytes]:  # noqa: ANN401 - a GitEnvStore
    """Main's YAML files that parse within the loaders' limits (others are reported)."""
    paths = [p for p, _blob in store.list_files(main) if p.endswith(YAML_SUFFIXES)]
    if len(paths) > MAX_FILES:
        raise click.ClickException(f"main has {len(paths):,} YAML files; try reads {MAX_FILES:,}")
    files = {}
    for path in paths:
        data = store.read_file(main, path) or b""
        problem = load_documents(path, data, Limits())[2]
        if problem is not None:
            click.echo(f"{problem} (left out of the trial)")
            continue
        files[path] = data
    return files


def _experiment(given: str, files: dict[str, bytes]) -> str:
    """The repo path of ``--experiment``; a local file is added to ``files`` there."""
    if given in files:
        return given
    local = Path(given)
    try:
        data = local.read_bytes()
    except OSError as exc:
        raise click.ClickException(
            f"--experiment {given}: neither a YAML file on main nor a readable local file "
            f"({exc.strerror})"
        ) from None
    path = in_repository(local)
    files[path] = data
    return path
