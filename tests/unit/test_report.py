"""The report's model and page from forged state documents: hostile names, gaps, commands.

Anyone with push rights can write any document and any commit message on the state
branch, so the report must show whatever it finds there as text, never as markup.
"""

from __future__ import annotations

import re
from dataclasses import replace

from reconciler.controller import records
from reconciler.demo import scenario
from reconciler.engine import experiment
from reconciler.engine.control import CommandRecord
from reconciler.engine.state import ExperimentState, IterationRecord, Phase
from reconciler.ports import CommitInfo
from reconciler.report import html, model
from reconciler.report.svg import Line, line_chart
from reconciler.spec.loader import load_experiments

T = 1_800_000_000.0
NAME = "<script>alert('name')</script>"
VERSION = 'v2"><script>alert(1)</script>'
STABLE = "productpage-stable"
ERROR_RATE = "istio/error-rate"


def forged_run() -> model.Sources:
    """A run of three iterations whose names, reasons and authors are all hostile."""
    loaded = load_experiments(
        "apps/bookinfo/experiment.yaml", scenario.demo_file("experiment.yaml")
    )
    spec = loaded.experiments[0]
    spec = replace(spec, name=NAME, candidates=(replace(spec.candidates[0], name=VERSION),))
    start = experiment.start(spec, spec_blob="a" * 40, source_commit="b" * 40, now=T).state
    key, run = spec.key, start.id
    states: list[ExperimentState] = [start]
    for k in (1, 2, 3):
        record = IterationRecord(
            iteration=k,
            time=T + k,
            weights=((STABLE, 80), (VERSION, 20)),
            verdicts=((STABLE, "pass"), (VERSION, "no-data" if k == 2 else "pass")),
            metrics=((STABLE, ERROR_RATE, 0.001), (VERSION, ERROR_RATE, None if k == 2 else 0.002)),
        )
        states.append(
            replace(
                states[-1],
                iteration=k,
                history=(*states[-1].history, record),
                reason=f"{NAME} & {VERSION}",
            )
        )
    states[-1] = replace(
        states[-1],
        phase=Phase.PROGRESSING,
        commands=(
            CommandRecord(
                commit="c" * 40,
                command="pause",
                author="Eve <eve@example.com>",
                time=T + 3,
                result='done" onmouseover="alert(2)',
                why="<b>frozen</b>",
                reason="</td><script>alert(3)</script>",
            ),
        ),
    )

    def state_commit(n: int, state: ExperimentState) -> CommitInfo:
        return CommitInfo(
            id=f"{n:040x}",
            message=f"{NAME} iteration {state.iteration}\n",
            time=int(T) + n,
            trailers=(
                (records.EXPERIMENT, key),
                (records.ID, run),
                (records.PHASE, state.phase.value),
                (records.ITERATION, str(state.iteration)),
                (records.WEIGHTS, "productpage-stable=80,not a mapping"),
            ),
            author="reconciler <r@example.com>",
        )

    commits = [state_commit(n, s) for n, s in enumerate(states)]
    asked = CommitInfo(
        id="d" * 40,
        message="abort asked\n",
        time=int(T) + 10,
        trailers=((records.EXPERIMENT, key), (records.ID, run), (records.COMMAND, "abort")),
        author="Mallory <mallory@example.com>",
    )
    ignored = CommitInfo(
        id="e" * 40,
        message="commands: ignored abort\n",
        time=int(T) + 11,
        trailers=(
            (records.EXPERIMENT, key),
            (records.COMMAND, "abort"),
            (records.COMMAND_RESULT, "ignored"),
            (records.COMMAND_COMMIT, "d" * 40),
        ),
    )
    return model.Sources(
        key=key,
        run_id=run,
        commits=(*commits, asked),
        documents={c.id: s for c, s in zip(commits, states, strict=True)},
        answers=(ignored,),
    )


def test_hostile_names_reasons_and_answers_are_shown_as_text_never_as_markup() -> None:
    report = model.build(forged_run())
    page = html.render(report)
    assert "<script" not in page
    assert "<b>" not in page
    assert 'onmouseover="' not in page
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in page
    assert "v2&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in page
    # the JSON keeps the names as they are: escaping is the page's business
    data = report.as_dict()
    assert data["versions"] == [STABLE, VERSION]
    assert data["experiment"] == f"bookinfo/{NAME}"


def test_a_command_ignored_in_a_commit_of_its_own_shows_as_ignored() -> None:
    report = model.build(forged_run())
    statuses = [(c.command, c.author, c.status) for c in report.commands]
    assert statuses == [
        ("pause", "Eve <eve@example.com>", 'done" onmouseover="alert(2)'),
        ("abort", "Mallory <mallory@example.com>", "ignored"),
    ]
    assert report.commands[1].answered_in == "e" * 40


def test_a_no_data_iteration_is_a_gap_in_its_line_not_a_drop_to_zero() -> None:
    report = model.build(forged_run())
    error_rate = next(m for m in report.metrics if m.metric == ERROR_RATE)
    assert error_rate.values[VERSION] == [0.002, None, 0.002]
    assert error_rate.upper_limit == 0.01
    chart = line_chart([1, 2, 3], [Line("v", error_rate.values[VERSION], "#000")], title="t")
    (d,) = re.findall(r'<path class="series" d="([^"]+)"', chart)
    assert d.count("M") == 2  # two segments: iteration 1 alone, then iteration 3 alone
    assert d.count("h0") == 2  # each drawn as a dot
    assert "L" not in d


def test_a_malformed_weights_trailer_is_shown_as_no_weights() -> None:
    report = model.build(forged_run())
    assert [t.weights for t in report.transitions] == [{}] * 4
    assert report.weights == {STABLE: [80] * 4, VERSION: [20] * 4}  # from the documents
