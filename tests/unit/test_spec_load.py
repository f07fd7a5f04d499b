"""Reading the built-in load: ``spec.load``, Iter8's ``metrics/collect`` task, and its targets."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec import codec
from reconciler.spec.load_reader import go_duration
from reconciler.spec.loader import load_experiments
from reconciler.spec.metric import load_metrics
from reconciler.spec.targets import check_target

HEAD = b"""\
apiVersion: iter8.tools/v2alpha2
kind: Experiment
metadata:
  name: knative-canary
  namespace: shop
spec:
  target: shop/checkout
  strategy:
    testingPattern: Canary
    actions:
"""
TAIL = b"""\
  criteria:
    requestCount: iter8-system/request-count
    objectives:
    - metric: iter8-system/error-rate
      upperLimit: "0.01"
    - metric: iter8-system/latency-95th-percentile
      upperLimit: 200
  duration:
    intervalSeconds: 5
    iterationsPerLoop: 4
  versionInfo:
    baseline:
      name: checkout-v1
      weightObjRef:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: checkout
        namespace: shop
        fieldPath: .spec.traffic[0].percent
    candidates:
    - name: checkout-v2
      weightObjRef:
        apiVersion: serving.knative.dev/v1
        kind: Service
        name: checkout
        namespace: shop
        fieldPath: .spec.traffic[1].percent
"""
COLLECT = b"""\
      loop:
      - task: metrics/collect
        with:
          versions:
          - name: checkout-v1
            url: http://checkout-v1.shop.svc.cluster.local
          - name: checkout-v2
            url: http://checkout-v2.shop.svc:8080/api
            headers: {x-user-group: beta}
"""


def load(actions: bytes, path: str = "apps/shop/experiment.yaml") -> object:
    return load_experiments(path, HEAD + actions + TAIL)


def messages(result: object) -> list[str]:
    return [str(p) for p in result.problems]  # type: ignore[attr-defined]


def test_an_iter8_collect_task_is_read_as_load_with_iter8s_defaults() -> None:
    result = load_experiments("apps/shop/experiment.yaml", HEAD + COLLECT + TAIL)
    assert result.errors == ()
    (experiment,) = result.experiments
    assert experiment.load is not None
    assert [v.version for v in experiment.load.versions] == ["checkout-v1", "checkout-v2"]
    assert experiment.load.versions[1].headers == (("x-user-group", "beta"),)
    assert (experiment.load.qps, experiment.load.connections) == (8.0, 4)
    assert experiment.load.requests == 100  # neither time nor numQueries: Iter8 sent 100
    assert experiment.load.method == "GET"
    assert result.problems == ()  # the collect task is read, not warned about
    # the built-in metrics need no Metric document: they are measured from the load
    assert list(result.references) == []


def test_time_numqueries_and_payload_map_as_iter8_defined_them() -> None:
    timed = COLLECT.replace(b"        with:\n", b"        with:\n          time: 1m30s\n")
    (experiment,) = load_experiments("e.yaml", HEAD + timed + TAIL).experiments
    assert experiment.load is not None
    assert (experiment.load.duration_seconds, experiment.load.requests) == (90.0, None)
    both = timed.replace(b"time: 1m30s\n", b"time: 10s\n          numQueries: 40\n")
    (experiment,) = load_experiments("e.yaml", HEAD + both + TAIL).experiments
    assert experiment.load is not None
    assert (experiment.load.duration_seconds, experiment.load.requests) == (None, 40)
    posting = COLLECT.replace(
        b"        with:\n",
        b"        with:\n          payloadStr: '{\"a\": 1}'\n"
        b"          contentType: application/json\n",
    )
    (experiment,) = load_experiments("e.yaml", HEAD + posting + TAIL).experiments
    assert experiment.load is not None
    assert (experiment.load.method, experiment.load.payload) == ("POST", '{"a": 1}')
    assert experiment.load.content_type == "application/json"


def test_other_tasks_are_never_run_and_said_so_once() -> None:
    shell = b"""\
      finish:
      - run: kubectl apply -f https://example.com/candidate.yaml
      - task: notification/http
        with: {url: "https://api.github.com/x"}
"""
    result = load_experiments("e.yaml", HEAD + COLLECT + shell + TAIL)
    assert result.errors == ()
    warnings = messages(result)
    assert len(warnings) == 1
    assert "other than metrics/collect are never executed" in warnings[0]


def test_a_payload_url_is_fetched_only_from_an_in_cluster_service() -> None:
    inside = COLLECT.replace(
        b"        with:\n",
        b"        with:\n          payloadURL: http://payloads.shop.svc/order.json\n"
        b"          payloadStr: ignored\n",
    )
    (experiment,) = load_experiments("e.yaml", HEAD + inside + TAIL).experiments
    assert experiment.load is not None
    assert experiment.load.payload_url == "http://payloads.shop.svc/order.json"
    assert (experiment.load.method, experiment.load.payload) == ("POST", None)  # Iter8: URL wins
    assert codec.from_data(codec.to_data(experiment)).load == experiment.load
    remote = COLLECT.replace(
        b"        with:\n", b"        with:\n          payloadURL: https://example.com/p.json\n"
    )
    result = load_experiments("e.yaml", HEAD + remote + TAIL)
    (error,) = result.errors
    assert "'spec.strategy.actions.loop[0].with.payloadURL'" in str(error)
    assert "only an in-cluster Service is fetched" in str(error)


def test_targets_outside_the_cluster_are_refused_at_their_line() -> None:
    for url, why in (
        (b"http://10.0.0.7/", b"an IP address is not a Service name"),
        (b"http://2130706433/", b"is a numeric IP address"),
        (b"http://169.254.169.254/latest/meta-data", b"an IP address is not a Service name"),
        (b"http://example.com/", b"is not an in-cluster Service name"),
        (b"http://kubernetes.default.svc/api", b"the Kubernetes API server"),
        (b"http://user:pw@checkout-v2.shop.svc/", b"user information (user@) is not allowed"),
        (b"file:///etc/passwd", b"only http and https are sent to"),
    ):
        bad = COLLECT.replace(b"http://checkout-v2.shop.svc:8080/api", url)
        result = load_experiments("e.yaml", HEAD + bad + TAIL)
        (error,) = result.errors
        assert why.decode() in str(error), (url, str(error))
        assert str(error).startswith("e.yaml:18:13:"), str(error)  # the url's line


def test_another_namespace_is_a_warning_that_names_the_setting() -> None:
    other = COLLECT.replace(b"checkout-v2.shop.svc", b"checkout-v2.payments.svc")
    result = load_experiments("e.yaml", HEAD + other + TAIL)
    assert result.errors == ()
    assert any("load.allowedNamespaces" in m for m in messages(result))


OWN = b"""\
apiVersion: reconciler/v1alpha1
kind: Experiment
metadata:
  name: quiet-canary
  namespace: shop
spec:
  target: shop/checkout
  strategy:
    testingPattern: Canary
  load:
    qps: 20
    durationSeconds: 3
    connections: 2
    method: post
    payloadFile: payloads/order.json
    contentType: application/json
    timeoutSeconds: 2
    versions:
    - name: checkout-v1
      url: http://checkout-v1.shop.svc
    - name: checkout-v2
      url: https://checkout-v2.shop.svc.cluster.local:8443/orders
      qps: 5
"""


def test_our_format_reads_spec_load_and_joins_the_payload_file_to_the_experiments_folder() -> None:
    result = load_experiments("apps/shop/experiment.yaml", OWN + TAIL[TAIL.index(b"  criteria") :])
    assert result.errors == (), messages(result)
    (experiment,) = result.experiments
    load = experiment.load
    assert load is not None
    assert (load.qps, load.duration_seconds, load.connections, load.method) == (20, 3, 2, "POST")
    assert load.payload_file == "apps/shop/payloads/order.json"
    assert load.versions[1].qps == 5
    assert codec.from_data(codec.to_data(experiment)).load == load


def test_our_format_refuses_a_payload_file_outside_the_repository_and_unknown_fields() -> None:
    outside = OWN.replace(b"payloads/order.json", b"../../../etc/passwd")
    result = load_experiments(
        "apps/shop/experiment.yaml", outside + TAIL[TAIL.index(b"  criteria") :]
    )
    assert any("points outside the repository" in str(e) for e in result.errors)
    typo = OWN.replace(b"    qps: 20\n", b"    qsp: 20\n")
    result = load_experiments("apps/shop/experiment.yaml", typo + TAIL[TAIL.index(b"  criteria") :])
    assert any("did you mean 'qps'" in str(e) for e in result.errors)


def test_without_load_iter8s_error_rate_still_needs_a_definition() -> None:
    result = load_experiments("e.yaml", HEAD + b"      finish: []\n" + TAIL)
    assert {r.metric for r in result.references} >= {"iter8-system/error-rate"}


BUILTIN_DOCS = b"""\
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: error-rate
spec:
  description: Fraction of responses with HTTP status code 4xx or 5xx
  type: Gauge
  sampleSize: iter8-system/request-count
  provider: iter8
  jqExpression: "dummy"
  urlTemplate: https://iter8.tools
---
apiVersion: iter8.tools/v2alpha2
kind: Metric
metadata:
  name: latency-95th-percentile
spec:
  type: Gauge
  units: msec
  provider: iter8
  jqExpression: "dummy"
  urlTemplate: https://iter8.tools
"""


def test_iter8s_provider_iter8_metric_documents_load_and_define_nothing_to_query() -> None:
    result = load_metrics("install/builtin-metrics/metrics.yaml", BUILTIN_DOCS)
    assert result.errors == ()
    assert result.metrics == ()
    unknown = BUILTIN_DOCS.replace(b"name: error-rate", b"name: user-happiness")
    result = load_metrics("m.yaml", unknown)
    (error,) = result.errors
    assert "provider iter8 measures Iter8's built-in metrics only" in str(error)


@given(st.ip_addresses())
def test_no_ip_literal_is_a_target(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    assert check_target(f"http://{host}:80/x", "shop", ("*",)) is not None


names = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(names, names, st.booleans(), st.one_of(st.none(), st.integers(1, 65535)))
def test_every_service_name_is_a_target(
    name: str, namespace: str, long: bool, port: int | None
) -> None:
    suffix = ".svc.cluster.local" if long else ".svc"
    where = f":{port}" if port else ""
    refused = check_target(f"http://{name}.{namespace}{suffix}{where}/path", namespace)
    assert (refused is not None) == ((name, namespace) == ("kubernetes", "default"))


@given(
    st.lists(
        st.tuples(st.integers(0, 999), st.sampled_from(["h", "m", "s", "ms"])),
        min_size=1,
        max_size=4,
    )
)
def test_go_durations_add_up(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    seconds = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    assert go_duration(text) == sum(n * seconds[unit] for n, unit in parts)
    assert go_duration(text + "x") is None
