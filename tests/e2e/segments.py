"""The segment-routing recipe's world: its Env repo as the recipe has it, traffic by segment.

``docs/recipes/segment-routing`` has one Env repo per traffic API (``istio``,
``gateway-api``): a beta route sends the requests with the ``x-user-group: beta`` header
or the ``user-group=beta`` cookie to the candidate, the default route sends everyone else
by the weights the reconciler sets. A ``SegmentWorld`` is ``world.World`` with that repo
(the recipe's files, only the experiment's interval and iterations shortened so that it
runs in seconds), synced to the namespace the files name as Argo CD would sync it, and a
traffic simulator whose per-version traffic is what the routing objects on the cluster
make of a fixed mix of requests (``REQUESTS``): which route a request takes is decided
from the live objects each time Prometheus scrapes, so the candidate's workload metrics
are the segment's exactly as long as the beta route is on the cluster.

``shares`` is the routing model: Istio takes the first ``http`` route whose ``match``
matches; the Gateway API takes, across every HTTPRoute, the rule with the most header
matches (the recipe's routes share hostname and path). Only header matches (``exact``,
``prefix``, ``regex``; ``Exact``, ``RegularExpression``) are modelled, a regular
expression matches the whole value (RE2's full match, as Envoy does), and a match on
anything else fails the test rather than be guessed.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler.cluster.client import Kube
from reconciler.cluster.resources import ObjectRef
from reconciler.errors import ReconcilerError
from reconciler.promote.yamlset import set_scalar
from reconciler.spec import fieldpath
from tests.e2e.envrepo import STATE, EnvRepo
from tests.e2e.world import BASELINE_PROFILE, HEALTHY, IN_FLIGHT_LIMIT, POLL, World
from tests.fixtures.kube import apply, delete, ensure_namespace, load_yaml_text, ref_of
from tests.gitutil import make_bare_repo
from tests.sim.traffic import TrafficSimulator

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes" / "segment-routing"
NAMESPACE = "shop"
"""The namespace the recipe's files name (the test server's namespaces are never deleted:
each world deletes the objects it applied)."""
BASELINE, CANDIDATE = "frontend", "frontend-candidate"
EXPERIMENT = "apps/frontend-candidate/experiment.yaml"
RATE = 2000.0
"""Requests a second, every segment together: the beta segment is 20 % of them."""
ITERATIONS = 4
REQUESTS: tuple[tuple[float, Mapping[str, str]], ...] = (
    (0.1, {"x-user-group": "beta"}),
    (0.1, {"cookie": "theme=dark; user-group=beta"}),
    (0.4, {"cookie": "user-group=beta-2; theme=dark"}),  # a look-alike: not the segment
    (0.4, {}),
)
"""The mix of requests: (fraction, headers). The first two are the beta segment."""
SEGMENT = 0.2


@dataclass(frozen=True)
class Variant:
    """One of the recipe's Env repos."""

    folder: str
    """Its folder under docs/recipes/segment-routing."""
    routes: tuple[str, str]
    """apiVersion and kind of its routing objects."""
    beta_file: str
    """The file on main that carries the beta route while the experiment runs."""
    beta_file_after: str | None
    """The recipe's file that replaces ``beta_file`` on main after the outcome (None: the
    outcome deletes it)."""
    beta_name: str
    """The routing object that carries the beta route."""
    library: str
    """The builtin metric library its experiment uses."""
    default_after: tuple[tuple[str, int], ...]
    """The default route's backends (Service, weight) on main after the outcome."""

    @property
    def root(self) -> Path:
        """The recipe's files."""
        return RECIPES / self.folder


ISTIO = Variant(
    "istio",
    ("networking.istio.io/v1beta1", "VirtualService"),
    "apps/frontend/virtualservice.yaml",
    "apps/frontend-candidate/experiment-virtualservice-after.yaml",
    "frontend",
    "istio",
    ((BASELINE, 100),),  # the copied file names no candidate
)
GATEWAY_API = Variant(
    "gateway-api",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    "apps/frontend-candidate/httproute-beta.yaml",
    None,
    "frontend-beta",
    "gateway",
    ((BASELINE, 100), (CANDIDATE, 0)),  # the default route is never edited
)


# -- the routing model --------------------------------------------------------------------


def shares(objects: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each backend Service's share of ``REQUESTS`` through ``objects`` (one kind)."""
    out: dict[str, float] = {}
    for fraction, headers in REQUESTS:
        split = backends(objects, headers)
        total = sum(weight for _, weight in split)
        for service, weight in split:
            if weight > 0:
                out[service] = out.get(service, 0.0) + fraction * weight / total
    return out


def backends(
    objects: Sequence[Mapping[str, Any]], headers: Mapping[str, str]
) -> list[tuple[str, int]]:
    """The backends (Service, weight) a request with ``headers`` is split between."""
    if not objects:
        return []
    if objects[0]["kind"] == "VirtualService":
        (service,) = objects
        for route in service["spec"].get("http") or []:
            if _istio_matches(route.get("match"), headers):
                destinations = route.get("route") or []
                alone = 100 if len(destinations) == 1 else 0
                return [
                    (d["destination"]["host"], int(d.get("weight", alone))) for d in destinations
                ]
        return []
    best: tuple[int, list[tuple[str, int]]] | None = None
    ordered = sorted(
        objects, key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"])
    )
    for route in ordered:
        for rule in route["spec"].get("rules") or []:
            for match in rule.get("matches") or [{}]:
                count = _gateway_matches(match, headers)
                if count is not None and (best is None or count > best[0]):
                    refs = rule.get("backendRefs") or []
                    best = (count, [(r["name"], int(r.get("weight", 1))) for r in refs])
    return [] if best is None else best[1]


def _istio_matches(match: Sequence[Mapping[str, Any]] | None, headers: Mapping[str, str]) -> bool:
    if not match:
        return True
    for one in match:
        unknown = set(one) - {"headers", "name"}
        assert not unknown, f"the routing model knows header matches only, not {unknown}"
        if all(
            _value_matches(how, headers.get(name.lower()))
            for name, how in (one.get("headers") or {}).items()
        ):
            return True
    return False


def _value_matches(how: Mapping[str, str], value: str | None) -> bool:
    ((kind, pattern),) = how.items()
    if value is None:
        return False
    if kind == "exact":
        return value == pattern
    if kind == "prefix":
        return value.startswith(pattern)
    assert kind == "regex", f"the routing model does not know the {kind!r} match"
    return re.fullmatch(pattern, value) is not None


def _gateway_matches(match: Mapping[str, Any], headers: Mapping[str, str]) -> int | None:
    """How many header matches ``match`` has when it matches (None: it does not)."""
    unknown = set(match) - {"headers", "path"}
    assert not unknown, f"the routing model knows header and path matches only, not {unknown}"
    assert match.get("path", {"type": "PathPrefix", "value": "/"}) == {
        "type": "PathPrefix",
        "value": "/",
    }, "the routing model knows the path prefix / only"
    wanted = match.get("headers") or []
    for header in wanted:
        kind = header.get("type", "Exact")
        how = {"Exact": "exact", "RegularExpression": "regex"}[kind]
        if not _value_matches({how: header["value"]}, headers.get(header["name"].lower())):
            return None
    return len(wanted)


# -- the world ------------------------------------------------------------------------------


class SegmentTraffic:
    """The simulator of the recipe's namespace, fed by the live routing objects."""

    def __init__(self, kube: Kube, variant: Variant) -> None:
        self._kube = kube
        self._variant = variant
        self._read_at = -1.0
        self._shares: dict[str, float] = {}
        self.simulator = TrafficSimulator(
            {BASELINE: BASELINE_PROFILE, CANDIDATE: HEALTHY},
            self._weight_of,
            namespace=NAMESPACE,
            clock=time.monotonic,
            requests_per_second=RATE,
            seed=7,
        )

    def _weight_of(self, version: str) -> int:
        if time.monotonic() - self._read_at > POLL:  # one read per scrape, not per version
            # on an error, keep the last shares seen; the next scrape reads again
            with contextlib.suppress(ReconcilerError):
                self._shares = shares(self._kube.list_objects(*self._variant.routes, NAMESPACE))
            self._read_at = time.monotonic()
        return round(100 * self._shares.get(version, 0.0))


def recipe_files(variant: Variant) -> dict[str, bytes]:
    """The recipe's Env repo, file for file, its experiment's interval and loop shortened."""
    files = {
        path.relative_to(variant.root).as_posix(): path.read_bytes()
        for path in sorted(variant.root.rglob("*"))
        if path.is_file()
    }
    text = files[EXPERIMENT].decode()
    text = set_scalar(text, ".spec.duration.intervalSeconds", "1")
    text = set_scalar(text, ".spec.duration.iterationsPerLoop", str(ITERATIONS))
    files[EXPERIMENT] = text.encode()
    return files


def weight_paths(variant: Variant) -> dict[str, tuple[str | int, ...]]:
    """The experiment's weight fields (version to fieldPath steps), as the recipe has them."""
    spec = YAML(typ="safe").load((variant.root / EXPERIMENT).read_text())["spec"]
    versions = [spec["versionInfo"]["baseline"], *spec["versionInfo"]["candidates"]]
    return {v["name"]: fieldpath.parse(v["weightObjRef"]["fieldPath"]) for v in versions}


class SegmentWorld(World):
    """``World`` with the recipe's Env repo, namespace and segment traffic."""

    def __init__(self, *args: Any, variant: Variant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.variant = variant
        self.paths = weight_paths(variant)
        self.synced: set[ObjectRef] = set()
        """What the last sync applied (what a sync with ``prune`` may delete)."""
        self.beta_on_main: Any = None
        """The beta route as main has it when the world is set up."""

    def setup(self) -> None:
        """The repo, the app synced, the traffic simulated and scraped."""
        ensure_namespace(self.admin, NAMESPACE)
        self.repo = self.create_repo()
        self.beta_on_main = self.beta_route("main")
        self.sync_cluster()
        sim_kube = self.kube_server.connect()
        self._closers.append(sim_kube.close)
        self.segments = SegmentTraffic(sim_kube, self.variant)
        self.metrics.add(self.segments.simulator)
        self._closers.append(lambda: self.metrics.remove(self.segments.simulator))
        self.wait("Prometheus to have scraped this world's traffic twice", self._segment_scraped)

    def create_repo(self) -> EnvRepo:
        """The recipe's files as one commit on main, served by the git daemon."""
        name = f"segment-routing-{self.variant.folder}-{self.tmp.name}.git"  # a new one each test
        path = self.daemon.base_path / name
        make_bare_repo(
            path, recipe_files(self.variant), message="frontend 1.5.0 for the beta users"
        )
        return EnvRepo(path, self.daemon.url(name))

    def _segment_scraped(self) -> bool:
        started = self.segments.simulator.started_at
        if started is None:
            return False
        # only samples since this world's simulator began: an earlier world used the names
        window = int(time.monotonic() - started) + 1
        query = (
            f'count_over_time(istio_requests_total{{destination_workload_namespace="{NAMESPACE}",'
            f'destination_workload="{BASELINE}",reporter="source",response_code="200"}}'
            f"[{window}s])"
        )
        result = self.query(query)
        return bool(result) and float(result[0]["value"][1]) >= 2

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result ([] when Prometheus does not answer)."""
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        except OSError:
            return []
        return result

    # -- the cluster, as Argo CD shapes it ----------------------------------------------------

    def manifests(self, rev: str = "main") -> list[dict[str, Any]]:
        """main's manifests as Argo CD applies them (``exclude: '{**/experiment*.yaml}'``)."""
        docs = []
        for path in self.repo.files(rev):
            name = posixpath.basename(path)
            if not path.startswith("apps/") or not name.endswith(".yaml"):
                continue
            if name.startswith("experiment"):
                continue
            for doc in load_yaml_text(self.repo.show(rev, path) or ""):
                assert doc["metadata"]["namespace"] == NAMESPACE, path
                docs.append(doc)
        return docs

    def sync_cluster(self, *, prune: bool = False) -> None:
        """Apply main's manifests (server-side); ``prune``: delete what main no longer has."""
        wanted = {ref_of(doc): doc for doc in self.manifests()}
        for ref, doc in wanted.items():
            apply(self.admin, doc)
            self.own(ref)
        for ref in sorted(self.synced - set(wanted) if prune else (), key=str):
            delete(self.admin, ref)
        self.synced = set(wanted)

    def routes(self, rev: str | None = None) -> list[dict[str, Any]]:
        """The routing objects on the cluster, or (``rev``) those Argo CD applies from main."""
        if rev is not None:
            api_version, kind = self.variant.routes
            docs = self.manifests(rev)
            return [d for d in docs if (d["apiVersion"], d["kind"]) == (api_version, kind)]
        return self.admin.list_objects(*self.variant.routes, NAMESPACE)

    def default_route(self) -> dict[str, Any] | None:
        """The object that carries the weights (``frontend``)."""
        return next((o for o in self.routes() if o["metadata"]["name"] == BASELINE), None)

    def weights(self) -> dict[str, int] | None:
        """The weights at the experiment's fieldPaths on the cluster (None: no object)."""
        found = self.default_route()
        if found is None:
            return None
        try:
            return {v: int(fieldpath.get(found, steps)) for v, steps in self.paths.items()}
        except fieldpath.FieldPathError:
            return None  # the object is there, the route the fields were in is not

    def beta_route(self, rev: str | None = None) -> Any:
        """The beta route's matches and backends, on the cluster or (``rev``) on main.

        None when there is none. Backends without their weights: the HTTPRoute CRD
        defaults a missing weight to 1.
        """
        objects = [o for o in self.routes(rev) if o["metadata"]["name"] == self.variant.beta_name]
        if not objects:
            return None
        spec = objects[0]["spec"]
        if self.variant is ISTIO:
            routes = [r for r in spec.get("http") or [] if r.get("match")]
            if not routes:
                return None
            return (routes[0]["match"], [d["destination"] for d in routes[0]["route"]])
        rule = spec["rules"][0]
        return (rule["matches"], [r["name"] for r in rule["backendRefs"]])

    def check_weights(self, *, strict: bool = False) -> None:
        """At every look: the beta route is on the cluster as main has it, and the default
        route carries the weights the state tip records (or, for a moment, an earlier
        record's, between a push and its patch)."""
        if not self.checking:
            return
        beta = self.beta_route()
        assert beta == self.beta_on_main, (
            f"the beta route on the cluster is {beta}, main has {self.beta_on_main}\n"
            f"{self.describe()}"
        )
        before = self.repo.tip(STATE)
        recorded = next((c.weights for c in self.repo.log(STATE, limit=12) if c.weights), None)
        carried = self.weights()
        if before is None or recorded is None or self.repo.tip(STATE) != before:
            return
        if carried == recorded:
            self._in_flight_since = None
            return
        message = f"the default route carries {carried}, the state tip records {recorded}"
        now = time.monotonic()
        if strict:
            pytest.fail(f"{message}\n{self.describe()}")
        if self._in_flight_since is None:
            self._in_flight_since = now
        elif now - self._in_flight_since > IN_FLIGHT_LIMIT:
            pytest.fail(f"{message}, for {IN_FLIGHT_LIMIT:g} s\n{self.describe()}")
