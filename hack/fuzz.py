"""A longer fuzzing campaign against the experiment and Metric loaders and ``validate``.

    python hack/fuzz.py --examples 3000 [--seed 1]

Draws inputs from ``tests.fuzzdocs.files()`` (mutants of the valid corpus, at the byte and
the structure level), loads each as experiments and Metric documents and validates it,
and prints a table and one JSON line: inputs tried, exceptions by kind, max and p99 time
per input, max memory per input (tracemalloc). Exits 1 when any exception escaped.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzzdocs import Outcome, files, load_everything


def campaign(examples: int, rng_seed: int) -> list[tuple[Outcome, bytes]]:
    """Run ``examples`` inputs; every outcome, with its input."""
    outcomes: list[tuple[Outcome, bytes]] = []

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(files())
    def one(file: tuple[str, bytes]) -> None:
        outcomes.append((load_everything(*file), file[1]))

    tracemalloc.start()
    try:
        one()
    finally:
        tracemalloc.stop()
    return outcomes


def main() -> int:
    """Run the campaign and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    outcomes = campaign(args.examples, args.seed)
    times = sorted(o.seconds for o, _ in outcomes)
    kinds = collections.Counter(type(o.error).__name__ for o, _ in outcomes if o.error)
    summary = {
        "inputs": len(outcomes),
        "exceptions": dict(kinds),
        "max_seconds": round(times[-1], 4),
        "p99_seconds": round(times[int(len(times) * 0.99) - 1], 4),
        "max_peak_bytes": max(o.peak_bytes for o, _ in outcomes),
        "max_input_bytes": max(len(data) for _, data in outcomes),
    }
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    slowest, slow_data = max(outcomes, key=lambda pair: pair[0].seconds)
    print(
        f"  slowest input: {len(slow_data):,} bytes, {slowest.seconds:.3f} s: {slow_data[:120]!r}"
    )
    for outcome, data in outcomes:
        if outcome.error is not None:
            print(f"  {outcome.error!r:.200} <- {data[:120]!r}")
    print(json.dumps(summary))
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
