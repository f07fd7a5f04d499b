"""Values interpolated into PromQL stay inside the literal they were meant for.

The reference used to check the renderer is written here from the PromQL/Go string rules
(not from the renderer): a lexer that finds string literals and an unquoter that decodes
them. The same property is checked against the real Prometheus parser in
tests/integration/prometheus.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.metrics.builtin import BUILTIN
from reconciler.metrics.promql import (
    Bindings,
    QueryRenderError,
    duration,
    escape_regex,
    escape_string,
    render,
)
from reconciler.spec.template import Context, TemplateError, parse_query

INJECTION = 'a"}or vector(1)#'
NASTY = st.text(alphabet=st.sampled_from(list("\"'`\\\n\r\t{}()[]#$=~!,;.*+?|^ ax\x00\x7f\u2028é")))
VALUES = st.one_of(st.text(), NASTY)
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def literals(query: str) -> list[tuple[int, int]]:
    """(start, end) of every string literal in ``query``, following PromQL's lexer."""
    spans = []
    i = 0
    while i < len(query):
        char = query[i]
        if char == "#":
            end = query.find("\n", i)
            i = len(query) if end < 0 else end
        elif char in "\"'`":
            start = i
            i += 1
            while query[i] != char:
                if query[i] == "\n" and char != "`":
                    raise ValueError("newline inside a string")
                i += 2 if query[i] == "\\" and char != "`" else 1
            i += 1
            spans.append((start, i))
        else:
            i += 1
    return spans


def unquote(literal: str) -> str:
    """Decode one PromQL string literal as Go's strconv.Unquote would."""
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        return body
    out, i = [], 0
    while i < len(body):
        char = body[i]
        assert char not in {quote, "\n"}, f"raw {char!r} inside {literal!r}"
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = body[i + 1]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            i += 2
        elif escape == quote:
            out.append(quote)
            i += 2
        elif escape in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[escape]
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise AssertionError(f"escape \\{escape} is not valid PromQL in {literal!r}")
    return "".join(out)


def bind(name: str, namespace: str = "bookinfo", **variables: str) -> Bindings:
    return Bindings.for_version(name, namespace, 120.4, variables)


@pytest.mark.parametrize("quote", ['"', "'"])
@given(value=VALUES)
@example(value=INJECTION)
def test_any_value_becomes_exactly_the_content_of_its_quoted_label_value(
    quote: str, value: str
) -> None:
    query = render(parse_query(f"sum(x{{l={quote}$name{quote}}})"), bind(value))
    (span,) = literals(query)
    assert query[: span[0]] == "sum(x{l="
    assert query[span[1] :] == "})"
    assert unquote(query[span[0] : span[1]]) == value


@given(value=VALUES, other=VALUES)
def test_a_value_in_a_regex_matcher_matches_itself_and_nothing_else(value: str, other: str) -> None:
    query = render(parse_query('x{l=~"$name"}'), bind(value))
    (span,) = literals(query)
    pattern = unquote(query[span[0] : span[1]])
    assert re.fullmatch(pattern, value, flags=re.DOTALL)
    assert bool(re.fullmatch(pattern, other, flags=re.DOTALL)) == (other == value)


def test_a_version_named_like_a_regex_only_selects_itself_in_a_regex_matcher() -> None:
    query = render(parse_query('x{l=~"${namespace}_${name}_[0-9]+"}'), bind("productpage-v.*"))
    assert query == 'x{l=~"bookinfo_productpage-v\\\\.\\\\*_[0-9]+"}'


@pytest.mark.parametrize("reference", sorted(BUILTIN))
def test_the_injection_name_changes_no_builtin_query_but_its_label_values(reference: str) -> None:
    template = BUILTIN[reference].query
    assert template is not None
    safe = render(template, bind("SAFE"))
    hostile = render(template, bind(INJECTION))
    safe_spans, hostile_spans = literals(safe), literals(hostile)
    assert len(safe_spans) == len(hostile_spans)
    outside_safe = [safe[a:b] for a, b in _gaps(safe_spans, len(safe))]
    outside_hostile = [hostile[a:b] for a, b in _gaps(hostile_spans, len(hostile))]
    assert outside_safe == outside_hostile
    decoded = [unquote(hostile[a:b]) for a, b in hostile_spans]
    assert any(INJECTION in value or escape_regex(INJECTION) in value for value in decoded)


def _gaps(spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    edges = [0, *(x for span in spans for x in span), length]
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_the_injection_name_is_quoted_in_the_istio_query() -> None:
    template = BUILTIN["istio/request-count"].query
    assert template is not None
    query = render(template, bind(INJECTION))
    assert 'destination_workload="a\\"}or vector(1)#"' in query


@given(value=st.text())
def test_a_raw_string_takes_any_value_without_a_backtick_and_refuses_one_with(value: str) -> None:
    template = parse_query("x{l=`$name`}")
    if "`" in value:
        with pytest.raises(QueryRenderError, match="backtick"):
            render(template, bind(value))
    else:
        assert render(template, bind(value)) == f"x{{l=`{value}`}}"


@pytest.mark.parametrize("text", ["x[${elapsedTime}]", "x[${elapsedTime}s]", "x[$elapsedTime]"])
def test_elapsed_time_renders_as_a_promql_duration_in_both_spellings(text: str) -> None:
    assert render(parse_query(text), bind("v1")) == "x[121s]"


def test_elapsed_time_is_rounded_up_to_whole_seconds_and_never_zero() -> None:
    assert [duration(s) for s in (0, 0.2, 1, 59.01, 120)] == ["1s", "1s", "1s", "60s", "120s"]


@pytest.mark.parametrize("text", ["x{$name}", "sum(x) by ($namespace)", "$name"])
def test_a_name_outside_quotes_is_refused_when_the_query_is_loaded(text: str) -> None:
    with pytest.raises(TemplateError, match="must be inside a quoted label value"):
        parse_query(text)


def test_a_variable_outside_quotes_must_be_a_number() -> None:
    template = parse_query("histogram_quantile($q, x)")
    assert render(template, bind("v1", q="0.95")) == "histogram_quantile(0.95, x)"
    with pytest.raises(QueryRenderError, match="only a number"):
        render(template, bind("v1", q="1) or vector(1"))


def test_an_undefined_variable_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(QueryRenderError, match=r"\$sid.*'v1'.*its variables: image"):
        render(parse_query("x{s='$sid'}"), bind("v1", image="a"))


def test_a_namespace_variable_overrides_the_experiment_namespace() -> None:
    template = parse_query('x{ns="$namespace", v="$name"}')
    assert render(template, bind("v1", namespace="default", namespace_="x")) == (
        'x{ns="default", v="v1"}'
    )
    bindings = Bindings.for_version("v1", "default", 1, {"namespace": "bookinfo-iter8"})
    assert render(template, bindings) == 'x{ns="bookinfo-iter8", v="v1"}'


def test_dollar_dollar_is_a_literal_dollar_and_a_lone_dollar_stays() -> None:
    assert render(parse_query('x{l=~"a$$", m=~"b$"}'), bind("v1")) == 'x{l=~"a$", m=~"b$"}'


def test_placeholders_in_comments_are_left_alone() -> None:
    assert render(parse_query("x # for $name\n"), bind("v1")) == "x # for $name\n"


def test_each_placeholder_knows_its_quote_and_whether_it_is_a_regex() -> None:
    template = parse_query("""x{a="$name", b='$namespace', c=~"$name", d!~ '$v'}[${elapsedTime}]""")
    contexts = [(p.name, p.context, p.regex) for p in template.placeholders]
    assert contexts == [
        ("name", Context.DOUBLE, False),
        ("namespace", Context.SINGLE, False),
        ("name", Context.DOUBLE, True),
        ("v", Context.SINGLE, True),
        ("elapsedTime", Context.CODE, False),
    ]
    assert template.variables == {"v"}


@pytest.mark.parametrize(
    ("text", "message"),
    [('x{l="$name}', "never closed"), ("x[${elapsed]", "followed by a name")],
)
def test_malformed_queries_are_refused_with_where(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as caught:
        parse_query(text)
    assert caught.value.line == 1


@given(text=st.text(alphabet=st.characters(blacklist_characters="$")))
def test_a_query_without_placeholders_renders_unchanged(text: str) -> None:
    try:
        template = parse_query(text)
    except TemplateError:
        return  # an unclosed string: refused, never rendered
    assert render(template, bind("v1")) == text


@given(value=VALUES)
def test_escaping_is_reversible_for_both_quotes(value: str) -> None:
    for quote in "\"'":
        assert unquote(f"{quote}{escape_string(value, quote)}{quote}") == value


def test_regex_escaping_covers_exactly_re2_metacharacters() -> None:
    assert escape_regex("a.b*c-d_e/f") == "a\\.b\\*c-d_e/f"
