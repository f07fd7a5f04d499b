"""``fleet``: one ``reconciler run`` serving many Env repos, and the take-over after a kill.

Issue 23, part 4. **Ticks.** In ``fleetworld``'s world (REPOS Env repos of EXPERIMENTS
running canaries each, every one due once the process starts, served by one ``git
daemon``; the real kube-apiserver carrying each experiment's VirtualService; the real
Prometheus scraping simulated Istio traffic for every namespace, which does not follow the
weights: the bench measures the reconciler's cost, and every experiment keeps progressing,
one iteration and one state commit a tick), one ``python -m reconciler run --config FILE
--interval INTERVAL`` serves the ``repos:`` list as a user deploys it (Events on, JSON
logs at info, the product's worker count unless ``--workers``), pinned to core 0;
everything else the bench starts runs on the other cores (when there are any).

It is measured from outside: resident memory and CPU time from ``/proc/PID``; every
interval the process's /metrics (per repo the ticks' count and summed duration: a repo's
ticks end more than an interval apart, so each tick's wall time is a difference between two
samples, or two ticks' mean when a sample came late; pushes; metric values asked; a render
costs the process 0.1 s or more of CPU at 100 repos, so it is not read more often than a
Prometheus would), Prometheus' own count of the queries it answered; and the process's
log, whose ``transition_recorded`` lines give, per experiment, the gap between two of its
iterations (a repo's gap is its experiments' largest; a gap still open at the window's
end counts). After every repo's first tick (the cold round, from the process's start: what
``first round`` reports) and a warm-up, a window of ``--rounds`` intervals is measured:
tick wall times, gaps, CPU seconds per round (a round: every repo ticked once) and per
tick, peak (``VmHWM``, the whole life) and final RSS, pushes; and the CPU of each of the
world's servers on the other core (``_servers_cpu``), as a saturated one stretches every
tick that waits on it. **Take-over**: see ``takeover``.

Goals (issue 23): peak RSS under 300 MiB; every repo ticked within its interval, checked
as its largest gap at most the interval + 2 s (the schedule counts an interval from a
tick's end, so a gap is the interval plus a tick's wall time: the slack must hold that);
take-over within the Lease duration + 2 s. A missed goal is printed and recorded; only a
broken run (a process that exits, a repo that never ticks, an experiment that stops
progressing, Leases never spread or never taken over) exits non-zero.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchlib.common import cpu_seconds, emit, machine, percentile, quantiles, table
from benchlib.fleetworld import Fleet, fleet_world, namespace_of, start_process, write_config
from benchlib.takeover import measure as measure_takeover
from reconciler.engine.state import Phase
from tests.e2e.world import ReconcilerProcess

REPOS, EXPERIMENTS, INTERVAL = 100, 10, 10.0
MEMORY_GOAL_MIB = 300.0
SLACK = 2.0
"""Seconds a repo's largest gap may exceed its interval."""


def add_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's subparsers action
    """``fleet``'s options, under ``hack/bench.py``'s subcommands."""
    fle = sub.add_parser("fleet", help="one reconciler run serving many Env repos; take-over")
    fle.add_argument("--repos", type=int, default=REPOS)
    fle.add_argument("--experiments", type=int, default=EXPERIMENTS, help="running, per repo")
    fle.add_argument("--interval", type=float, default=INTERVAL, help="seconds between ticks")
    fle.add_argument("--workers", type=int, help="fleet.workers (default: the product's)")
    fle.add_argument("--warmup", type=float, help="seconds after the first round (2 intervals)")
    fle.add_argument("--rounds", type=int, default=6, help="intervals measured after warm-up")
    fle.add_argument(
        "--sample-every", type=float, help="seconds between /metrics samples (the interval)"
    )
    fle.add_argument("--replicas", type=int, default=3, help="take-over: replicas, one killed")
    fle.add_argument("--lease-duration", type=float, default=15.0)
    fle.add_argument("--renew-deadline", type=float, default=10.0)
    fle.add_argument("--retry-period", type=float, default=2.0)
    fle.add_argument("--no-takeover", action="store_true", help="measure the ticks only")
    fle.add_argument("--no-ticks", action="store_true", help="measure the take-over only")
    fle.add_argument("--keep-logs", help="copy the processes' logs and configs to this directory")
    fle.add_argument("--quick", action="store_true", help="5 repos x 2, 2 replicas: seconds")


def _status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (MiB) of ``pid``, and its CPU seconds (user + system), its repacks'
    (children it has waited for) included."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024
    fields["cpu"] = cpu_seconds(pid)
    return fields


SERVERS = {
    "prometheus": "Prometheus",
    "kube-apiserver": "API server",
    "etcd": "etcd",
    "git-daemon": "git daemon",
}
"""The world's servers by process name (``comm``), and how the bench names them."""


def _servers_cpu(work: Path) -> dict[str, float]:
    """CPU seconds so far of each of the world's servers, and of this process's simulators.

    A server is a process whose command line names ``work`` (its data, config or base
    path is there). The git daemon's count takes in the ``git upload-pack`` and ``git
    receive-pack`` it has waited for, which do the fetches' and pushes' work; this process's
    own time is the traffic simulators and their /metrics (the sampling is a small part).
    """
    found = dict.fromkeys(SERVERS.values(), 0.0)
    marker = str(work).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm not in SERVERS or marker not in (entry / "cmdline").read_bytes():
                continue
            spent = cpu_seconds(int(entry.name), children=comm == "git-daemon")
        except OSError:  # gone meanwhile
            continue
        found[SERVERS[comm]] += spent
    times = os.times()
    found["simulators"] = times.user + times.system
    return found


def _cores_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each core (``/proc/stat``)."""
    cores = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values]
            idle = numbers[3] + numbers[4]  # idle, iowait
            cores.append((sum(numbers[:8]) - idle, sum(numbers[:8])))
    return cores


# -- the ticks -------------------------------------------------------------------------------


@dataclass
class Sample:
    """The process at one moment: from /proc and from its /metrics."""

    t: float
    """``time.monotonic()``."""
    wall: float
    """``time.time()``."""
    cpu_s: float
    rss_mib: float
    hwm_mib: float
    count: dict[str, float]
    """Ticks ended so far, by repo."""
    seconds: dict[str, float]
    """Their summed wall time, by repo."""
    totals: dict[str, float]
    """Counters of the whole process (ticks by result, pushes by result, queries...)."""
    scrape_s: float
    cores: list[tuple[int, int]] = field(default_factory=list)
    servers: dict[str, float] = field(default_factory=dict)
    """CPU seconds so far of the world's servers and simulators (``_servers_cpu``)."""


_TOTALS = {
    "reconciler_ticks_total": ("ticks", "result"),
    "reconciler_git_pushes_total": ("pushes", "result"),
    "reconciler_prometheus_query_duration_seconds_count": ("queries", ""),
    "reconciler_prometheus_query_errors_total": ("query_errors", ""),
    "reconciler_kubernetes_request_errors_total": ("kube_errors", ""),
}
"""Samples summed over the process: (name, the label that splits the name, if any)."""


def _scrape(process: ReconcilerProcess, work: Path) -> Sample:
    started = time.perf_counter()
    status, body = process.request("/metrics")
    scrape = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"bench: /metrics answered {status}")
    count: dict[str, float] = {}
    seconds: dict[str, float] = {}
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "reconciler_tick_duration_seconds_count":
                count[s.labels["repo"]] = s.value
            elif s.name == "reconciler_tick_duration_seconds_sum":
                seconds[s.labels["repo"]] = s.value
            elif s.name in _TOTALS:
                name, label = _TOTALS[s.name]
                totals[f"{name}_{s.labels[label]}" if label else name] += s.value
    proc = _status(process.popen.pid)
    return Sample(
        t=time.monotonic(),
        wall=time.time(),
        cpu_s=proc["cpu"],
        rss_mib=proc["VmRSS"],
        hwm_mib=proc["VmHWM"],
        count=count,
        seconds=seconds,
        totals=dict(totals),
        scrape_s=scrape,
        cores=_cores_busy(),
        servers=_servers_cpu(work),
    )


@dataclass
class Ticks:
    """What the ticks' window measured."""

    samples: list[Sample]
    first: Sample
    """The window's first sample."""
    last: Sample
    started_wall: float
    """When the process was started (``time.time()``)."""
    log: Path
    http_queries: float
    """Queries Prometheus answered in the window, by its own count (sample sizes included)."""


def _run_ticks(fleet: Fleet, args: argparse.Namespace, cpus: set[int] | None) -> Ticks:
    """Start the process, wait for the first round and the warm-up, sample the window."""
    extra: dict[str, Any] = {}
    if args.workers:
        extra["fleet"] = {"workers": args.workers}
    config = write_config(fleet, fleet.urls, "ticks", extra)
    started_wall = time.time()
    process = start_process(fleet, config, "ticks", args.interval, cpus)
    try:
        samples: list[Sample] = []
        first_round_by = time.monotonic() + max(120.0, 10 * args.interval)
        window_start: float | None = None
        window: Sample | None = None
        answered = 0.0
        while True:
            if process.exit_code is not None:
                raise SystemExit(f"bench: reconciler run exited:\n{process.log_tail()}")
            sample = _scrape(process, fleet.work)
            samples.append(sample)
            if window_start is None:
                if all(sample.count.get(url, 0) >= 1 for url in fleet.urls):
                    window_start = sample.t + args.warmup
                elif sample.t > first_round_by:
                    missing = [u for u in fleet.urls if sample.count.get(u, 0) < 1]
                    raise SystemExit(
                        f"bench: {len(missing)} repos never ticked (first: {missing[0]}):\n"
                        f"{process.log_tail()}"
                    )
            elif window is None and sample.t >= window_start:
                window = sample
                answered = _answered(fleet.prometheus_url)
            elif window is not None and sample.t >= window.t + args.rounds * args.interval:
                answered = _answered(fleet.prometheus_url) - answered
                return Ticks(samples, window, sample, started_wall, process.log, answered)
            time.sleep(max(0.0, sample.t + args.sample_every - time.monotonic()))
    finally:
        process.stop()


def _answered(url: str) -> float:
    """Instant queries Prometheus answered so far (``prometheus_http_requests_total``)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "prometheus_http_requests_total" and s.labels.get("handler") == "/api/v1/query"
    )


def _transitions(log: Path, namespaces: Mapping[str, int]) -> list[tuple[float, int, str, str]]:
    """(time, repo, experiment, phase) of every ``transition_recorded`` line of the log."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"transition_recorded"' not in line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = str(event["experiment"]).split("@", 1)[0]
        repo = namespaces.get(key.split("/", 1)[0])
        if repo is not None:
            at = datetime.fromisoformat(str(event["timestamp"])).timestamp()
            found.append((at, repo, key, str(event.get("phase"))))
    return found


def _gaps(
    transitions: Sequence[tuple[float, int, str, str]], start: float, end: float, repos: int
) -> tuple[list[float], list[float]]:
    """The gaps between two iterations of an experiment in a window, and each repo's largest.

    A gap counts when it ends in (``start``, ``end``]; for a repo's largest, a gap still
    open at ``end`` counts too (a repo that stopped shows), and a repo silent all along is
    inf.
    """
    by_experiment: dict[str, list[float]] = defaultdict(list)
    repo_of: dict[str, int] = {}
    for at, repo, key, _phase in transitions:
        by_experiment[key].append(at)
        repo_of[key] = repo
    gaps: list[float] = []
    largest = [math.inf] * repos
    for key, times in by_experiment.items():
        times.sort()
        closed = [b - a for a, b in itertools.pairwise(times) if start < b <= end]
        gaps.extend(closed)
        before = [t for t in times if t <= end]
        # still open at the end: an experiment, or a repo, that stopped ticking shows here
        still = [end - before[-1]] if before else []
        repo = repo_of[key]
        mine = max([*closed, *still], default=math.inf)
        largest[repo] = mine if math.isinf(largest[repo]) else max(largest[repo], mine)
    return gaps, largest


def _tick_seconds(samples: Sequence[Sample], first: Sample, last: Sample) -> dict[str, list[float]]:
    """Each tick's wall time in the window, by repo (a count step between two samples)."""
    inside = [s for s in samples if first.t <= s.t <= last.t]
    found: dict[str, list[float]] = defaultdict(list)
    for a, b in itertools.pairwise(inside):
        for repo, count in b.count.items():
            ended = count - a.count.get(repo, 0)
            if ended >= 1:
                mean = (b.seconds[repo] - a.seconds.get(repo, 0.0)) / ended
                found[repo].extend([mean] * int(ended))
    return found


def summarize_ticks(ticks: Ticks, fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """The window's figures; a broken world exits."""
    first, last = ticks.first, ticks.last
    namespaces = {namespace_of(r): r for r in range(args.repos)}
    transitions = _transitions(ticks.log, namespaces)
    gaps, largest = _gaps(transitions, first.wall, last.wall, args.repos)
    in_window = [t for t in transitions if first.wall < t[0] <= last.wall]
    phases = Counter(phase for *_rest, phase in in_window)
    silent = [fleet.urls[r] for r, gap in enumerate(largest) if math.isinf(gap)]
    if silent or set(phases) - {Phase.PROGRESSING.value}:
        raise SystemExit(
            f"bench: the world broke: phases {dict(phases)}, {len(silent)} repos recorded "
            f"nothing (see {ticks.log})"
        )
    firsts: dict[int, float] = {}
    for at, repo, _key, _phase in transitions:
        firsts[repo] = min(firsts.get(repo, at), at)
    per_repo = _tick_seconds(ticks.samples, first, last)
    durations = [s for values in per_repo.values() for s in values]
    count = sum(len(v) for v in per_repo.values())
    wall = last.t - first.t
    cpu = last.cpu_s - first.cpu_s
    rounds = count / args.repos
    delta = {k: last.totals.get(k, 0.0) - first.totals.get(k, 0.0) for k in last.totals}
    limit = args.interval + SLACK
    cores = [
        (b[0] - a[0]) / max(1, b[1] - a[1]) for a, b in zip(first.cores, last.cores, strict=True)
    ]
    return {
        "window_s": wall,
        "ticks": count,
        "repos_ticked": len(per_repo),
        "rounds": rounds,
        "ticks_failed": delta.get("ticks_error", 0.0),
        "transitions": len(in_window),
        "transitions_per_tick": len(in_window) / count if count else math.nan,
        "first_round_s": max(firsts.values()) - ticks.started_wall,
        "tick_s": quantiles(durations),
        "tick_s_slowest_repo_p95": max(
            (percentile(v, 0.95) for v in per_repo.values()), default=math.nan
        ),
        "tick_s_per_round": sum(durations) / rounds if rounds else math.nan,
        "gap_s": quantiles(gaps),
        "gap_s_largest_by_repo": quantiles(largest),
        "repos_late": sum(1 for gap in largest if gap > limit),
        "cpu_s": cpu,
        "cpu_s_per_round": cpu / rounds if rounds else math.nan,
        "cpu_ms_per_tick": cpu / count * 1000 if count else math.nan,
        "cpu_share": cpu / wall,
        "core_busy": cores,
        "servers": {
            name: {
                "core_share": (spent := last.servers[name] - first.servers[name]) / wall,
                "ms_per_tick": spent / count * 1000 if count else math.nan,
            }
            for name in last.servers
        },
        "rss_mib": {
            "peak": last.hwm_mib,
            "window_max": max(s.rss_mib for s in ticks.samples if s.t >= first.t),
            "final": last.rss_mib,
        },
        "pushes": delta.get("pushes_accepted", 0.0),
        "push_conflicts": delta.get("pushes_conflict", 0.0),
        "push_errors": delta.get("pushes_error", 0.0),
        "pushes_per_tick": delta.get("pushes_accepted", 0.0) / count if count else math.nan,
        "queries_per_round": delta.get("queries", 0.0) / rounds if rounds else math.nan,
        "http_queries_per_round": ticks.http_queries / rounds if rounds else math.nan,
        "query_errors": delta.get("query_errors", 0.0),
        "kube_errors": delta.get("kube_errors", 0.0),
        "metrics_scrape_ms": 1000 * sum(s.scrape_s for s in ticks.samples) / len(ticks.samples),
        "samples": len(ticks.samples),
    }


# -- the command -----------------------------------------------------------------------------


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    """(the reconciler's cores, everything else's): core 0, and the others (None: one core)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:  # one core: nothing to separate
        return None, None
    return {cores[0]}, set(cores[1:])


def _defaults(args: argparse.Namespace) -> None:
    """``--quick``'s sizes; the warm-up and the sampling from the interval."""
    if args.quick:
        args.repos, args.experiments, args.interval, args.rounds = 5, 2, 3.0, 4
        args.replicas = 2
        args.lease_duration, args.renew_deadline, args.retry_period = 4.0, 3.0, 0.5
    if args.warmup is None:
        args.warmup = 2 * args.interval if not args.quick else args.interval
    if args.sample_every is None:
        args.sample_every = args.interval


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py fleet``."""
    _defaults(args)
    mine, others = _cpus()
    if others is not None:
        os.sched_setaffinity(0, others)  # every process started from here inherits them
    ticks: dict[str, Any] | None = None
    takeover: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp,
        fleet_world(Path(tmp), args) as fleet,
    ):
        try:
            if not args.no_ticks:
                ticks = summarize_ticks(_run_ticks(fleet, args, mine), fleet, args)
            everywhere = None if mine is None or others is None else mine | others
            if not args.no_takeover:
                takeover = measure_takeover(fleet, args, everywhere)
        finally:
            if args.keep_logs:
                _keep(fleet.work, Path(args.keep_logs))
        built, applied = fleet.built_s, fleet.cluster_s
    where = "pinned to core 0, the rest on the others" if mine else "not pinned (one core)"
    print(
        f"fleet: {args.repos} Env repos x {args.experiments} running experiments; repos built "
        f"in {built:.1f} s, cluster applied in {applied:.1f} s"
    )
    if ticks is not None:
        _print_ticks(args, ticks, where)
    if takeover is not None:
        _print_takeover(takeover)
    goals = _goals(args, ticks, takeover)
    for name, goal in goals.items():
        verdict = "met" if goal["met"] else "MISSED"
        print(f"goal {name}: {goal['value']:.1f} against {goal['limit']:g}: {verdict}")
    emit(
        {
            "bench": "fleet",
            "repos": args.repos,
            "experiments": args.experiments,
            "interval": args.interval,
            "workers": args.workers,
            "pinned": mine is not None,
            **(ticks or {}),
            "takeover": takeover,
            "goals": goals,
            "machine": machine(),
        }
    )


def _keep(work: Path, into: Path) -> None:
    """Copy the processes' logs and config files into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for path in [*work.glob("*.log"), *work.glob("*.yaml"), *work.glob("prometheus/*.log")]:
        shutil.copy2(path, into / path.name)


def _goals(
    args: argparse.Namespace, ticks: Mapping[str, Any] | None, takeover: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Each goal of the issue measured: its value, its limit, and whether it was met."""
    goals: dict[str, dict[str, Any]] = {}
    if ticks is not None:
        peak, limit = ticks["rss_mib"]["peak"], args.interval + SLACK
        goals["memory"] = {"value": peak, "limit": MEMORY_GOAL_MIB, "met": peak < MEMORY_GOAL_MIB}
        goals["interval"] = {
            "value": ticks["gap_s"]["max"],
            "limit": limit,
            "met": ticks["repos_late"] == 0 and ticks["gap_s"]["max"] <= limit,
        }
    if takeover is not None:
        goals["takeover"] = {
            "value": takeover["seconds"],
            "limit": takeover["goal_s"],
            "met": takeover["met"],
        }
    return goals


def _print_ticks(args: argparse.Namespace, ticks: Mapping[str, Any], where: str) -> None:
    limit = args.interval + SLACK
    print(
        f"ticks: one reconciler run, interval {args.interval:g} s, "
        f"{args.workers or 'default'} workers, {where}; {ticks['window_s']:.0f} s measured "
        f"after the first round and {args.warmup:g} s"
    )
    rows: list[list[object]] = [
        ["tick wall s (each tick)", *_cells(ticks["tick_s"]), ""],
        ["gap between iterations s", *_cells(ticks["gap_s"]), f"<= {limit:g}"],
        ["largest gap by repo s", *_cells(ticks["gap_s_largest_by_repo"]), f"<= {limit:g}"],
    ]
    print(table(("figure", "p50", "p95", "max", "goal"), rows))
    print(
        f"first round (cold, every repo once): {ticks['first_round_s']:.1f} s; "
        f"{ticks['ticks']} ticks in {ticks['rounds']:.1f} rounds, {ticks['ticks_failed']:g} "
        f"failed; {ticks['transitions_per_tick']:.1f} transitions a tick; tick wall "
        f"{ticks['tick_s_per_round']:.1f} s a round summed over repos; slowest repo's p95 "
        f"{ticks['tick_s_slowest_repo_p95']:.2f} s"
    )
    cores = ", ".join(f"{busy:.0%}" for busy in ticks["core_busy"])
    print(
        f"CPU {ticks['cpu_s_per_round']:.2f} s a round, {ticks['cpu_ms_per_tick']:.0f} ms a "
        f"tick, {ticks['cpu_share']:.0%} of one core (cores busy: {cores}); RSS peak "
        f"{ticks['rss_mib']['peak']:.0f} MiB, final {ticks['rss_mib']['final']:.0f} MiB; "
        f"pushes {ticks['pushes']:g} ({ticks['pushes_per_tick']:.2f} a tick), conflicts "
        f"{ticks['push_conflicts']:g}, errors {ticks['push_errors']:g}; Prometheus: "
        f"{ticks['queries_per_round']:.0f} metric values a round in "
        f"{ticks['http_queries_per_round']:.0f} queries ({ticks['query_errors']:g} failed); "
        f"/metrics scrape {ticks['metrics_scrape_ms']:.0f} ms, {ticks['samples']} of them"
    )
    servers = ", ".join(
        f"{name} {spent['core_share']:.0%} ({spent['ms_per_tick']:.0f} ms a tick)"
        for name, spent in ticks["servers"].items()
    )
    print(f"the world's CPU, as a share of one core: {servers}")


def _print_takeover(takeover: Mapping[str, Any]) -> None:
    print(
        f"take-over: {takeover['replicas']} replicas, {takeover['repos']} repos, Lease "
        f"{takeover['lease_duration']:g} s, renew deadline {takeover['renew_deadline']:g} s, "
        f"retry period {takeover['retry_period']:g} s"
    )
    print(table(("figure", "p50", "p95", "max"), [
        ["taken after the kill s (each Lease)", *_cells(takeover["lease_s"])],
        ["taken after its expiry s", *_cells(takeover["after_expiry_s"])],
    ]))  # fmt: skip
    print(
        f"Leases spread in {takeover['spread_s']:.1f} s ({takeover['held_before']}); one "
        f"replica killed holding {takeover['killed_held']}, {takeover['renewed_before_kill_s']:.1f}"
        f" s after its last renewal: all taken over in {takeover['seconds']:.1f} s; after: "
        f"{takeover['held_after']}"
    )


def _cells(quantiles: Mapping[str, float]) -> list[float | str]:
    return [f"{quantiles[k]:.2f}" for k in ("p50", "p95", "max")]
