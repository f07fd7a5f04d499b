"""``reconciler status``: live and archived experiments, from the state branch's tip.

It also lists the problems of main's experiment and Metric files (what the loop skips and
reports), and any file on the state branch that is not a state document.

From Git alone it says what each experiment records: its weights, whether they were
confirmed on the cluster (``applied``, and when), whether it is held, paused or awaiting
an approval (which gate, since when, when it times out), and the last command it
answered. With
``--kubeconfig`` it also reads the weights the cluster carries now (one request per kind
and namespace, as the loop does) and says, per live experiment, whether they are the
recorded ones, and if not what the cluster holds and who wrote it.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconciler import config, live_view
from reconciler.cli.repo_options import fetch_heads, open_store, repo_options
from reconciler.cli.settings import settings_from
from reconciler.cluster.client import KubeSettings, connect
from reconciler.cluster.kube import KubeCluster
from reconciler.config.options import KUBERNETES
from reconciler.controller.discovery import Discovery
from reconciler.controller.isolation import describe
from reconciler.engine import traffic
from reconciler.engine.control import CommandRecord
from reconciler.engine.state import ExperimentState, from_json
from reconciler.errors import ReconcilerError
from reconciler.gitstore.state_branch import ARCHIVE_DIR, LIVE_DIR
from reconciler.live_view import Observed
from reconciler.ports import Cluster, EnvStore


def experiment_rows(
    store: EnvStore, tip: str, cluster: Cluster | None = None, *, now: float | None = None
) -> list[dict[str, Any]]:
    """One row per experiment on the state branch at ``tip``: live first, then archived.

    With ``cluster``, each live row says what the cluster carries (``observed``). A file
    there that is not a state document is a row of kind ``invalid-state`` with the error.
    """
    now = time.time() if now is None else now
    rows = []
    live: list[ExperimentState] = []
    for prefix in (LIVE_DIR, ARCHIVE_DIR):
        for path, _blob in sorted(store.list_files(tip, prefix)):
            try:
                state = from_json(store.read_file(tip, path) or b"")
            except Exception as exc:  # noqa: BLE001 - a hand-edited state branch: show it, list the rest
                error = f"not a state document: {describe(exc)}"
                rows.append({"kind": "invalid-state", "path": path, "error": error})
                continue
            if prefix == LIVE_DIR:
                live.append(state)
            rows.append(_row(state, archived=prefix == ARCHIVE_DIR, now=now))
    if cluster is not None:
        _observe(rows, live, cluster)
    return rows


def problem_rows(store: EnvStore, main: str) -> list[dict[str, Any]]:
    """One row per problem in the experiment and Metric files on main at ``main``.

    The loop reads the same files with the same code: a file with an error here is one the
    running reconciler skips (and reports once), while the others go on.
    """
    scan = Discovery(store).scan(main)
    return [
        {
            "kind": "problem",
            "file": problem.location.file,
            "line": problem.location.line or None,
            "severity": problem.severity,
            "message": problem.message,
        }
        for _blob, problem in scan.problems
    ]


def _row(state: ExperimentState, *, archived: bool, now: float) -> dict[str, Any]:
    return {
        "kind": "experiment",
        "id": state.id,
        "target": state.spec.target,
        "started": _iso(state.started_at),
        "age_seconds": max(0, round(now - state.started_at)),
        "ran_seconds": round(state.updated_at - state.started_at) if state.phase.final else None,
        "phase": state.phase.value,
        "iteration": state.iteration,
        "weights": dict(state.weights),
        "applied": state.applied,
        "applied_at": _iso(state.applied_at),
        "held": state.held,
        "winner": state.winner,
        "outcome_commit": state.outcome_commit,
        "archived": archived,
        "needs": _needs(state) if not archived else {},
        "observed": None,
        "paused": _paused(state),
        "gate": _gate(state, now),
        "last_command": _command(state.commands[-1]) if state.commands else None,
    }


def _paused(state: ExperimentState) -> dict[str, Any] | None:
    """Who paused the run, when, why (None: not paused)."""
    record = state.paused
    if record is None:
        return None
    return {
        "by": record.author,
        "since": _iso(record.time),
        "reason": record.reason,
        "commit": record.commit,
    }


def _gate(state: ExperimentState, now: float) -> dict[str, Any] | None:
    """The approval the run waits for (None: none), and when it times out."""
    gate = state.gate
    if gate is None:
        return None
    approval = state.spec.approval
    return {
        "before": gate.before,
        "winner": gate.winner,
        "since": _iso(gate.opened_at),
        "times_out_at": _iso(gate.opened_at + approval.timeout_seconds),
        "on_timeout": approval.on_timeout.value,
        "text": live_view.gate_text(state, now),
    }


def _command(record: CommandRecord) -> dict[str, Any]:
    return {
        "command": record.command,
        "by": record.author,
        "at": _iso(record.time),
        "result": record.result,
        "why": record.why,
        "reason": record.reason,
        "forced": record.forced,
        "commit": record.commit,
    }


def _needs(state: ExperimentState) -> dict[str, int]:
    """Version to the requests it still needs, by the last judged iteration's evidence."""
    if state.evidence is None or state.phase.final:
        return {}
    return {v.version: v.needs for v in state.evidence.versions if v.needs}


def observe(live: list[ExperimentState], cluster: Cluster) -> dict[str, Observed]:
    """What the cluster carries for each live run, by run id (one read per kind and namespace).

    ``status`` and ``watch`` read it the same way the loop does.
    """
    readings = cluster.read_weights(traffic.refs(live))
    owner = traffic.owners(live)
    out = {}
    for state in live:
        found = traffic.assess(state, readings, owner)
        out[state.id] = Observed(
            status=found.status,
            weights=dict(found.seen),
            detail=found.error or traffic.describe(found) or None,
        )
    return out


def _observe(rows: list[dict[str, Any]], live: list[ExperimentState], cluster: Cluster) -> None:
    """Add what the cluster carries to each live row."""
    by_id = {row["id"]: row for row in rows if not row["archived"]}
    for run, found in observe(live, cluster).items():
        by_id[run]["observed"] = {
            "status": found.status,
            "weights": dict(found.weights),
            "detail": found.detail,
        }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@click.command()
@repo_options
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@config.with_settings(KUBERNETES)
def status(output: str, **options: Any) -> None:  # noqa: ANN401 - click passes options
    """List live and archived experiments recorded on the state branch."""
    cluster: KubeCluster | None = None
    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as scratch:
        try:
            store = open_store(options, Path(scratch))
            heads = fetch_heads(store)
            kube = settings_from(options, KUBERNETES).kubernetes
            if kube.kubeconfig is not None:  # without one, status reads Git alone
                cluster = KubeCluster(connect(KubeSettings.from_settings(kube)))
        except ReconcilerError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            rows = experiment_rows(store, heads.state, cluster) if heads.state else []
            rows += problem_rows(store, heads.main) if heads.main else []
        except ReconcilerError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            if cluster is not None:
                cluster.kube.close()
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    _print(rows, store, observed=cluster is not None)


def _print(rows: list[dict[str, Any]], store: EnvStore, *, observed: bool) -> None:
    experiments = [r for r in rows if r["kind"] == "experiment"]
    if experiments:
        _print_table(experiments, observed=observed)
    else:
        click.echo(f"no experiments recorded on {store.state_branch}")
    for r in rows:
        if r["kind"] == "invalid-state":
            click.echo(f"\n{store.state_branch}:{r['path']}: {r['error']}")
    problems = [r for r in rows if r["kind"] == "problem"]
    if problems:
        click.echo(f"\nProblems in the experiment files on {store.main_branch}:")
    for r in problems:
        where = f"{r['file']}:{r['line']}" if r["line"] else r["file"]
        click.echo(f"  {where}: {r['severity']}: {r['message']}")


def _print_table(rows: list[dict[str, Any]], *, observed: bool) -> None:
    header: tuple[str, ...] = ("ID", "TARGET", "STARTED", "AGE", "PHASE", "ITER", "WEIGHTS")
    header = (*header, "APPLIED", "WINNER", "OUTCOME", *(("CLUSTER",) if observed else ()))
    table = [header]
    for r in rows:
        cells: tuple[str, ...] = (
            r["id"],
            r["target"],
            r["started"] or "-",
            live_view.duration(r["age_seconds"]),
            r["phase"]
            + (" (paused)" if r["paused"] else "")
            + (f" before {r['gate']['before']}" if r["gate"] else "")
            + (" (held)" if r["held"] else "")
            + (
                f" after {live_view.duration(r['ran_seconds'])}"
                if r["ran_seconds"] is not None
                else ""
            ),
            str(r["iteration"]),
            _pairs(r["weights"]),
            (r["applied_at"] or "yes") if r["applied"] else "not yet",
            r["winner"] or "-",
            (r["outcome_commit"] or "-")[:12],
        )
        table.append((*cells, _observed(r["observed"])) if observed else cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for r in rows:
        if r["held"]:
            click.echo(f"\n{r['id']} is held: {r['held']}")
        if r["paused"]:
            paused = r["paused"]
            why = f": {paused['reason']}" if paused["reason"] else ""
            click.echo(f"\n{r['id']} is paused by {paused['by']} since {paused['since']}{why}")
        if r["gate"]:
            click.echo(f"\n{r['id']} is awaiting approval {r['gate']['text']}")
        if r["last_command"]:
            c = r["last_command"]
            why = f" ({c['why']})" if c["why"] else ""
            click.echo(
                f"\n{r['id']}: last command {c['command']} by {c['by']} at {c['at']}: "
                f"{c['result']}{why}"
            )
        for version, more in (r.get("needs") or {}).items():
            click.echo(f"\n{r['id']}: not enough data yet: {version} needs ~{more:,} more requests")
        if r["observed"] and r["observed"]["detail"]:
            click.echo(f"\n{r['id']}: {r['observed']['detail']}")


def _pairs(weights: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in weights.items()) or "-"


def _observed(observed: dict[str, Any] | None) -> str:
    if observed is None:
        return "-"
    if observed["status"] == traffic.CONVERGED:
        return "as recorded"
    if observed["status"] == traffic.DRIFTED:
        return _pairs(observed["weights"])
    return str(observed["status"])
