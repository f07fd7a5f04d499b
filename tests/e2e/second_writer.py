"""A second writer of main, run as its own process by the end-to-end tests.

``python tests/e2e/second_writer.py URL WORKDIR STOP_FILE PROGRESS_FILE PAUSE`` clones the
Env repo, then, until ``STOP_FILE`` exists, appends ``writer line N`` to ``writer.log``,
commits (``writer: line N``), pushes to main and waits ``PAUSE`` seconds (a CI bot busy
all day, not a tight loop that no compare-and-swap could ever get between). A rejected push
is what a person would handle: fetch, rebase onto the new main, push again (at most 50
times per commit).
After each accepted push it writes ``N REJECTIONS`` to ``PROGRESS_FILE``. Uses the git
program with the environment it is given (identity, no user config).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ATTEMPTS = 50


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run git; the finished process (the caller checks it)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def must(done: subprocess.CompletedProcess[str]) -> None:
    """Exit with git's message when it failed."""
    if done.returncode != 0:
        sys.exit(f"second writer: git {' '.join(done.args[1:])} failed: {done.stderr}")


def main(url: str, work: Path, stop_file: Path, progress: Path, pause: float) -> None:
    """Write until told to stop."""
    must(git("clone", "--quiet", url, str(work)))
    log = work / "writer.log"
    line = rejected = 0
    while not stop_file.exists():
        line += 1
        with log.open("a") as out:
            out.write(f"writer line {line}\n")
        must(git("add", "writer.log", cwd=work))
        must(git("commit", "--quiet", "-m", f"writer: line {line}", cwd=work))
        for _ in range(ATTEMPTS):
            if git("push", "--quiet", "origin", "HEAD:main", cwd=work).returncode == 0:
                break
            rejected += 1
            must(git("pull", "--quiet", "--rebase", "origin", "main", cwd=work))
        else:
            sys.exit(f"second writer: line {line} still rejected after {ATTEMPTS} pushes")
        partial = progress.with_suffix(".partial")
        partial.write_text(f"{line} {rejected}\n")
        partial.replace(progress)  # readers never see a half-written file
        time.sleep(pause)


if __name__ == "__main__":
    url, work, stop_file, progress, pause = sys.argv[1:6]
    main(url, Path(work), Path(stop_file), Path(progress), float(pause))
