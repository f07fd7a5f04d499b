"""What a state commit's body says about the iteration it judged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.controller.evidence_text import evidence_lines
from reconciler.engine.evidence import Evidence, MetricEvidence, RewardEvidence, VersionEvidence
from reconciler.gitstore.trailers import format_message, parse_trailers
from reconciler.spec.model import Objective

OBJECTIVES = (
    Objective("istio/error-rate", upper_limit=0.01),
    Objective("istio/mean-latency", upper_limit=300, lower_limit=1),
)


def evidence(*versions: VersionEvidence, reward: RewardEvidence | None = None) -> Evidence:
    return Evidence(
        iteration=3, confidence=0.95, min_requests=299, versions=versions, reward=reward
    )


def test_each_metric_shows_its_value_against_its_limit_and_the_exact_bound() -> None:
    lines = evidence_lines(
        evidence(
            VersionEvidence(
                "v2",
                "pass",
                requests=5765,
                needs=None,
                on_track=True,
                metrics=(
                    MetricEvidence(
                        "istio/error-rate", "clopper-pearson", 0.002, 5765, 0.00114, 0.00327
                    ),
                    MetricEvidence("istio/mean-latency", "point", 80.0, 5765),
                ),
            )
        ),
        OBJECTIVES,
    )
    assert lines == [
        "Evidence of iteration 3 (confidence 0.95, at least 299 requests):",
        "  v2: pass on 5,765 requests",
        (
            "    istio/error-rate 0.002 (limit <= 0.01) "
            "[clopper-pearson: low 0.00114, high 0.00327] n=5,765"
        ),
        "    istio/mean-latency 80 (limit <= 300 and >= 1) n=5,765",
    ]


def test_not_enough_data_says_how_many_more_requests_and_which_metric_had_none() -> None:
    lines = evidence_lines(
        evidence(
            VersionEvidence(
                "v2",
                "no-data",
                requests=120,
                needs=180,
                on_track=True,
                metrics=(MetricEvidence("istio/error-rate", "no-data", None, None),),
            ),
            reward=RewardEvidence(
                "istio/mean-latency", "beta", 0.95, beats=(("v2", 0.612),), best=(("v2", 0.6),)
            ),
        ),
        OBJECTIVES,
    )
    assert "  v2: no-data on 120 requests, needs ~180 more" in lines
    assert "    istio/error-rate: no data" in lines
    assert lines[-1] == (
        "  reward istio/mean-latency (beta): P(beats the baseline) v2=0.612, needs > 0.950"
    )


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
            st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
            st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_the_evidence_never_disturbs_the_commits_trailers(
    metrics: list[tuple[str, float | None, int | None]],
) -> None:
    version = VersionEvidence(
        "v2",
        "fail",
        requests=10,
        needs=5,
        on_track=False,
        metrics=tuple(MetricEvidence(name, "point", value, n) for name, value, n in metrics),
    )
    body = "\n".join(evidence_lines(evidence(version), OBJECTIVES))
    message = format_message("app: iteration 3/6", [("Rollout-Iteration", "3")], body=body)
    assert parse_trailers(message) == (("Rollout-Iteration", "3"),)
