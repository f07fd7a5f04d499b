"""The built-in load against real HTTP servers on loopback, reached by in-cluster names.

Two ``http.server`` servers stand in for two versions (v1 answers at once but 503 to every
fifth request, v2 answers 200 after 60 ms); the configuration's ``load.resolve`` hook maps
``v1.demo.svc`` and ``v2.demo.svc`` to them. A third server stands outside (a redirect's
target), a fourth accepts connections and never answers. Addresses that do not come from
the hook go through a ``StaticResolver``, as a cluster DNS would answer, so the address
checks are exercised for real. Tests wait on conditions with bounded timeouts; timing
assertions leave room for a busy 2-core machine.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.config import ConfigError, LoadSettings
from reconciler.load.admission import Caps
from reconciler.load.generator import HttpLoad
from reconciler.load.resolver import Address, StaticResolver
from reconciler.ports import LoadGenerator, LoadPlan
from reconciler.spec.model import Load, VersionLoad

pytestmark = pytest.mark.integration

NS = "demo"
RUN = "demo/canary@0123456789ab"
WAIT = 20.0
"""Seconds a test waits for what takes one or two on an idle machine."""
SLOW_MS = 60
BOUND = 0.5
"""Seconds converge and observe may take, at most, while a target hangs (they take < 1 ms)."""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Server:
    """An HTTP/1.1 keep-alive server on loopback that records every request."""

    answer: Callable[[int, Seen], tuple[int, dict[str, str]]]
    delay: float = 0.0
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen = Seen(self.command, self.path, dict(self.headers), body, time.monotonic())
                with server.lock:
                    server.requests.append(seen)
                    n = len(server.requests)
                if server.delay:
                    time.sleep(server.delay)
                status, headers = server.answer(n, seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = handle_one  # noqa: N815 - http.server's names

            def log_message(self, *_args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


class Hanging:
    """Accepts connections and never answers (nor reads)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def open_connections(self) -> int:
        """Connections the client still holds open (a closed one reads as end of file)."""
        still = 0
        for conn in list(self.held):
            try:
                while conn.recv(65536, socket.MSG_DONTWAIT):  # the unread requests first
                    pass
            except BlockingIOError:
                still += 1
            except OSError:
                continue
        return still

    def stop(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


def every_fifth_fails(n: int, _seen: Seen) -> tuple[int, dict[str, str]]:
    return (503 if n % 5 == 0 else 200), {}


def always_ok(_n: int, _seen: Seen) -> tuple[int, dict[str, str]]:
    return 200, {}


@pytest.fixture
def servers() -> Iterator[dict[str, Server]]:
    made = {
        "v1": Server(every_fifth_fails),
        "v2": Server(always_ok, delay=SLOW_MS / 1000),
        "outside": Server(always_ok),
    }
    for server in made.values():
        server.start()
    yield made
    for server in made.values():
        server.stop()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.stop()


def generator(
    hook: dict[str, int],
    dns: dict[str, str] | None = None,
    api_server_host: str | None = None,
    **settings: object,
) -> HttpLoad:
    resolve = tuple(f"{name}=127.0.0.1:{port}" for name, port in hook.items())
    return HttpLoad.from_settings(
        LoadSettings(resolve=resolve, **settings),  # type: ignore[arg-type]
        api_server_host=api_server_host,
        resolver=StaticResolver(dns or {}),
    )


def plan(
    *versions: tuple[str, str],
    run: str = RUN,
    interval: float = 1.0,
    active: bool = True,
    **load: object,
) -> LoadPlan:
    return LoadPlan(
        run,
        NS,
        Load(versions=tuple(VersionLoad(v, url) for v, url in versions), **load),  # type: ignore[arg-type]
        interval_seconds=interval,
        active=active,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


def count(load: HttpLoad, version: str, run: str = RUN) -> int:
    return int(load.observe(run, version, "request-count").value or 0)


def value(load: HttpLoad, version: str, metric: str, run: str = RUN) -> float:
    got = load.observe(run, version, metric)
    assert got.status == "ok", got
    assert got.value is not None
    return got.value


def quiesce(load: HttpLoad, one: LoadPlan, servers: dict[str, Server], *names: str) -> None:
    """Pause ``one`` and wait until every request sent has been counted on both sides."""
    paused = LoadPlan(one.run_id, one.namespace, one.load, one.interval_seconds, active=False)
    assert load.converge({one.run_id: paused}) == {}
    for name in names:
        stable: list[int] = []

        def settled(name: str = name, stable: list[int] = stable) -> bool:
            now = (servers[name].count, count(load, name))
            stable.append(now[0])
            return now[0] == now[1] and stable[-5:].count(now[0]) == 5

        wait_until(settled, f"{name}'s requests all answered and counted")


def test_two_versions_are_measured_as_iter8s_builtin_metrics(servers: dict[str, Server]) -> None:
    with generator({"v1.demo.svc": servers["v1"].port, "v2.demo.svc": servers["v2"].port}) as load:
        one = plan(("v1", "http://v1.demo.svc:8080/"), ("v2", "http://v2.demo.svc/"), qps=25)
        assert load.observe(RUN, "v1", "request-count").status == "no-data"
        assert load.converge({RUN: one}) == {}
        assert load.observe(RUN, "v1", "request-count").status == "no-data"
        wait_until(lambda: count(load, "v1") >= 40 and count(load, "v2") >= 40, "40 requests each")
        quiesce(load, one, servers, "v1", "v2")

        for name in ("v1", "v2"):
            server = servers[name]
            errors = sum(1 for i in range(1, server.count + 1) if name == "v1" and i % 5 == 0)
            assert value(load, name, "request-count") == server.count
            assert value(load, name, "error-count") == errors
            assert value(load, name, "error-rate") == pytest.approx(errors / server.count)
            assert load.observe(RUN, name, "error-rate").sample_size == server.count
            ladder = [value(load, name, f"latency-{p}th-percentile") for p in (50, 75, 90, 95, 99)]
            assert ladder == sorted(ladder)
        assert 0.15 <= value(load, "v1", "error-rate") <= 0.25
        # v2 sleeps 60 ms before answering: nothing can come back sooner; the bound above
        # leaves room for a busy machine
        assert SLOW_MS - 0.1 <= value(load, "v2", "latency-50th-percentile") < SLOW_MS + 1000
        assert value(load, "v2", "mean-latency") >= SLOW_MS - 0.1
        assert value(load, "v1", "latency-50th-percentile") < value(
            load, "v2", "latency-50th-percentile"
        )
        assert load.observe(RUN, "v3", "request-count").status == "no-data"
        assert load.observe(RUN, "v1", "latency-42nd-percentile").status == "unavailable"
        request = servers["v1"].requests[0]
        assert (request.method, request.path) == ("GET", "/")
        assert request.headers["Host"] == "v1.demo.svc:8080"
        assert servers["v2"].requests[0].headers["Host"] == "v2.demo.svc"


def test_a_request_count_per_iteration_is_sent_at_qps_at_each_iterations_start(
    servers: dict[str, Server],
) -> None:
    with generator({"v1.demo.svc": servers["v1"].port}) as load:
        one = plan(("v1", "http://v1.demo.svc/"), qps=50, requests=5, interval=1.0)
        assert load.converge({RUN: one}) == {}
        wait_until(lambda: servers["v1"].count >= 15, "three iterations")
        arrivals = [r.at for r in servers["v1"].requests]
        bursts: list[list[float]] = [[arrivals[0]]]
        for at in arrivals[1:]:
            if at - bursts[-1][-1] > 0.4:  # the 5 sends take 80 ms; the pause ~0.9 s
                bursts.append([])
            bursts[-1].append(at)
        assert [len(b) for b in bursts[:3]] == [5, 5, 5]
        assert all(0.5 < b2[0] - b1[0] < 1.5 for b1, b2 in itertools.pairwise(bursts[:3]))


def test_payload_method_headers_and_content_type_are_sent_as_given(
    servers: dict[str, Server],
) -> None:
    with generator({"v1.demo.svc": servers["v1"].port}) as load:
        one = LoadPlan(
            RUN,
            NS,
            Load(
                versions=(
                    VersionLoad(
                        "v1", "http://v1.demo.svc/predict?x=1", (("x-user-group", "beta"),)
                    ),
                ),
                payload='{"inline": true}',
                content_type="application/json",
                qps=10,
            ),
            interval_seconds=1,
            payload=b'{"from": "file"}',
        )
        assert load.converge({RUN: one}) == {}
        wait_until(lambda: servers["v1"].count >= 2, "two requests")
        seen = servers["v1"].requests[0]
        assert (seen.method, seen.path, seen.body) == ("POST", "/predict?x=1", b'{"from": "file"}')
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.headers["x-user-group"] == "beta"
        assert "Cookie" not in seen.headers


def test_pause_stops_sending_and_keeps_the_stats_and_a_removed_plan_stops_and_forgets(
    servers: dict[str, Server],
) -> None:
    with generator({"v1.demo.svc": servers["v1"].port}) as load:
        one = plan(("v1", "http://v1.demo.svc/"), qps=40)
        assert load.converge({RUN: one}) == {}
        wait_until(lambda: count(load, "v1") >= 10, "10 requests")
        quiesce(load, one, servers, "v1")
        held = servers["v1"].count
        time.sleep(1.0)  # at 40 a second, a second of sending would be 40 more
        assert servers["v1"].count == held
        assert value(load, "v1", "request-count") == held

        assert load.converge({RUN: one}) == {}  # resumed: it sends again, counting on
        wait_until(lambda: count(load, "v1") >= held + 10, "10 more after the resume")

        assert load.converge({}) == {}
        assert load.observe(RUN, "v1", "request-count").status == "no-data"
        stopped: list[int] = []

        def still() -> bool:
            stopped.append(servers["v1"].count)
            return stopped[-10:].count(stopped[-1]) == 10

        wait_until(still, "no request after the plan was removed")
        time.sleep(0.5)
        assert servers["v1"].count == stopped[-1]


def test_a_hanging_version_costs_only_its_own_connections(
    servers: dict[str, Server], hanging: Hanging
) -> None:
    hook = {"v1.demo.svc": servers["v1"].port, "stuck.demo.svc": hanging.port}
    with generator(hook) as load:
        one = plan(
            ("v1", "http://v1.demo.svc/"),
            ("stuck", "http://stuck.demo.svc/"),
            qps=20,
            connections=2,
            timeout_seconds=1.0,
        )
        other = plan(("v1", "http://v1.demo.svc/other"), run="demo/other@0123456789ab", qps=20)
        slowest = 0.0
        for _ in range(50):
            started = time.monotonic()
            assert load.converge({RUN: one, other.run_id: other}) == {}
            load.observe(RUN, "stuck", "latency-99th-percentile")
            load.observe(RUN, "v1", "request-count")
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        wait_until(lambda: count(load, "stuck") >= 2, "two timeouts counted")
        assert slowest < BOUND
        assert value(load, "stuck", "error-rate") == 1.0
        assert 1000 <= value(load, "stuck", "latency-50th-percentile") < 1000 + 3000
        # the other version and the other run went on at their rate beside it
        assert count(load, "v1") >= 20
        assert count(load, "v1", run="demo/other@0123456789ab") >= 20
        assert value(load, "v1", "latency-50th-percentile") < 500
        assert hanging.open_connections() <= 2
        assert len(hanging.held) >= 2
        started = time.monotonic()
    assert time.monotonic() - started < 6.0  # close() is bounded


def test_refused_targets_say_why_and_send_nothing(servers: dict[str, Server]) -> None:
    with generator({"v1.demo.svc": servers["v1"].port}) as load:
        good = ("v1", "http://v1.demo.svc/")
        plans = {
            "demo/ip@1": plan(good, ("v2", "http://127.0.0.1/"), run="demo/ip@1"),
            "demo/decimal@1": plan(good, ("v2", "http://2130706433/"), run="demo/decimal@1"),
            "demo/other-ns@1": plan(good, ("v2", "http://v2.other.svc/"), run="demo/other-ns@1"),
            "demo/api@1": plan(good, ("v2", "https://kubernetes.default.svc/"), run="demo/api@1"),
            "demo/user@1": plan(good, ("v2", "http://u@v2.demo.svc/"), run="demo/user@1"),
        }
        refused = load.converge(plans)
        assert set(refused) == set(plans)
        assert "IP address is not a Service name" in refused["demo/ip@1"]
        assert "numeric IP address" in refused["demo/decimal@1"]
        assert "namespace 'other' is not the experiment's" in refused["demo/other-ns@1"]
        assert "Kubernetes API server" in refused["demo/api@1"]
        assert "user information" in refused["demo/user@1"]
        assert all(why.startswith("version v2: ") for why in refused.values())
        time.sleep(0.3)
        assert servers["v1"].count == 0
        assert load.observe("demo/ip@1", "v1", "request-count").status == "no-data"


@pytest.mark.parametrize(
    ("dns", "why"),
    [
        ({"meta.demo.svc": "169.254.169.254"}, "169.254.169.254 is a cloud metadata address"),
        ({"meta.demo.svc": "fe80::1"}, "is link-local"),
        ({"meta.demo.svc": "10.96.0.1"}, "is the Kubernetes API server's address"),
        ({"meta.demo.svc": "::ffff:127.0.0.1"}, "is a loopback address"),
    ],
)
def test_a_name_that_resolves_to_a_forbidden_address_refuses_the_run(
    servers: dict[str, Server], dns: dict[str, str], why: str
) -> None:
    with generator(
        {"v1.demo.svc": servers["v1"].port}, dns=dns, api_server_host="10.96.0.1"
    ) as load:
        one = plan(("v1", "http://v1.demo.svc/"), ("meta", "http://meta.demo.svc/"), qps=10)
        plans = {RUN: one}
        assert load.converge(plans) == {}  # the names pass; their addresses are checked later
        wait_until(lambda: RUN in load.converge(plans), "the run refused after resolving")
        assert why in load.converge(plans)[RUN]
        paused = plan(("v1", "http://v1.demo.svc/"), ("meta", "http://meta.demo.svc/"), qps=10)
        paused = LoadPlan(RUN, NS, paused.load, paused.interval_seconds, active=False)
        assert why in load.converge({RUN: paused})[RUN]  # pausing does not lift a refusal
        assert load.observe(RUN, "v1", "request-count").status == "no-data"
        sent = servers["v1"].count
        time.sleep(0.5)
        assert servers["v1"].count == sent  # the whole run stopped
        # a changed plan is looked at again; without the bad version it runs
        fixed = plan(("v1", "http://v1.demo.svc/"), qps=10)
        assert load.converge({RUN: fixed}) == {}
        wait_until(lambda: count(load, "v1") >= 3, "the fixed plan loads")


def test_loopback_is_refused_unless_the_test_hook_named_it(servers: dict[str, Server]) -> None:
    dns = {"sneaky.demo.svc": f"127.0.0.1:{servers['outside'].port}"}
    with generator({}, dns=dns) as load:
        plans = {RUN: plan(("v1", "http://sneaky.demo.svc/"), qps=20)}
        assert load.converge(plans) == {}
        wait_until(lambda: RUN in load.converge(plans), "the run refused after resolving")
        assert "127.0.0.1 is a loopback address" in load.converge(plans)[RUN]
        time.sleep(0.3)
        assert servers["outside"].count == 0


def test_a_redirect_is_never_followed_and_counts_as_its_3xx_status(
    servers: dict[str, Server],
) -> None:
    outside = f"http://127.0.0.1:{servers['outside'].port}/"
    redirect = Server(lambda _n, _s: (302, {"Location": outside}))
    redirect.start()
    try:
        with generator({"v1.demo.svc": redirect.port}) as load:
            one = plan(("v1", "http://v1.demo.svc/"), qps=20)
            assert load.converge({RUN: one}) == {}
            wait_until(lambda: count(load, "v1") >= 5, "five answers")
            stats = load.stats(RUN, "v1")
            assert stats is not None
            assert set(stats.statuses) == {302}
            assert value(load, "v1", "error-count") == 0
            assert servers["outside"].count == 0
    finally:
        redirect.stop()


def test_caps_refuse_a_plan_with_why(servers: dict[str, Server]) -> None:
    hook = {"v1.demo.svc": servers["v1"].port, "v2.demo.svc": servers["v2"].port}
    with generator(
        hook, max_qps_per_experiment=30.0, max_qps_total=30.0, max_payload_bytes=8
    ) as load:
        two = (("v1", "http://v1.demo.svc/"), ("v2", "http://v2.demo.svc/"))
        first = plan(*two, run="demo/a@1", qps=10)
        second = plan(*two, run="demo/b@1", qps=10)
        greedy = plan(*two, run="demo/c@1", qps=20)
        heavy = plan(*two, run="demo/d@1", qps=1, payload="123456789")
        refused = load.converge({p.run_id: p for p in (first, second, greedy, heavy)})
        assert set(refused) == {"demo/b@1", "demo/c@1", "demo/d@1"}
        assert "over load.maxQpsTotal (30; 20 in use)" in refused["demo/b@1"]
        assert "over load.maxQpsPerExperiment (30)" in refused["demo/c@1"]
        assert "over load.maxPayloadBytes (8)" in refused["demo/d@1"]
        wait_until(lambda: count(load, "v1", run="demo/a@1") >= 2, "the admitted run loads")
        assert load.observe("demo/b@1", "v1", "request-count").status == "no-data"


def test_bad_load_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigError, match=r"load\.resolve: 'v1\.demo\.svc=localhost:80'"):
        HttpLoad.from_settings(LoadSettings(resolve=("v1.demo.svc=localhost:80",)))
    with pytest.raises(ConfigError, match="load_max_connections must be at least 1"):
        HttpLoad.from_settings(LoadSettings(max_connections=0))


def test_a_closed_generator_refuses_everything() -> None:
    load = HttpLoad(Caps())
    port: LoadGenerator = load  # the Protocol the loop is written against
    load.close()
    load.close()
    one = plan(("v1", "http://v1.demo.svc/"))
    assert port.converge({RUN: one}) == {RUN: "the load generator is closed"}
    assert port.observe(RUN, "v1", "request-count").status == "no-data"


class BrokenResolver:
    async def resolve(self, host: str, port: int) -> list[Address]:
        raise RuntimeError(f"a bug resolving {host}:{port}")


def test_a_failing_resolver_fails_its_requests_and_nothing_else(servers: dict[str, Server]) -> None:
    hook = (f"v1.demo.svc=127.0.0.1:{servers['v1'].port}",)
    load = HttpLoad.from_settings(LoadSettings(resolve=hook), resolver=BrokenResolver())
    with load:
        broken = plan(("v2", "http://v2.demo.svc/"), run="demo/broken@1", qps=20)
        fine = plan(("v1", "http://v1.demo.svc/"), qps=20)
        assert load.converge({broken.run_id: broken, RUN: fine}) == {}
        wait_until(lambda: count(load, "v2", run="demo/broken@1") >= 5, "five failures counted")
        assert value(load, "v2", "error-rate", run="demo/broken@1") == 1.0
        wait_until(lambda: count(load, "v1") >= 5, "the other run loads")


def test_a_payload_url_is_fetched_once_from_its_service_and_posted_to_every_version(
    servers: dict[str, Server],
) -> None:
    hook = {
        "v1.demo.svc": servers["v1"].port,
        "v2.demo.svc": servers["v2"].port,
        "payloads.demo.svc": servers["outside"].port,
    }
    with generator(hook) as load:
        one = plan(
            ("v1", "http://v1.demo.svc/"),
            ("v2", "http://v2.demo.svc/"),
            qps=10,
            method="POST",
            payload_url="http://payloads.demo.svc/order.json",
        )
        assert load.converge({RUN: one}) == {}
        wait_until(lambda: count(load, "v1") >= 3 and count(load, "v2") >= 3, "both loaded")
        fetched = [r for r in servers["outside"].requests if r.path == "/order.json"]
        assert len(fetched) == 1  # once for the run, for every version
        assert fetched[0].method == "GET"
        for name in ("v1", "v2"):
            posted = servers[name].requests[0]
            assert (posted.method, posted.body) == ("POST", b"ok")  # the fetched body


def test_a_payload_url_that_resolves_to_a_forbidden_address_refuses_the_run(
    servers: dict[str, Server],
) -> None:
    hook = {"v1.demo.svc": servers["v1"].port}
    dns = {"payloads.demo.svc": "169.254.169.254:80"}
    with generator(hook, dns=dns) as load:
        one = plan(("v1", "http://v1.demo.svc/"), qps=10, payload_url="http://payloads.demo.svc/p")
        plans = {RUN: one}
        assert load.converge(plans) == {}
        wait_until(lambda: RUN in load.converge(plans), "the run refused after resolving")
        assert "payloadURL" in load.converge(plans)[RUN]
        assert "169.254.169.254" in load.converge(plans)[RUN]
        assert servers["v1"].count == 0  # nothing was sent without its payload
        outside = plan(("v1", "http://v1.demo.svc/"), qps=10, payload_url="http://10.0.0.1/p")
        assert "payloadURL" in load.converge({RUN: outside})[RUN]
