"""``reconciler try``: the real loop on a scratch copy of your Env repo, nothing real touched.

Main's files (as read from your repo, which is never pushed to) become the only commit of
a new bare Env repo in a scratch directory. The in-process cluster is seeded from its
manifests as a GitOps operator would apply them, each version gets simulated metrics (a
``good`` or ``bad`` profile, or values per version from a file), and the loop runs on a
simulated clock, so an experiment of 10 iterations of 5 minutes ends in seconds. Before it
runs, it says what a real cluster would need that the repo lacks: a traffic object the
experiment names but no manifest holds, weights that do not sum to 100, a version the
builtin metrics would find no data for. Pure of the network: the scratch repo is local.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from ruamel.yaml.comments import CommentedMap

from reconciler.cluster.memory import MemoryCluster
from reconciler.controller.loop import Reconciler
from reconciler.demo.scenario import print_report
from reconciler.gitstore.admin import init_bare_repository
from reconciler.gitstore.repo import GitEnvStore
from reconciler.metrics.builtin import unnamed_versions
from reconciler.metrics.profile import Profile, ProfileMetrics
from reconciler.ports import CommitSpec
from reconciler.spec.limits import Limits
from reconciler.spec.loader import load_experiments, looks_like_experiment
from reconciler.spec.model import Experiment
from reconciler.spec.unread import named_objects
from reconciler.spec.yamldoc import finite_number, load_documents, location_of
from reconciler.testing import DrivenClock, weight_at, weight_refs

__all__ = ["PROFILES", "TrialError", "TrialResult", "load_profile", "run_trial"]

AUTHOR = ("reconciler try", "reconciler-try@example.invalid")
HEALTHY = Profile(error_rate=0.002, mean_latency_ms=80.0, p95_latency_ms=150.0)
FAILING = Profile(error_rate=0.08, mean_latency_ms=450.0, p95_latency_ms=900.0)
PROFILES = ("good", "bad")
"""``good``: every version healthy. ``bad``: the baseline healthy, every candidate failing."""
REQUEST_RATE = 2000.0
"""Requests per second the simulated app gets."""
MAX_TICKS = 2000
STALLED_TICKS = 10
"""Ticks in a row that record nothing before the trial stops (an experiment stuck)."""
FULL = 100
"""What the weights of an experiment's versions must sum to."""
PROFILE_KEYS = {
    "errorRate": "error_rate",
    "meanLatencyMs": "mean_latency_ms",
    "p95LatencyMs": "p95_latency_ms",
    "reward": "reward",
}


class TrialError(Exception):
    """The trial cannot run: what is wrong and what to do (one line)."""


@dataclass
class TrialResult:
    """How a trial ended."""

    outcomes: dict[str, str] = field(default_factory=dict)
    """Experiment key to ``promoted`` or ``rolled-back``."""
    needs: list[str] = field(default_factory=list)
    """What a real cluster would need that the repo lacks."""
    remote: str = ""
    experiments: int = 0
    """How many experiments the trial ran."""

    @property
    def ended(self) -> bool:
        """Whether every experiment reached an outcome."""
        return self.experiments > 0 and len(self.outcomes) == self.experiments


def load_profile(path: str, data: bytes) -> dict[str, Profile]:
    """A profile file: each version's ``errorRate``, ``meanLatencyMs``, ``p95LatencyMs``...

    Each value is optional (the rest are a healthy version's); ``reward`` too.

    Raises:
        TrialError: not such a mapping (the message gives file, line and what to fix).
    """
    documents, _lines, problem, _noted = load_documents(path, data, Limits())
    if problem is not None:
        raise TrialError(str(problem))
    if len(documents) != 1 or not isinstance(documents[0], CommentedMap):
        raise TrialError(f"{path}:1: a profile is one mapping: VERSION: {{errorRate: 0.01}}")
    profiles = {}
    for version, values in documents[0].items():
        where = location_of(path, documents[0], version)
        if not isinstance(values, CommentedMap):
            raise TrialError(f"{where}: '{version}' must map to errorRate/meanLatencyMs/...")
        fields = {}
        for key, value in values.items():
            number = finite_number(value)
            if key not in PROFILE_KEYS or number is None or number < 0:
                raise TrialError(
                    f"{location_of(path, values, key)}: '{version}.{key}' must be one of "
                    f"{', '.join(PROFILE_KEYS)} with a number >= 0"
                )
            fields[PROFILE_KEYS[key]] = number
        profiles[str(version)] = replace(HEALTHY, **fields)
    return profiles


def run_trial(
    files: Mapping[str, bytes],
    source: str,
    out: TextIO,
    *,
    workdir: Path,
    profile: str | Mapping[str, Profile] = "good",
    only: str | None = None,
) -> TrialResult:
    """Run every experiment in ``files`` (or ``only``, a path among them) to its outcome.

    ``files`` are main's YAML files by path; ``source`` names where they came from.

    Raises:
        TrialError: no experiment to run, or ``only`` is not one.
    """
    experiments = _experiments(files, out)
    if only is not None:
        if only not in experiments:
            known = ", ".join(sorted(experiments)) or "none"
            raise TrialError(f"{only} is not an experiment that loads (experiments: {known})")
        files = {p: d for p, d in files.items() if p == only or p not in experiments}
        experiments = {only: experiments[only]}
    if not experiments:
        raise TrialError(f"no experiment to try in {source}: add one, or give --experiment FILE")
    specs = [spec for found in experiments.values() for spec in found]
    profiles = _profiles(specs, profile)
    cluster = _seeded(files, set(experiments), specs[0].namespace, out)
    result = TrialResult(needs=_needs(specs, files, cluster), experiments=len(specs))
    out.write(f"Trying {len(specs)} experiment(s) of {source} on a scratch copy\n")
    out.writelines(f"  {spec.key}: {spec.testing_pattern.value}\n" for spec in specs)
    if result.needs:
        out.write("\nWhat a real cluster would need that the repo lacks:\n")
        out.writelines(f"  - {need}\n" for need in result.needs)
    remote = init_bare_repository(workdir / "env.git")
    result.remote = str(remote)
    store = GitEnvStore.open(str(remote), workdir / "cache.git", author=AUTHOR)
    store.fetch()
    commit = CommitSpec(f"try: main of {source}", dict(files))
    store.update_branch(store.main_branch, lambda _tip: [commit])
    clock = DrivenClock(start=1_800_000_000.0)
    refs = weight_refs(specs)
    metrics = ProfileMetrics(
        profiles, lambda v: weight_at(cluster, refs, v), clock, requests_per_second=REQUEST_RATE
    )
    reconciler = Reconciler(store, cluster, metrics, clock=clock)
    out.write("\n")
    step = max(spec.duration.interval_seconds for spec in specs)
    result.outcomes = _drive(reconciler, clock, step, len(specs), out)
    _print_end(store, out)
    return result


def _seeded(
    files: Mapping[str, bytes], skip: set[str], namespace: str, out: TextIO
) -> MemoryCluster:
    """A scratch cluster holding every manifest of ``files`` but ``skip``."""
    cluster = MemoryCluster()
    for path, data in sorted(files.items()):
        if path in skip:
            continue
        try:
            cluster.sync([(path, data)], namespace=namespace)
        except Exception as exc:  # noqa: BLE001 - one manifest the operator would refuse too
            out.write(f"{path}: not applied to the scratch cluster: {str(exc)[:200]}\n")
    return cluster


def _drive(
    reconciler: Reconciler, clock: DrivenClock, step: float, count: int, out: TextIO
) -> dict[str, str]:
    """Tick, a ``step`` of simulated time apart, until ``count`` experiments have ended."""
    outcomes: dict[str, str] = {}
    idle = 0
    for _ in range(MAX_TICKS):
        report = reconciler.tick()
        print_report(report, out)
        for transition, _commit in report.recorded:
            state = transition.state
            if state.phase.final and state.outcome_commit:
                outcomes[state.key] = "promoted" if state.winner else "rolled-back"
        if len(outcomes) == count:
            break
        idle = 0 if report.recorded else idle + 1
        if idle == STALLED_TICKS:
            out.write(
                f"\nstopped: nothing advanced in {STALLED_TICKS} iterations' time (see the "
                "errors above: a real cluster would stall the same way)\n"
            )
            break
        clock.advance(step)
    return outcomes


def _experiments(files: Mapping[str, bytes], out: TextIO) -> dict[str, list[Experiment]]:
    found: dict[str, list[Experiment]] = {}
    for path, data in sorted(files.items()):
        if not looks_like_experiment(data):
            continue
        loaded = load_experiments(path, data)
        out.writelines(f"{problem}\n" for problem in loaded.problems)
        if loaded.experiments:
            found[path] = list(loaded.experiments)
    return found


def _profiles(specs: list[Experiment], profile: str | Mapping[str, Profile]) -> dict[str, Profile]:
    if not isinstance(profile, str):
        missing = sorted({v.name for s in specs for v in s.versions} - set(profile))
        if missing:
            raise TrialError(f"the profile file has no values for {', '.join(missing)}")
        return dict(profile)
    if profile not in PROFILES:
        raise TrialError(f"--profile must be good, bad or a file, not {profile!r}")
    profiles = {}
    for spec in specs:
        profiles[spec.baseline.name] = HEALTHY
        for candidate in spec.candidates:
            profiles[candidate.name] = HEALTHY if profile == "good" else FAILING
    return profiles


def _needs(
    specs: list[Experiment], files: Mapping[str, bytes], cluster: MemoryCluster
) -> list[str]:
    """What the experiments expect of the cluster that the repo's manifests do not give."""
    objects = [o for path, data in files.items() for o in named_objects(path, data)]
    needs = []
    for spec in specs:
        total = 0
        known = True
        refs = weight_refs([spec])
        for name, ref in refs.items():
            if cluster.get(ref.api_version, ref.kind, ref.namespace, ref.name) is None:
                needs.append(
                    f"{spec.key}: {name}'s weight is in {ref.kind} "
                    f"{ref.namespace}/{ref.name}, which no manifest in the repo defines"
                )
                known = False
                continue
            weight = cluster.get_weight(ref)
            if weight is None:
                needs.append(
                    f"{spec.key}: {ref.kind} {ref.namespace}/{ref.name} has no weight at "
                    f"{ref.field_path} for {name}"
                )
                known = False
            else:
                total += weight
        if known and refs and total != FULL:
            needs.append(f"{spec.key}: the weights in the repo sum to {total}, not {FULL}")
        needs.extend(
            f"{spec.key}: no {u.kind} named '{u.version}' in the repo: the builtin metrics "
            f"select a version's series by its {u.kind}'s name, so a real mesh would give "
            "no data"
            for u in unnamed_versions(spec, objects)
        )
    return needs


def _print_end(store: GitEnvStore, out: TextIO) -> None:
    heads = store.fetch()
    if heads.main is not None:
        newest = next(iter(store.log(heads.main)))
        out.write(f"\n$ git show --no-patch {newest.id[:7]}   # the outcome on main\n")
        out.write(newest.message)
    for branch, tip in ((store.state_branch, heads.state), (store.main_branch, heads.main)):
        out.write(f"\n$ git log --oneline {branch}\n")
        if tip is not None:
            out.writelines(f"{c.id[:7]} {c.message.splitlines()[0]}\n" for c in store.log(tip))
