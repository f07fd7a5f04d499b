"""Simulated traffic in the Prometheus text format, named and labelled as real proxies do.

For every version of a ``TrafficSimulator`` this writes what each proxy family would
export for the same requests: Istio (``istio_requests_total``,
``istio_request_duration_milliseconds``, both reporters), Envoy behind a Gateway API
implementation (``envoy_cluster_upstream_rq_*``, one cluster per backend Service, named
``<namespace>_<service>_<port>``), ingress-nginx (``nginx_ingress_controller_requests``
and ``…_request_duration_seconds``, the candidate served through a canary Ingress) and
Linkerd (``response_total``, ``response_latency_ms``), plus ``sim_reward_total`` (the
profile's reward per request, for reward metrics). Pure: snapshot in, text out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from tests.sim.traffic import BUCKET_SETS, Tally, TrafficSimulator, VersionTraffic

FAMILIES = ("istio", "gateway", "nginx", "linkerd")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PORT = "80"
_STATUS = {"ok": "200", "error": "500"}


@dataclass
class _Family:
    kind: str
    help: str
    lines: list[str] = field(default_factory=list)


class _Writer:
    """Collects samples family by family (the text format wants each family's lines together)."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def sample(
        self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float
    ) -> None:
        family = self.families.setdefault(name, _Family(kind, help_text))
        family.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self,
        name: str,
        *,
        help_text: str,
        labels: dict[str, str],
        tally: Tally,
        family: str,
        scale: float,
    ) -> None:
        out = self.families.setdefault(name, _Family("histogram", help_text))
        bounds = BUCKET_SETS[family]
        counts = tally.buckets.get(family, [0] * len(bounds))
        for bound, count in zip(bounds, counts, strict=True):
            out.lines.append(f"{name}_bucket{_labels({**labels, 'le': repr(bound)})} {count}")
        out.lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {tally.count}")
        out.lines.append(f"{name}_sum{_labels(labels)} {_number(tally.sum_ms * scale)}")
        out.lines.append(f"{name}_count{_labels(labels)} {tally.count}")

    def text(self) -> str:
        parts = []
        for name, family in self.families.items():
            parts.append(f"# HELP {name} {family.help}")
            parts.append(f"# TYPE {name} {family.kind}")
            parts.extend(family.lines)
        return "\n".join(parts) + "\n"


def render(
    simulator: TrafficSimulator | Sequence[TrafficSimulator],
    *,
    service: str | None = None,
    families: Collection[str] = FAMILIES,
) -> str:
    """The simulators' counts so far as one ``/metrics`` page.

    Args:
        simulator: whose counts to export (not advanced here); several simulators (one
            per namespace, say) share one page, each family's samples written together.
        service: the Kubernetes Service in front of the versions (default: each
            simulator's stable version's name); ingress-nginx and Istio labels carry it.
        families: which proxy families to export.
    """
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown proxy families {sorted(unknown)}; known: {FAMILIES}")
    simulators = [simulator] if isinstance(simulator, TrafficSimulator) else list(simulator)
    writer = _Writer()
    for one in simulators:
        _write(writer, one, service=service, families=families)
    return writer.text()


def _write(
    writer: _Writer, simulator: TrafficSimulator, *, service: str | None, families: Collection[str]
) -> None:
    snapshot = simulator.snapshot()
    stable = snapshot[0].name
    for version in snapshot:
        context = _Context(simulator.namespace, service or stable, stable, version)
        for family in FAMILIES:
            if family in families:
                _WRITERS[family](writer, context)
        reward = version.ok.reward + version.errors.reward
        writer.sample(
            "sim_reward_total",
            "counter",
            "Simulated reward (the profile's reward per request).",
            {
                "destination_workload": version.name,
                "destination_workload_namespace": context.namespace,
            },
            reward,
        )


@dataclass(frozen=True)
class _Context:
    namespace: str
    service: str
    stable: str
    version: VersionTraffic

    def outcomes(self) -> Iterable[tuple[str, Tally]]:
        yield "ok", self.version.ok
        yield "error", self.version.errors


def _istio(writer: _Writer, c: _Context) -> None:
    for reporter in ("source", "destination"):
        for outcome, tally in c.outcomes():
            labels = {
                "reporter": reporter,
                "source_workload": "istio-ingressgateway",
                "source_workload_namespace": "istio-system",
                "source_canonical_service": "istio-ingressgateway",
                "source_app": "istio-ingressgateway",
                "destination_workload": c.version.name,
                "destination_workload_namespace": c.namespace,
                "destination_service": f"{c.service}.{c.namespace}.svc.cluster.local",
                "destination_service_name": c.service,
                "destination_service_namespace": c.namespace,
                "destination_canonical_service": c.service,
                "destination_canonical_revision": c.version.name,
                "destination_app": c.service,
                "destination_version": c.version.name,
                "request_protocol": "http",
                "response_code": _STATUS[outcome],
                "response_flags": "-",
                "connection_security_policy": "mutual_tls"
                if reporter == "destination"
                else "unknown",
            }
            writer.sample(
                "istio_requests_total", "counter", "Requests (Istio).", labels, tally.count
            )
            writer.histogram(
                "istio_request_duration_milliseconds",
                help_text="Request durations (Istio).",
                labels=labels,
                tally=tally,
                family="istio",
                scale=1.0,
            )


def _gateway(writer: _Writer, c: _Context) -> None:
    cluster = {"envoy_cluster_name": f"{c.namespace}_{c.version.name}_{PORT}"}
    writer.sample(
        "envoy_cluster_upstream_rq_total",
        "counter",
        "Upstream requests (Envoy).",
        cluster,
        c.version.requests,
    )
    for outcome, tally in c.outcomes():
        status = _STATUS[outcome]
        writer.sample(
            "envoy_cluster_upstream_rq_xx",
            "counter",
            "Upstream responses by status class (Envoy).",
            {**cluster, "envoy_response_code_class": status[0]},
            tally.count,
        )
        writer.sample(
            "envoy_cluster_upstream_rq",
            "counter",
            "Upstream responses by status (Envoy).",
            {**cluster, "envoy_response_code": status},
            tally.count,
        )
    both = _merge(c.version.ok, c.version.errors)
    writer.histogram(
        "envoy_cluster_upstream_rq_time",
        help_text="Upstream request time (Envoy).",
        labels=cluster,
        tally=both,
        family="istio",  # Envoy's default buckets, the same as Istio's
        scale=1.0,
    )


def _nginx(writer: _Writer, c: _Context) -> None:
    canary = "" if c.version.name == c.stable else f"{c.namespace}-{c.version.name}-{PORT}"
    for outcome, tally in c.outcomes():
        labels = {
            "controller_class": "k8s.io/ingress-nginx",
            "controller_namespace": "ingress-nginx",
            "controller_pod": "ingress-nginx-controller-0",
            "host": f"{c.service}.example.com",
            "ingress": c.service,
            "namespace": c.namespace,
            "service": c.stable,
            "canary": canary,
            "method": "GET",
            "path": "/",
            "status": _STATUS[outcome],
        }
        writer.sample(
            "nginx_ingress_controller_requests",
            "counter",
            "Client requests (ingress-nginx).",
            labels,
            tally.count,
        )
        writer.histogram(
            "nginx_ingress_controller_request_duration_seconds",
            help_text="Request processing time (ingress-nginx).",
            labels=labels,
            tally=tally,
            family="nginx",
            scale=1 / 1000,
        )


def _linkerd(writer: _Writer, c: _Context) -> None:
    base = {
        "direction": "inbound",
        "namespace": c.namespace,
        "deployment": c.version.name,
        "pod": f"{c.version.name}-0",
        "tls": "true",
    }
    writer.sample("request_total", "counter", "Requests (Linkerd).", base, c.version.requests)
    for outcome, tally in c.outcomes():
        labels = {
            **base,
            "status_code": _STATUS[outcome],
            "classification": "success" if outcome == "ok" else "failure",
        }
        writer.sample("response_total", "counter", "Responses (Linkerd).", labels, tally.count)
        latency = {**base, "status_code": _STATUS[outcome]}
        writer.histogram(
            "response_latency_ms",
            help_text="Response latency (Linkerd).",
            labels=latency,
            tally=tally,
            family="linkerd",
            scale=1.0,
        )


_WRITERS = {"istio": _istio, "gateway": _gateway, "nginx": _nginx, "linkerd": _linkerd}


def _merge(a: Tally, b: Tally) -> Tally:
    buckets = {
        family: [
            x + y
            for x, y in zip(
                a.buckets.get(family, [0] * len(bounds)),
                b.buckets.get(family, [0] * len(bounds)),
                strict=True,
            )
        ]
        for family, bounds in BUCKET_SETS.items()
    }
    return Tally(a.count + b.count, a.sum_ms + b.sum_ms, a.reward + b.reward, buckets)


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    return f"{{{inner}}}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
