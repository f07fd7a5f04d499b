"""The builtin metric library: Istio, Gateway API (Envoy), ingress-nginx and Linkerd.

Each library knows which Prometheus series its proxies export and how one version's
series are selected; from that it builds the same seven metrics: ``request-count``,
``error-count``, ``error-rate`` (5xx responses over all), ``mean-latency`` and
``latency-p50``/``-p95``/``-p99`` (milliseconds). Queries are written with the same
placeholders as Metric documents and parsed by the same parser, so they are escaped the
same way. docs/metrics.md lists every query. Pure: nothing here talks to Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.spec.metric import MetricDefinition, MetricType
from reconciler.spec.model import Experiment
from reconciler.spec.template import parse_query

ELAPSED = "${elapsedTime}"
ITER8_SYSTEM = "iter8-system"
ITER8_SYSTEM_MAP = {
    "request-count": "request-count",
    "mean-latency": "mean-latency",
    "latency-50th-percentile": "latency-p50",
    "latency-95th-percentile": "latency-p95",
    "latency-99th-percentile": "latency-p99",
}
"""Iter8's builtin metrics that mean the same as ours (their error-count and error-rate
also counted 4xx responses, so they are not mapped; neither are the 75th and 90th
percentiles, which we do not build)."""


@dataclass(frozen=True)
class Library:
    """How one proxy family exports request metrics to Prometheus."""

    name: str
    title: str
    selectors: tuple[str, ...]
    """Label matchers selecting one version's series; several are joined with ``or``."""
    requests: str
    """Counter of requests."""
    errors: tuple[str, str]
    """Counter of failed requests and the matcher that keeps only 5xx responses."""
    duration: str
    """Histogram of request durations (without ``_bucket``/``_sum``/``_count``)."""
    to_milliseconds: str = ""
    """What turns the histogram's unit into milliseconds (`` * 1000`` for seconds)."""
    names: str = "Deployment"
    """The kind of object whose name a version's name must be for ``$name`` to select its
    series (a version named otherwise gets no data on a real mesh)."""

    def _increase(self, metric: str, extra: str = "") -> str:
        tail = f", {extra}" if extra else ""
        return " or ".join(
            f"increase({metric}{{{selector}{tail}}}[{ELAPSED}])" for selector in self.selectors
        )

    def queries(self) -> dict[str, str]:
        """Metric name to PromQL query text (with placeholders)."""
        requests = f"sum({self._increase(self.requests)})"
        # No error series but some requests: 0 errors. No requests at all: no data.
        errors = f"sum({self._increase(*self.errors)}) or 0 * {requests}"
        buckets = f"sum by (le) ({self._increase(self.duration + '_bucket')})"
        out = {
            "request-count": requests,
            "error-count": errors,
            "error-rate": f"({errors}) / {requests}",
            "mean-latency": f"sum({self._increase(self.duration + '_sum')}) / "
            f"sum({self._increase(self.duration + '_count')}){self.to_milliseconds}",
        }
        for percentile in (50, 95, 99):
            out[f"latency-p{percentile}"] = (
                f"histogram_quantile(0.{percentile}, {buckets}){self.to_milliseconds}"
            )
        return out


LIBRARIES = (
    Library(
        name="istio",
        title="Istio sidecars (the report of the calling side: gateway or client sidecar)",
        selectors=(
            (
                'reporter="source", destination_workload="$name", '
                'destination_workload_namespace="$namespace"'
            ),
        ),
        requests="istio_requests_total",
        errors=("istio_requests_total", 'response_code=~"5.."'),
        duration="istio_request_duration_milliseconds",
    ),
    Library(
        name="gateway",
        title="Gateway API on Envoy, one Envoy cluster per backend Service "
        "(named <namespace>_<service>_<port>, as Contour does)",
        selectors=('envoy_cluster_name=~"${namespace}_${name}_[0-9]+"',),
        requests="envoy_cluster_upstream_rq_total",
        errors=("envoy_cluster_upstream_rq_xx", 'envoy_response_code_class="5"'),
        duration="envoy_cluster_upstream_rq_time",
        names="Service",
    ),
    Library(
        name="nginx",
        title="ingress-nginx with canary Ingresses (the version name is its Service name)",
        selectors=(
            'namespace="$namespace", service="$name", canary=""',
            'namespace="$namespace", canary=~"${namespace}-${name}-[0-9a-z]+"',
        ),
        requests="nginx_ingress_controller_requests",
        errors=("nginx_ingress_controller_requests", 'status=~"5.."'),
        duration="nginx_ingress_controller_request_duration_seconds",
        to_milliseconds=" * 1000",
        names="Service",
    ),
    Library(
        name="linkerd",
        title="Linkerd (inbound side of the version's Deployment, as linkerd-viz scrapes it)",
        selectors=('direction="inbound", namespace="$namespace", deployment="$name"',),
        requests="response_total",
        errors=("response_total", 'classification="failure"'),
        duration="response_latency_ms",
    ),
)
LIBRARY_NAMES = frozenset(library.name for library in LIBRARIES)

_DESCRIPTIONS = {
    "request-count": ("Number of requests", MetricType.COUNTER, None),
    "error-count": ("Number of responses with a 5xx status", MetricType.COUNTER, None),
    "error-rate": ("Fraction of responses with a 5xx status (0 to 1)", MetricType.GAUGE, None),
    "mean-latency": ("Mean request duration", MetricType.GAUGE, "milliseconds"),
    "latency-p50": ("Median request duration", MetricType.GAUGE, "milliseconds"),
    "latency-p95": ("95th percentile request duration", MetricType.GAUGE, "milliseconds"),
    "latency-p99": ("99th percentile request duration", MetricType.GAUGE, "milliseconds"),
}


def _build() -> dict[str, MetricDefinition]:
    out = {}
    for library in LIBRARIES:
        for name, text in library.queries().items():
            description, metric_type, units = _DESCRIPTIONS[name]
            definition = MetricDefinition(
                name=name,
                namespace=library.name,
                query=parse_query(text),
                metric_type=metric_type,
                sample_size=f"{library.name}/request-count",  # request-count: its own value
                units=units,
                description=description,
            )
            out[definition.ref] = definition
    return out


BUILTIN: dict[str, MetricDefinition] = _build()
"""Every builtin metric by reference (``istio/error-rate``)."""


def named_kind(reference: str) -> str | None:
    """The kind a version must be named after for builtin ``reference`` to find its data.

    ``istio/error-rate``: its Deployment. None for a metric that is not builtin.
    """
    library, _, name = reference.partition("/")
    for candidate in LIBRARIES:
        if candidate.name == library and f"{library}/{name}" in BUILTIN:
            return candidate.names
    return None


@dataclass(frozen=True)
class Unnamed:
    """A version no object of the kind its builtin metrics select is named after."""

    index: int
    """Its place in ``spec.versions`` (0: the baseline)."""
    version: str
    kind: str
    present: tuple[str, ...]
    """The names the objects of that kind have."""


def unnamed_versions(
    experiment: Experiment, objects: Iterable[tuple[str, str | None, str]]
) -> list[Unnamed]:
    """Versions the builtin metrics would find no data for, by ``(kind, namespace, name)``.

    The queries select a version's series by its name, which must be its Deployment's
    (istio, linkerd) or Service's (nginx, gateway). Nothing is said for a kind of which no
    object is given: the check needs the manifests.
    """
    objects = list(objects)
    criteria = experiment.criteria
    named = [criteria.request_count, *(o.metric for o in criteria.objectives)]
    named += [r.metric for r in criteria.rewards]
    kinds = sorted({kind for ref in named if ref and (kind := named_kind(ref))})
    found: list[Unnamed] = []
    for kind in kinds:
        present = tuple(
            sorted(
                name
                for k, namespace, name in objects
                if k == kind and namespace in {None, experiment.namespace}
            )
        )
        if present:
            found.extend(
                Unnamed(index, version.name, kind, present)
                for index, version in enumerate(experiment.versions)
                if version.name not in present
            )
    return found
