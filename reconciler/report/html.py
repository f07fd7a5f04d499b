"""A report as one self-contained HTML page: inline CSS and SVG, no script, no fetch.

``render`` writes the page from a ``Report``: a summary, the weights over iterations,
one chart per metric with its objective's limits, a strip of verdicts per version, and
the commits that started, commanded, decided and ended the run, with their authors. The
page loads nothing (its Content-Security-Policy forbids every fetch), so it can be mailed,
attached to a ticket or opened offline years later. Everything from the repo is escaped
(names, reasons, authors, subjects may be hostile); markup is never built from raw text.
Pure: a value in, a string out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from reconciler.report.model import CommandEntry, CommitRef, Report
from reconciler.report.svg import PALETTE, Limit, Line, line_chart, number

__all__ = ["render"]

_CSS = """
:root{color-scheme:light;--ink:#1d232a;--mute:#5f6b76;--line:#d8dee4;--pass:#2e9e52;
--fail:#d1402f;--nodata:#b9c0c7}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
margin:0 auto;max-width:1100px;padding:24px;background:#fff}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
var(--line);padding-bottom:4px}h3{font-size:14px;margin:0 0 4px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.mute{color:var(--mute)}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.phase-Promoted,.phase-Promoting{background:var(--pass)}
.phase-RolledBack,.phase-RollingBack{background:var(--fail)}
.phase-other{background:#6c7a89}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:12px 0}
dl.summary dt{color:var(--mute)}dl.summary dd{margin:0}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:4px 0 8px}
.swatch{display:inline-block;width:14px;height:4px;border-radius:2px;vertical-align:middle;
margin-right:5px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:10px}
figcaption{color:var(--mute);font-size:12.5px;margin-top:4px}
svg.chart{max-width:100%;height:auto;display:block}
svg .plot{fill:#fafbfc;stroke:var(--line)}svg .grid{stroke:#eceff2;fill:none}
svg .tick{font-size:10px;fill:var(--mute);dominant-baseline:middle}
svg .series{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg .limit{stroke-dasharray:5 4;stroke-width:1.5;fill:none}
svg .limit-label{font-size:10px;fill:#c0392b}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--mute);font-size:12.5px}
table.verdicts{width:auto}
table.verdicts th{white-space:nowrap}table.verdicts td.v{width:16px;min-width:16px;padding:0;
text-align:center;font-size:11px;color:#fff;border:1px solid #fff}
td.v-pass{background:var(--pass)}td.v-fail{background:var(--fail)}
td.v-no-data,td.v-other{background:var(--nodata)}td.v-none{background:#f1f3f5}
table.verdicts th.it{font-weight:400;font-size:10px;text-align:center;padding:0 1px}
.status-done{color:var(--pass);font-weight:600}.status-refused{color:var(--fail);
font-weight:600}.status-ignored,.status-pending{color:var(--mute);font-weight:600}
details summary{cursor:pointer;color:var(--mute)}
footer{margin-top:32px;color:var(--mute);font-size:12px}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""Nothing may be fetched or run: the page is what it holds."""
_FOOTER = (
    "<footer>Made by <code>reconciler report</code> from the Env repo's Git history alone: "
    "the state branch's commits and documents, and the outcome commit on main.</footer>"
)
_VERDICT_MARK = {"pass": "\u2713", "fail": "\u2717", "no-data": "\u00b7"}


def render(report: Report) -> str:
    """The whole page for ``report``."""
    title = f"{report.experiment} report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        _header(report),
        _weights(report),
        _metrics(report),
        _verdicts(report),
        _commits(report),
        _commands(report.commands),
        _transitions(report),
        _notes(report.notes),
        _FOOTER,
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _colour(report: Report, version: str) -> str:
    return PALETTE[report.versions.index(version) % len(PALETTE)]


def _header(report: Report) -> str:
    known = {"Promoted", "Promoting", "RolledBack", "RollingBack"}
    badge = report.phase if report.phase in known else "other"
    winner = f" &middot; winner <b>{_e(report.winner)}</b>" if report.winner else ""
    judged = report.iterations[-1].iteration if report.iterations else 0
    rows = [
        ("Run", f"<code>{_e(report.run_id)}</code>"),
        ("Target", _e(report.target)),
        ("Pattern", f"{_e(report.testing_pattern)}, {_e(report.deployment_pattern)}"),
        (
            "Versions",
            ", ".join(
                f"{_swatch(report, v)}{_e(v)}{' (baseline)' if i == 0 else ''}"
                for i, v in enumerate(report.versions)
            ),
        ),
        (
            "Iterations",
            f"{judged} of {report.planned_iterations} judged, every {report.interval_seconds} s",
        ),
        ("Started", _e(report.started_at)),
        ("Last recorded", _e(report.updated_at)),
        ("Experiment file from", f"main commit <code>{_e(report.source_commit[:12])}</code>"),
        ("Reason", _e(report.reason) or '<span class="mute">none recorded</span>'),
    ]
    summary = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f"<header><h1>{_e(report.experiment)}</h1>"
        f'<p><span class="badge phase-{badge}">{_e(report.phase)}</span>{winner}</p>'
        f'<dl class="summary">{summary}</dl></header>'
    )


def _swatch(report: Report, version: str) -> str:
    return f'<span class="swatch" style="background:{_colour(report, version)}"></span>'


def _legend(report: Report) -> str:
    items = "".join(f"<span>{_swatch(report, v)}{_e(v)}</span>" for v in report.versions)
    return f'<div class="legend">{items}</div>'


def _weights(report: Report) -> str:
    chart = line_chart(
        report.weight_iterations,
        [
            Line(v, [float(w) for w in report.weights[v]], _colour(report, v))
            for v in report.versions
        ],
        title="Traffic weight (%) per version over iterations",
        y_range=(0.0, 100.0),
        width=960,
        height=220,
    )
    return (
        '<section id="weights"><h2>Weights</h2>'
        f"{_legend(report)}<figure>{chart}<figcaption>Traffic weight (%) each version was "
        "given after each iteration, as recorded on the state branch (iteration 0: the "
        "start; the last point: where the run left traffic).</figcaption></figure></section>"
    )


def _metrics(report: Report) -> str:
    xs = [i.iteration for i in report.iterations]
    figures = []
    for series in report.metrics:
        limits = [
            Limit(label, value)
            for label, value in (
                ("upper limit", series.upper_limit),
                ("lower limit", series.lower_limit),
            )
            if value is not None
        ]
        chart = line_chart(
            xs,
            [Line(v, series.values.get(v, []), _colour(report, v)) for v in report.versions],
            title=f"{series.metric} per version over iterations",
            limits=limits,
        )
        bounds = ", ".join(f"{limit.label} {number(limit.value)}" for limit in limits)
        caption = f"objective: {bounds}" if bounds else "no objective (shown for information)"
        figures.append(
            f'<figure class="metric"><h3>{_e(series.metric)}</h3>{chart}'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    if not figures:
        body = '<p class="mute">No iteration was judged: there are no metric values.</p>'
    else:
        body = f'{_legend(report)}<div class="charts">{"".join(figures)}</div>'
    return f'<section id="metrics"><h2>Metrics</h2>{body}</section>'


def _verdicts(report: Report) -> str:
    if not report.iterations:
        return ""
    head = "".join(f'<th class="it">{i.iteration}</th>' for i in report.iterations)
    rows = []
    for version in report.versions:
        cells = []
        for it in report.iterations:
            verdict = it.verdicts.get(version)
            kind = "none" if verdict is None else verdict if verdict in _VERDICT_MARK else "other"
            mark = _VERDICT_MARK.get(verdict or "", "")
            tip = f"{version}, iteration {it.iteration}: {verdict or 'not judged'}"
            cells.append(f'<td class="v v-{kind}" title="{_e(tip)}">{mark}</td>')
        rows.append(f"<tr><th>{_swatch(report, version)}{_e(version)}</th>{''.join(cells)}</tr>")
    return (
        '<section id="verdicts"><h2>Verdicts</h2><div class="scroll">'
        f'<table class="verdicts"><tr><th>iteration</th>{head}</tr>{"".join(rows)}</table>'
        '</div><p class="mute">\u2713 pass &nbsp; \u2717 fail &nbsp; \u00b7 no data '
        "(not enough requests to judge)</p></section>"
    )


def _commit_row(role: str, ref: CommitRef | None, detail: str = "") -> str:
    if ref is None:
        return f'<tr><th>{role}</th><td colspan="4" class="mute">none recorded</td></tr>'
    return (
        f'<tr><th>{role}</th><td class="mono" title="{_e(ref.commit)}">{_e(ref.commit[:12])}'
        f"</td><td>{_e(ref.author)}</td><td>{_e(ref.time)}</td>"
        f"<td>{_e(ref.subject)}{detail}</td></tr>"
    )


def _commits(report: Report) -> str:
    outcome = report.outcome
    outcome_detail = ""
    if outcome is not None:
        winner = f", Rollout-Winner {_e(outcome.winner)}" if outcome.winner else ""
        outcome_detail = (
            f'<br><span class="mute">Rollout-Outcome {_e(outcome.outcome)}{winner}</span>'
        )
    rows = [
        _commit_row("Started (state branch)", report.started),
        *(
            _commit_row(
                f"Command: {_e(c.command)}",
                CommitRef(c.commit, c.author, c.requested_at or "", c.reason or c.why),
            )
            for c in report.commands
            if c.commit
        ),
        _commit_row("Decided (state branch)", report.decided),
        _commit_row("Ended (state branch)", report.ended),
        _commit_row("Outcome (main)", None if outcome is None else outcome.ref, outcome_detail),
    ]
    return (
        '<section id="commits"><h2>Who and which commits</h2><div class="scroll"><table>'
        "<tr><th></th><th>commit</th><th>author</th><th>time</th><th>message</th></tr>"
        f"{''.join(rows)}</table></div></section>"
    )


def _commands(commands: Sequence[CommandEntry]) -> str:
    if not commands:
        body = '<p class="mute">No command was given for this run.</p>'
    else:
        rows = "".join(
            f"<tr><td>{_e(c.command)}{' (forced)' if c.forced else ''}</td>"
            f"<td>{_e(c.author)}{_signed(c.signer)}</td>"
            f"<td>{_e(c.requested_at or '')}</td>"
            f'<td class="status-{_e(c.status)}">{_e(c.status)}</td>'
            f"<td>{_e(c.why)}</td><td>{_e(c.reason)}</td>"
            f'<td class="mono">{_e(c.commit[:12])}</td>'
            f'<td class="mono">{_e((c.answered_in or "")[:12])}</td></tr>'
            for c in commands
        )
        body = (
            '<div class="scroll"><table><tr><th>command</th><th>by</th><th>asked at</th>'
            "<th>answer</th><th>why</th><th>reason given</th><th>commit</th>"
            f"<th>answered in</th></tr>{rows}</table></div>"
        )
    return f'<section id="commands"><h2>Commands</h2>{body}</section>'


def _signed(signer: str | None) -> str:
    return f'<br><span class="mute">signed by {_e(signer)}</span>' if signer else ""


def _transitions(report: Report) -> str:
    rows = "".join(
        f'<tr><td class="mono" title="{_e(t.ref.commit)}">{_e(t.ref.commit[:12])}</td>'
        f"<td>{_e(t.ref.time)}</td><td>{_e(t.phase)}</td><td>{t.iteration}</td>"
        f"<td>{_e(_pairs(t.weights.items()))}</td><td>{_e(t.ref.subject)}</td></tr>"
        for t in report.transitions
    )
    return (
        '<section id="transitions"><h2>Every state commit</h2><details>'
        f"<summary>{len(report.transitions)} commits on the state branch</summary>"
        '<div class="scroll"><table><tr><th>commit</th><th>time</th><th>phase</th>'
        f"<th>iteration</th><th>weights</th><th>message</th></tr>{rows}</table></div>"
        "</details></section>"
    )


def _pairs(items: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in items)


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return f'<section id="notes"><h2>Notes</h2><ul>{items}</ul></section>'
