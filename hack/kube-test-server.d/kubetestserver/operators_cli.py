"""Command line of ``hack/gitops-test-operators``: build, paths, run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kubetestserver import build, operators
from kubetestserver.server import StopSignal

GROUPS = {"flux": build.FLUX, "argocd": (build.ARGOCD,), "all": build.OPERATORS}
BUILD_NOTE = (
    "the first build on a machine downloads the modules and compiles them: about 6 minutes "
    "for Flux's two controllers and 3 more for Argo CD on 2 cores; later runs reuse the "
    "cached binaries"
)


def main(argv: list[str]) -> int:
    """Run one sub-command; exit status 0 on success, 1 on failure (with a message)."""
    parser = argparse.ArgumentParser(
        prog="hack/gitops-test-operators",
        description="Flux's source-controller and kustomize-controller (and Argo CD's "
        "application controller and repo server) built from pinned Go modules, cached, and "
        "run beside hack/kube-test-server for the e2e tests.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build and cache the binaries unless cached")
    build_parser.add_argument("group", nargs="?", choices=sorted(GROUPS), default="flux")
    commands.add_parser("paths", help="print the cached binaries' paths as JSON")
    run = commands.add_parser("run", help="start the controllers, stop them on Ctrl-C")
    run.add_argument("group", choices=["flux", "argocd"])
    run.add_argument("--kubeconfig", type=Path, required=True)
    run.add_argument("--dir", type=Path, required=True, help="logs and Flux's artifact storage")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name, path in build.build(sys.stderr, GROUPS[args.group], BUILD_NOTE).items():
                print(f"{name}: {path}")
        elif args.command == "paths":
            paths = {name: str(path) for name, path in build.binaries(build.OPERATORS).items()}
            absent = build.missing(build.OPERATORS)
            print(json.dumps({"binaries": paths, "missing": absent}, indent=2))
        else:
            return _run(args.group, args.kubeconfig, args.dir)
    except (build.BuildError, operators.OperatorError) as exc:
        print(f"gitops-test-operators: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(group: str, kubeconfig: Path, directory: Path) -> int:
    stop = StopSignal()
    start = operators.start_flux if group == "flux" else operators.start_argocd
    running = start(directory, kubeconfig)
    print(
        f"gitops-test-operators: {group} runs against {kubeconfig}; logs in {directory}; "
        "Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        while not stop.requested:
            running.check()
            time.sleep(0.5)
    finally:
        running.stop()
    return 0
