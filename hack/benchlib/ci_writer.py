"""A CI job that keeps committing to main, for ``hack/bench.py race``; run as a process.

    python ci_writer.py URL WORKDIR RATE SECONDS OUT.json [STOP]

Clones URL into WORKDIR, then for SECONDS (and, with STOP, until the file STOP exists)
pushes RATE commits a second to main, each
appending one line (``ci <n>``) to ``ci.log``. A rejected push is followed by
``git pull --rebase`` and another push, as CI jobs do, until it lands (a CI commit is never
given up). Writes ``{"pushed": [n, ...], "attempts": [...], "rejections": R}`` to OUT.json.
Uses the git program with the environment it is given; prints nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

_GIVE_UP_AFTER = 120.0
"""Seconds after the end of its run a CI commit may still try to land (then it is lost)."""
_REJECTED = ("rejected", "fetch first", "non-fast-forward", "failed to update ref", "cannot lock")


def _git(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=work, capture_output=True, text=True, check=False)


def main() -> None:
    """Run the CI writer (see the module's docstring)."""
    url, work, rate, seconds, out = (
        sys.argv[1],
        Path(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
        Path(sys.argv[5]),
    )
    stop = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    done = subprocess.run(
        ["git", "clone", "--quiet", url, str(work)], capture_output=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"ci_writer: clone failed: {done.stderr!r}")
    pushed: list[int] = []
    attempts: list[int] = []
    rejections = 0
    started = time.monotonic()
    deadline = started + seconds + _GIVE_UP_AFTER

    def running() -> bool:
        return time.monotonic() < started + seconds or (stop is not None and not stop.exists())

    n = 0
    while running():
        due = started + n / rate
        time.sleep(max(0.0, due - time.monotonic()))
        with (work / "ci.log").open("a") as log:
            log.write(f"ci {n}\n")
        _git(work, "add", "ci.log")
        _git(work, "commit", "--quiet", "-m", f"ci: build {n}")
        tries = 0
        deadline = max(deadline, time.monotonic() + _GIVE_UP_AFTER)
        while time.monotonic() < deadline:
            tries += 1
            push = _git(work, "push", "--quiet", "origin", "HEAD:main")
            if push.returncode == 0:
                pushed.append(n)
                attempts.append(tries)
                break
            if not any(word in push.stderr for word in _REJECTED):
                raise SystemExit(f"ci_writer: push failed: {push.stderr}")
            rejections += 1
            if _git(work, "pull", "--quiet", "--rebase", "origin", "main").returncode != 0:
                raise SystemExit("ci_writer: rebase failed")
        n += 1
    out.write_text(
        json.dumps({"pushed": pushed, "attempts": attempts, "rejections": rejections, "made": n})
    )


if __name__ == "__main__":
    main()
