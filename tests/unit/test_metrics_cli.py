"""``reconciler metrics list``: the builtin library and the given documents, with queries."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli.metrics_cmd import metrics, prometheus_config
from reconciler.metrics.builtin import BUILTIN

DOC = b"""\
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: error-rate
spec:
  params:
  - name: query
    value: sum(x{w='$name'})
  urlTemplate: http://elsewhere/api/v1/query
"""


def test_list_prints_every_builtin_metric_with_its_query() -> None:
    result = CliRunner().invoke(metrics, ["list"])
    assert result.exit_code == 0
    for reference, definition in BUILTIN.items():
        assert reference in result.stdout
        assert definition.query is not None
        assert definition.query.text in result.stdout
    assert "iter8-system/latency-95th-percentile -> istio/latency-p95" in result.stdout


def test_list_json_includes_documents_and_reports_their_problems(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_bytes(DOC)
    result = CliRunner().invoke(metrics, ["list", "--file", str(path), "-o", "json"])
    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    mine = [m for m in listed["metrics"] if m["source"] != "builtin"]
    assert [(m["metric"], m["query"]) for m in mine] == [("error-rate", "sum(x{w='$name'})")]
    assert listed["iter8_system"]["iter8-system/request-count"] == "istio/request-count"
    assert "'spec.urlTemplate' is not used" in result.stderr


def test_list_maps_iter8_builtins_to_the_chosen_library() -> None:
    result = CliRunner().invoke(
        metrics, ["list", "--iter8-system-library", "linkerd", "-o", "json"]
    )
    assert json.loads(result.stdout)["iter8_system"]["iter8-system/mean-latency"] == (
        "linkerd/mean-latency"
    )


def test_query_refuses_a_malformed_variable_or_header_before_sending_anything() -> None:
    base = ["query", "istio/error-rate", "--version=v1", "--namespace=ns", "--elapsed=60"]
    url = "--prometheus-url=http://127.0.0.1:9"
    bad_var = CliRunner().invoke(metrics, [*base, url, "--var", "novalue"])
    assert bad_var.exit_code == 2
    assert "is not NAME=VALUE" in bad_var.output
    bad_url = CliRunner().invoke(metrics, [*base, "--prometheus-url=ftp://x"])
    assert bad_url.exit_code == 2
    assert "must be http(s)://" in bad_url.output


def test_prometheus_options_become_one_config() -> None:
    config = prometheus_config(
        {
            "prometheus_url": "https://prom.example:9090/",
            "prometheus_headers": ("X-Scope-OrgID: team-a",),
            "prometheus_timeout": 2.5,
        }
    )
    assert config.base_url == "https://prom.example:9090"
    assert config.headers == (("X-Scope-OrgID", "team-a"),)
    assert config.timeout_seconds == 2.5
