"""Command line of ``hack/kube-test-server``: build, gomod, up, down, status, supervise."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from kubetestserver import build, server


def main(argv: list[str]) -> int:
    """Run one sub-command; exit status 0 on success, 1 on failure (with a message)."""
    parser = argparse.ArgumentParser(
        prog="hack/kube-test-server",
        description="A real kube-apiserver and etcd on loopback for tests "
        "(TLS, static tokens, RBAC), built from pinned Go modules and cached.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build and cache the binaries unless cached")
    commands.add_parser("paths", help="print the cached binaries' paths as JSON")
    gomod = commands.add_parser("gomod", help="regenerate the pinned Go modules")
    gomod.add_argument("--kubernetes", default=build.KUBERNETES_VERSION)
    gomod.add_argument("--etcd", default=build.ETCD_VERSION)
    for name, text in (
        ("up", "start etcd and kube-apiserver, wait for /readyz, print DIR/kubeconfig"),
        ("down", "stop what `up` started in DIR"),
        ("status", "say whether a server runs in DIR (exit status 3: it does not)"),
        ("supervise", "internal: the process `up` starts"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, required=True)
        if name in {"up", "supervise"}:
            sub.add_argument(
                "--follow-pid",
                type=int,
                help="stop the server when this process exits (the test session)",
            )
        if name == "up":
            sub.add_argument("--quiet", action="store_true", help="print nothing once it is up")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (build.BuildError, server.ServerError) as exc:
        print(f"kube-test-server: {exc}", file=sys.stderr)
        return 1


def _build(_args: argparse.Namespace) -> int:
    for name, path in build.build(sys.stderr).items():
        print(f"{name}: {path}")
    return 0


def _paths(_args: argparse.Namespace) -> int:
    paths = {name: str(path) for name, path in build.binaries().items()}
    print(json.dumps({"binaries": paths, "missing": build.missing()}, indent=2))
    return 0


def _gomod(args: argparse.Namespace) -> int:
    build.generate_modules(sys.stderr, args.kubernetes, args.etcd)
    return 0


def _up(args: argparse.Namespace) -> int:
    build.build(sys.stderr)
    info = server.up(args.dir, sys.stderr, follow_pid=args.follow_pid)
    if not args.quiet:
        print(Path(info["kubeconfig"]).read_text(), end="")
        print(
            f"kube-test-server: up at {info['server']}; export KUBECONFIG={info['kubeconfig']}; "
            f"stop it with `hack/kube-test-server down --dir {args.dir}`",
            file=sys.stderr,
        )
    return 0


def _down(args: argparse.Namespace) -> int:
    if not server.down(args.dir, sys.stderr):
        print(f"kube-test-server: nothing running in {args.dir}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    pid = server.running(args.dir)
    print(f"running (pid {pid})" if pid else "not running")
    return 0 if pid else 3


def _supervise(args: argparse.Namespace) -> int:
    return server.supervise(args.dir, args.follow_pid)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": _build,
    "paths": _paths,
    "gomod": _gomod,
    "up": _up,
    "down": _down,
    "status": _status,
    "supervise": _supervise,
}
