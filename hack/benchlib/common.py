"""Shared by every benchmark: git in a clean environment, statistics and tables."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

AUTHOR = ("bench", "bench@example.invalid")
HACK = Path(__file__).resolve().parent.parent
"""The ``hack/`` directory (scripts the benchmarks run live there)."""
REPO = HACK.parent
"""The repository's root (``python -m tests.…`` runs from there)."""


def git_binary() -> str:
    """Path of ``git``; exits with a message naming the Debian package when absent."""
    found = shutil.which("git")
    if found is None:
        raise SystemExit("bench: `git` is missing (Debian package git)")
    return found


def git_env(home: Path) -> dict[str, str]:
    """``tests.gitutil``'s clean environment for ``git`` in ``home``, as the benchmarks' AUTHOR."""
    # Imported here: it imports pytest, and ``memory`` measures a process importing this module.
    from tests import gitutil  # noqa: PLC0415

    return gitutil.git_env(home, author=AUTHOR)


def git(env: Mapping[str, str], *args: str | Path, cwd: Path | None = None) -> str:
    """Run ``git args``; return stdout stripped; exit the benchmark when it fails."""
    done = subprocess.run(
        [git_binary(), *map(str, args)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: git {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done.stdout.strip()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """CPU time of ``pid``, and of the children it has waited for (the cache's repacks)
    unless ``children`` is false. Raises OSError once ``pid`` is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    counted = fields[11:15] if children else fields[11:13]  # u, s, cu, cs time
    return sum(int(field) for field in counted) / _CLOCK_TICKS


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method, or NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """The median, 95th percentile (nearest rank) and max of ``values`` (NaN for none)."""
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "max": max(values, default=math.nan),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": median(values), "min": min(values), "max": max(values)}


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: right-aligned cells, floats with one decimal."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.1f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(columns[i]), *(len(r[i]) for r in cells)) if cells else len(columns[i])
        for i in range(len(columns))
    ]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def emit(result: Mapping[str, Any]) -> None:
    """Print the final JSON line (NaN becomes null) and flush."""

    def clean(value: Any) -> Any:  # noqa: ANN401 - JSON-ready data
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 4)
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    print(json.dumps(clean(dict(result))))
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    """Cores, memory and versions of the machine a figure was taken on."""
    memory = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    import pygit2  # noqa: PLC0415 - only the versions are wanted here

    version = subprocess.run(
        [git_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[-1]
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": sys.version.split()[0],
        "git": version,
        "libgit2": pygit2.LIBGIT2_VERSION,
        "pygit2": metadata.version("pygit2"),
    }
