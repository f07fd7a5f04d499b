from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec.targets import (
    TargetError,
    address_problem,
    check_headers,
    check_method,
    check_target,
    parse_resolve,
    parse_target,
)

NS = "demo"


@pytest.mark.parametrize(
    ("url", "host", "port", "target", "authority"),
    [
        ("http://v1.demo.svc", "v1.demo.svc", 80, "/", "v1.demo.svc"),
        ("http://v1.demo.svc:8080/", "v1.demo.svc", 8080, "/", "v1.demo.svc:8080"),
        (
            "https://Reviews-V2.Demo.svc.cluster.local:8443/api/v1?x=1&y=%20",
            "reviews-v2.demo.svc.cluster.local",
            8443,
            "/api/v1?x=1&y=%20",
            "reviews-v2.demo.svc.cluster.local:8443",
        ),
        ("HTTPS://v1.demo.svc/a#frag", "v1.demo.svc", 443, "/a", "v1.demo.svc"),
    ],
)
def test_in_cluster_service_urls_are_accepted_and_normalised(
    url: str, host: str, port: int, target: str, authority: str
) -> None:
    assert check_target(url, NS) is None
    parsed = parse_target(url)
    assert (parsed.host, parsed.port, parsed.target, parsed.authority) == (
        host,
        port,
        target,
        authority,
    )
    assert parsed.namespace == "demo"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/", "IP address is not a Service name"),
        ("http://169.254.169.254/latest/meta-data/", "IP address is not a Service name"),
        ("http://[::1]:8080/", "IP address is not a Service name"),
        ("http://[fe80::1%25eth0]/", "IP address is not a Service name"),
        ("http://2130706433/", "numeric IP address"),
        ("http://0x7f000001/", "numeric IP address"),
        ("http://0177.0.0.1/", "numeric IP address"),
        ("http://127.1/", "numeric IP address"),
        ("http://0x7f.1/", "numeric IP address"),
        ("http://user@v1.demo.svc/", "user information"),
        ("http://user:pw@v1.demo.svc/", "user information"),
        ("http://v1.demo.svc:80@evil.example/", "user information"),
        ("http://evil.example#@v1.demo.svc/", "not an in-cluster Service name"),
        ("http://v1.demo.svc\\@evil.example/", "backslashes"),
        ("http://v1.demo.svc /", "without spaces"),
        ("http://v1.demo.svc\t/", "without spaces"),
        ("http://v1.d\u0435mo.svc/", "printable ASCII"),
        ("http://example.com/", "not an in-cluster Service name"),
        ("http://v1.demo.svc.example.com/", "not an in-cluster Service name"),
        ("http://v1.demo.svc.cluster.local.evil.example/", "not an in-cluster Service name"),
        ("http://v1.demo/", "not an in-cluster Service name"),
        ("http://a.v1.demo.svc/", "not an in-cluster Service name"),
        ("http://1v.demo.svc/", "not an in-cluster Service name"),
        ("http://v1.demo.svc./", "trailing dot"),
        ("http://v1%2edemo.svc/", "percent-encoded"),
        ("http://v1.demo.svc:0/", "is not a port"),
        ("http://v1.demo.svc:99999/", "is not a port"),
        ("http://v1.demo.svc:http/", "is not a port"),
        ("ftp://v1.demo.svc/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://v1.demo.svc:70/", "only http and https"),
        ("//v1.demo.svc/", "only http and https"),
        ("http:///path", "no host"),
        ("", "no URL"),
        ("http://v1.other.svc/", "namespace 'other' is not the experiment's"),
        ("http://kubernetes.default.svc/", "Kubernetes API server"),
        ("https://kubernetes.default.svc.cluster.local:443/api", "Kubernetes API server"),
    ],
)
def test_anything_but_an_allowed_in_cluster_service_is_refused_with_why(url: str, why: str) -> None:
    got = check_target(url, NS)
    assert got is not None
    assert why in got


def test_other_namespaces_only_when_the_configuration_allows_them() -> None:
    url = "http://v1.other.svc/"
    assert check_target(url, NS, ("other",)) is None
    assert check_target(url, NS, ("third",)) is not None
    assert check_target(url, NS, ("*",)) is None
    why = check_target("http://kubernetes.default.svc/", NS, ("*", "default"))
    assert why is not None
    assert "API server" in why


@given(st.ip_addresses())
def test_no_spelling_of_an_ip_address_is_a_target(ip: ipaddress.IPv4Address | object) -> None:
    if isinstance(ip, ipaddress.IPv4Address):
        value = int(ip)
        spellings = [str(ip), str(value), hex(value), f"0{value:o}"]
        octets = str(ip).split(".")
        spellings.append(".".join(f"0{int(o):o}" for o in octets))
        spellings.append(f"{octets[0]}.{value & 0xFFFFFF}")
    else:
        spellings = [f"[{ip}]"]
    for host in spellings:
        assert check_target(f"http://{host}/", NS) is not None, host
        assert check_target(f"http://{host}:8080/x", NS) is not None, host


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ((("Host", "evil.example"),), "may not be set"),
        ((("host", "v1.demo.svc"),), "may not be set"),
        ((("Content-Length", "5"),), "may not be set"),
        ((("Transfer-Encoding", "chunked"),), "may not be set"),
        ((("Connection", "close"),), "may not be set"),
        ((("X Bad", "1"),), "not an HTTP token"),
        ((("X-Ok", "a\r\nHost: evil"),), "line break"),
    ],
)
def test_headers_that_redirect_or_reframe_a_request_are_refused(
    headers: tuple[tuple[str, str], ...], why: str
) -> None:
    got = check_headers(headers)
    assert got is not None
    assert why in got


def test_plain_headers_and_methods_pass() -> None:
    assert check_headers((("x-user-group", "beta"), ("Cookie", "segment=b"))) is None
    assert check_method("post") is None
    for method in ("CONNECT", "TRACE", "PROPFIND", ""):
        assert check_method(method) is not None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("10.96.0.1", "API server"),
        ("not-an-ip", "not an IP address"),
    ],
)
def test_addresses_a_name_may_not_resolve_to(address: str, why: str) -> None:
    got = address_problem(address, api_servers=("10.96.0.1",))
    assert got is not None
    assert why in got


def test_cluster_addresses_pass_and_the_test_hook_is_trusted() -> None:
    for address in ("10.96.12.34", "172.20.0.9", "192.168.1.2", "fd00:10:96::a"):
        assert address_problem(address, api_servers=("10.96.0.1",)) is None
    assert address_problem("127.0.0.1", from_hook=True) is None


def test_the_resolve_hook_reads_name_equals_ip_colon_port() -> None:
    assert parse_resolve(["v1.demo.svc=127.0.0.1:8081", " V2.demo.svc = [::1]:9000 "]) == {
        "v1.demo.svc": ("127.0.0.1", 8081),
        "v2.demo.svc": ("::1", 9000),
    }
    for bad in ("v1.demo.svc", "=127.0.0.1:80", "v1=127.0.0.1", "v1=localhost:80", "v1=1.2.3.4:0"):
        with pytest.raises(ValueError, match=r"load\.resolve"):
            parse_resolve([bad])


def test_the_pure_checks_import_without_httpx_or_any_socket_library() -> None:
    code = (
        "import sys\n"
        "for name in ('httpx', 'httpcore', 'anyio', 'socket', 'asyncio', 'structlog'):\n"
        "    sys.modules[name] = None\n"
        "from reconciler.spec.targets import check_target\n"
        "from reconciler.load import admission, pacing, stats\n"
        "assert check_target('http://v1.demo.svc/', 'demo') is None\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_parse_target_raises_what_check_target_returns() -> None:
    with pytest.raises(TargetError, match="numeric IP address"):
        parse_target("http://2130706433/")
