"""Run etcd and kube-apiserver on loopback for tests: TLS, static tokens, RBAC.

``up(DIR)`` generates a CA, a serving certificate for 127.0.0.1 and a service-account
signing key (with ``openssl``), random static tokens, then starts a detached supervisor
process (``kube-test-server supervise``) that starts etcd and the API server on free
loopback ports, waits for ``/readyz``, writes ``DIR/kubeconfig`` and ``DIR/server.json``,
and stops both when it gets SIGTERM (``down(DIR)``) or when the process it was told to
follow exits (the pytest session), so nothing outlives its owner. The children also get
SIGKILL from the kernel if the supervisor dies (``PR_SET_PDEATHSIG``). Standard library
only.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from kubetestserver import build

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
USERS = {
    # name: groups. ``admin`` is cluster-admin; ``nobody`` is authenticated and nothing else.
    "admin": ["system:masters"],
    "nobody": [],
}


class ServerError(RuntimeError):
    """The test server cannot be started or stopped; says why and where the logs are."""


class Paths:
    """Files of one server directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        pki = root / "pki"
        self.pki = pki
        self.ca_key = pki / "ca.key"
        self.ca_crt = pki / "ca.crt"
        self.tls_key = pki / "apiserver.key"
        self.tls_crt = pki / "apiserver.crt"
        self.sa_key = pki / "sa.key"
        self.sa_pub = pki / "sa.pub"
        self.tokens_csv = pki / "tokens.csv"
        self.tokens_json = pki / "tokens.json"
        self.etcd_data = root / "etcd-data"
        self.etcd_log = root / "etcd.log"
        self.apiserver_log = root / "kube-apiserver.log"
        self.supervisor_log = root / "supervisor.log"
        self.supervisor_pid = root / "supervisor.pid"
        self.server_json = root / "server.json"
        self.kubeconfig = root / "kubeconfig"


# -- up / down --------------------------------------------------------------------------


def up(root: Path, out: IO[str], *, follow_pid: int | None = None) -> dict[str, Any]:
    """Start the server in ``root`` (unless it runs there already); return ``server.json``.

    Raises:
        ServerError: when a binary is missing or a process does not become ready.
    """
    paths = Paths(root.resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    running = _running_supervisor(paths)
    if running is not None and paths.server_json.is_file():
        print(f"kube-test-server: already up in {paths.root} (pid {running})", file=out)
        return _load_json(paths.server_json)
    absent = build.missing()
    if absent:
        raise ServerError(
            f"{' and '.join(absent)} not built yet: run `hack/kube-test-server build` "
            f"(binaries are cached under {build.cache_dir()})"
        )
    _prepare(paths)
    paths.server_json.unlink(missing_ok=True)
    command = [sys.executable, str(build.HERE.parent / "kube-test-server"), "supervise"]
    command += ["--dir", str(paths.root)]
    if follow_pid is not None:
        command += ["--follow-pid", str(follow_pid)]
    with paths.supervisor_log.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT + 30
    while time.monotonic() < deadline:
        if paths.server_json.is_file():
            return _load_json(paths.server_json)
        if process.poll() is not None:
            raise ServerError(
                f"the test server did not start; {paths.supervisor_log}:\n"
                f"{_tail(paths.supervisor_log)}"
            )
        time.sleep(0.05)
    down(paths.root, out)
    raise ServerError(f"the test server did not start in time; see {paths.root}/*.log")


def down(root: Path, out: IO[str]) -> bool:
    """Stop the server in ``root``; True when one was running. Leaves no process behind."""
    paths = Paths(root.resolve())
    pid = _running_supervisor(paths)
    if pid is None:
        _kill_leftovers(paths)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _kill_leftovers(paths)
    print(f"kube-test-server: stopped (was pid {pid})", file=out)
    return True


def running(root: Path) -> int | None:
    """Pid of the supervisor running in ``root``, if any."""
    return _running_supervisor(Paths(root.resolve()))


def _running_supervisor(paths: Paths) -> int | None:
    try:
        pid = int(paths.supervisor_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_ours(pid, "supervise", str(paths.root)) else None


def _kill_leftovers(paths: Paths) -> None:
    """Kill etcd / kube-apiserver recorded for ``paths`` if they somehow survived."""
    if not paths.server_json.is_file():
        return
    info = _load_json(paths.server_json)
    for pid in info.get("pids", {}).values():
        if _is_ours(int(pid), str(paths.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    paths.server_json.unlink(missing_ok=True)


def _is_ours(pid: int, *needles: str) -> bool:
    """Whether ``pid`` is alive and its command line names all ``needles`` (no PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return all(n in cmdline for n in needles)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not running anymore
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- credentials ------------------------------------------------------------------------


def _prepare(paths: Paths) -> None:
    """CA, serving certificate, service-account key and tokens (kept if already there)."""
    pki = paths.pki
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not paths.ca_crt.is_file():
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", paths.ca_key, "-out", paths.ca_crt, "-days", "30",
            "-subj", "/CN=kube-test-server CA",
        )  # fmt: skip
    if not paths.tls_crt.is_file():
        csr = pki / "apiserver.csr"
        ext = pki / "apiserver.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth\n"
            "keyUsage=critical,digitalSignature\n"
            "basicConstraints=critical,CA:FALSE\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", paths.tls_key, "-out", csr, "-subj", "/CN=kube-apiserver",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr, "-CA", paths.ca_crt, "-CAkey", paths.ca_key,
            "-CAcreateserial", "-out", paths.tls_crt, "-days", "30", "-extfile", ext,
        )  # fmt: skip
    if not paths.sa_key.is_file():
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-out", paths.sa_key,
        )  # fmt: skip
        _openssl("pkey", "-in", paths.sa_key, "-pubout", "-out", paths.sa_pub)
    if not paths.tokens_json.is_file():
        tokens = {user: secrets.token_hex(24) for user in USERS}
        rows = [
            f'{tokens[user]},{user},{user}-uid,"{",".join(groups)}"'
            for user, groups in USERS.items()
        ]
        paths.tokens_csv.write_text("\n".join(rows) + "\n")
        paths.tokens_json.write_text(json.dumps(tokens, indent=2) + "\n")
    for secret in (paths.ca_key, paths.tls_key, paths.sa_key, paths.tokens_csv, paths.tokens_json):
        secret.chmod(0o600)


def _openssl(*args: str | Path) -> None:
    try:
        done = subprocess.run(
            ["openssl", *map(str, args)], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise ServerError("openssl is not installed (Debian package `openssl`)") from None
    if done.returncode != 0:
        raise ServerError(f"openssl {args[0]} failed: {done.stderr.strip()}")


# -- the supervisor ---------------------------------------------------------------------


class StopSignal:
    """Records SIGTERM and SIGINT (its handlers are installed when it is made)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.requested = True


def supervise(root: Path, follow_pid: int | None) -> int:
    """Start etcd and kube-apiserver, publish ``server.json``, stop both on SIGTERM."""
    paths = Paths(root.resolve())
    paths.supervisor_pid.write_text(f"{os.getpid()}\n")
    stop = StopSignal()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        info = _start_on_free_ports(paths, children)
        _write_kubeconfig(paths, info)
        info["kubeconfig"] = str(paths.kubeconfig)
        tmp = paths.server_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(paths.server_json)
        print(f"ready: {info['server']}", flush=True)
        while not stop.requested:
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} exited with {child.returncode}", flush=True)
                    return 1
            if follow_pid is not None and not _alive(follow_pid):
                print(f"process {follow_pid} is gone; stopping", flush=True)
                break
            time.sleep(0.25)
    except ServerError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    else:
        return 0
    finally:
        for _name, child in reversed(children):
            _stop(child)
        paths.server_json.unlink(missing_ok=True)
        paths.supervisor_pid.unlink(missing_ok=True)
        print("stopped", flush=True)


def _start_on_free_ports(
    paths: Paths, children: list[tuple[str, subprocess.Popen[bytes]]]
) -> dict[str, Any]:
    """``_start``, again on other ports if one was taken between choosing and binding it."""
    for attempt in range(3):
        try:
            return _start(paths, children)
        except ServerError as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
            print(f"a port was taken meanwhile, trying others: {exc}", flush=True)
            for _name, child in reversed(children):
                _stop(child)
            children.clear()
    raise AssertionError  # unreachable: the loop returns or raises


def _start(paths: Paths, children: list[tuple[str, subprocess.Popen[bytes]]]) -> dict[str, Any]:
    bins = build.binaries()
    etcd_port, peer_port, api_port = free_ports(3)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd = _spawn(
        [
            str(bins["etcd"]),
            "--name=kube-test",
            f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=kube-test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true",  # a throw-away test store: speed over durability
            "--log-level=warn",
        ],
        paths.etcd_log,
    )
    children.append(("etcd", etcd))
    _wait_http(f"{etcd_url}/health", etcd, paths.etcd_log, "etcd", lambda body: "true" in body)
    server = f"https://127.0.0.1:{api_port}"
    apiserver = _spawn(
        [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={paths.tls_crt}",
            f"--tls-private-key-file={paths.tls_key}",
            f"--cert-dir={paths.pki}",
            f"--token-auth-file={paths.tokens_csv}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={paths.sa_pub}",
            f"--service-account-signing-key-file={paths.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ],
        paths.apiserver_log,
    )
    children.append(("kube-apiserver", apiserver))
    tokens = {str(k): str(v) for k, v in _load_json(paths.tokens_json).items()}
    context = ssl.create_default_context(cafile=str(paths.ca_crt))
    _wait_http(
        f"{server}/readyz",
        apiserver,
        paths.apiserver_log,
        "kube-apiserver",
        lambda body: body.strip() == "ok",
        token=tokens["admin"],
        context=context,
    )
    return {
        "server": server,
        "ca": str(paths.ca_crt),
        "tokens": tokens,
        "etcd": etcd_url,
        "pids": {"etcd": etcd.pid, "kube-apiserver": apiserver.pid},
        "dir": str(paths.root),
    }


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervisor dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the supervisor has one thread
        )


def _wait_http(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    what: str,
    ok: Any,  # noqa: ANN401 - Callable[[str], bool]
    *,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(
                f"{what} exited with {process.returncode} before it was ready; "
                f"{log_path}:\n{_tail(log_path)}"
            )
        request = urllib.request.Request(url)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                body = response.read().decode()
                if ok(body):
                    return
                last = body
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ServerError(f"{what} not ready after {READY_TIMEOUT:.0f} s ({last}); see {log_path}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _write_kubeconfig(paths: Paths, info: dict[str, Any]) -> None:
    ca = base64.b64encode(paths.ca_crt.read_bytes()).decode()
    users = list(info["tokens"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kube-test-server",
                "cluster": {"server": info["server"], "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": user, "user": {"token": info["tokens"][user]}} for user in users],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "kube-test-server", "user": user, "namespace": "default"},
            }
            for user in users
        ],
        "current-context": "admin",
    }
    # JSON is YAML: every kubeconfig reader accepts it
    paths.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")
    paths.kubeconfig.chmod(0o600)


def _load_json(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text())
    if not isinstance(loaded, dict):
        raise ServerError(f"{path} does not hold a JSON object")
    return loaded


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
