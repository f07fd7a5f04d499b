"""``soak``: ``reconciler run`` for N minutes as a user runs it, sampled for growth.

The world is the end-to-end tests' (``tests.e2e.world``): the Env repo behind ``git
daemon``, the real kube-apiserver (``hack/kube-test-server``) carrying the app's
VirtualService, the traffic simulator following that VirtualService's weights, and a real
Prometheus scraping it every second. One ``python -m reconciler run`` process ticks every
INTERVAL seconds with /metrics (and the webhook route) served. Meanwhile a CI writer
(``ci_writer.py``) pushes RATE commits a second to main, and every CANARY seconds a new
canary is pushed (the candidate's Deployment and an experiment file whose first line names
the run), alternating a healthy and a faulty candidate (the simulator's candidate profile
is switched with it): the good ones are promoted, the bad ones rolled back.

Every SAMPLE seconds the benchmark reads, from outside the process: resident memory
(``/proc/PID/status``: VmRSS, RssAnon, RssFile), CPU time (``/proc/PID/stat``), open file
descriptors, threads, deleted files still mapped (``/proc/PID/maps``), the cache's size on
disk and pack count, and the tick count and time from the process's own /metrics. At the
end it prints the slopes after the warm-up (least squares: MiB an hour, cache MB an hour),
the CPU per tick in the first and the last window, the outcomes, and a JSON line with all
of it; it checks that no CI commit was lost and that every outcome is on main exactly once.
``--samples FILE`` writes every sample as a JSON line, as it is taken. ``--profile DIR``
runs the process with ``tracemalloc`` on and takes, through signals handled by a
``sitecustomize`` module put on its path (the reconciler's code is not changed): a
snapshot of the heap after the warm-up and one at the end (``heap-*.pickle``), and a
cProfile of the main thread (the ticks) over the first and the last window
(``ticks-early.pstats``, ``ticks-late.pstats``); it prints the twenty places whose
allocations grew most, and the functions whose cumulative time per tick grew most.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchlib.common import REPO, cpu_seconds, emit, git, machine, table
from benchlib.servers import git_daemon
from reconciler.metrics.profile import Profile
from tests.e2e.envrepo import CANDIDATE, CANDIDATE_FILES, STATE, ExperimentFile
from tests.e2e.world import FAULTY, HEALTHY, ReconcilerProcess, World
from tests.fixtures.git import GitDaemon
from tests.fixtures.kube import KubeServer, ensure_namespace, install_crds
from tests.fixtures.prometheus import PrometheusServer
from tests.sim.server import MetricsServer
from tests.sim.traffic import LatencyModel, TrafficSimulator

_PAGE = os.sysconf("SC_PAGE_SIZE")
NAMESPACE = "soak"
SITECUSTOMIZE = """\
import os, signal
_DIR = os.environ.get("SOAK_PROFILE_DIR")
if _DIR:
    import cProfile, tracemalloc
    tracemalloc.start(12)
    _profile = {}

    def _next(kind):
        with open(os.path.join(_DIR, "next-" + kind)) as named:
            return os.path.join(_DIR, named.read().strip())

    def _heap(_signum, _frame):
        name = _next("heap")
        tracemalloc.take_snapshot().dump(name)
        open(name + ".done", "w").close()

    def _ticks(_signum, _frame):
        if "on" in _profile:
            profiler = _profile.pop("on")
            profiler.disable()
            profiler.dump_stats(_profile.pop("name"))
        else:
            _profile["name"] = _next("profile")
            _profile["on"] = cProfile.Profile()
            _profile["on"].enable()

    signal.signal(signal.SIGUSR1, _heap)
    signal.signal(signal.SIGUSR2, _ticks)
"""


@dataclass(frozen=True)
class Sample:
    """The process and its cache at one moment."""

    t: float
    """Seconds since the process started ticking."""
    rss_mib: float
    anon_mib: float
    file_mib: float
    cpu_s: float
    fds: int
    threads: int
    deleted_mapped: int
    """Files mapped into the process that were deleted (old packs)."""
    cache_mb: float
    packs: int
    ticks: int
    tick_s: float
    """Sum of the ticks' durations, from /metrics."""
    objects_mib: float
    """libgit2's cache of parsed objects, from /metrics (part of ``anon_mib``, bounded)."""


# -- reading the process from outside ------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _kib(value: str) -> float:
    return int(value.split(maxsplit=1)[0]) / 1024


def _deleted_mapped(pid: int) -> int:
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith(" (deleted)"):
            paths.add(line.split(maxsplit=5)[-1])
    return len(paths)


def _cache(directory: Path) -> tuple[float, int]:
    """Bytes on disk (MB) and packs of the cache under ``directory``."""
    size, packs = 0, 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a pack merged away meanwhile
                size += Path(root, name).stat().st_size
            packs += name.endswith(".pack")
    return size / 1e6, packs


def sample(process: ReconcilerProcess, cache: Path, started: float) -> Sample:
    """Read everything a sample holds now."""
    pid = process.popen.pid
    status = _status(pid)
    cache_mb, packs = _cache(cache)
    return Sample(
        t=time.monotonic() - started,
        rss_mib=_kib(status["VmRSS"]),
        anon_mib=_kib(status["RssAnon"]),
        file_mib=_kib(status["RssFile"]),
        cpu_s=cpu_seconds(pid),
        fds=sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()),
        threads=int(status["Threads"]),
        deleted_mapped=_deleted_mapped(pid),
        cache_mb=cache_mb,
        packs=packs,
        ticks=int(process.metric("reconciler_tick_duration_seconds_count")),
        tick_s=process.metric("reconciler_tick_duration_seconds_sum"),
        objects_mib=process.metric("reconciler_git_object_cache_bytes") / 2**20,
    )


# -- what the samples say ------------------------------------------------------------------


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour (NaN for fewer than 2)."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return float("nan")
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600


def cpu_per_tick(first: Sample, last: Sample) -> float:
    """CPU seconds per tick between two samples (NaN when no tick ran)."""
    ticks = last.ticks - first.ticks
    return (last.cpu_s - first.cpu_s) / ticks if ticks > 0 else float("nan")


def tick_time(first: Sample, last: Sample) -> float:
    """Mean duration of the ticks between two samples, seconds."""
    ticks = last.ticks - first.ticks
    return (last.tick_s - first.tick_s) / ticks if ticks > 0 else float("nan")


def _span(values: Sequence[float], peak: float) -> dict[str, float]:
    return {"first": values[0], "last": values[-1], "max": peak}


def summarize(samples: Sequence[Sample], warmup: float, window: float) -> dict[str, Any]:
    """Slopes after ``warmup`` seconds; CPU per tick in the first and last ``window`` s."""
    settled = [s for s in samples if s.t >= warmup] or list(samples)
    first, last = settled[0], settled[-1]
    early_end = next((s for s in settled if s.t >= first.t + window), last)
    late_start = next((s for s in reversed(settled) if s.t <= last.t - window), first)
    early = cpu_per_tick(first, early_end)
    late = cpu_per_tick(late_start, last)
    return {
        "rss_mib_per_hour": slope_per_hour([(s.t, s.rss_mib) for s in settled]),
        "anon_mib_per_hour": slope_per_hour([(s.t, s.anon_mib) for s in settled]),
        "file_mib_per_hour": slope_per_hour([(s.t, s.file_mib) for s in settled]),
        "cache_mb_per_hour": slope_per_hour([(s.t, s.cache_mb) for s in settled]),
        "objects_mib_per_hour": slope_per_hour([(s.t, s.objects_mib) for s in settled]),
        "cpu_ms_per_tick_early": early * 1000,
        "cpu_ms_per_tick_late": late * 1000,
        "cpu_late_to_early": late / early if early > 0 else float("nan"),
        "tick_ms_early": tick_time(first, early_end) * 1000,
        "tick_ms_late": tick_time(late_start, last) * 1000,
        "rss_mib": _span([s.rss_mib for s in settled], max(s.rss_mib for s in samples)),
        "cache_mb": _span([s.cache_mb for s in settled], max(s.cache_mb for s in samples)),
        "objects_mib": _span([s.objects_mib for s in settled], max(s.objects_mib for s in samples)),
        "packs_max": max(s.packs for s in samples),
        "fds": {"first": first.fds, "last": last.fds, "max": max(s.fds for s in samples)},
        "threads_max": max(s.threads for s in samples),
        "deleted_mapped_max": max(s.deleted_mapped for s in samples),
        "ticks": last.ticks,
        "warmup_s": warmup,
        "window_s": window,
    }


# -- the world ------------------------------------------------------------------------------


@contextlib.contextmanager
def kube_test_server(work: Path) -> Iterator[KubeServer]:
    """kube-apiserver and etcd from ``hack/kube-test-server``, with our CRDs; stopped after."""
    script = [sys.executable, str(REPO / "hack" / "kube-test-server")]
    directory = work / "kube"
    up = subprocess.run(
        [*script, "up", "--dir", str(directory), "--follow-pid", str(os.getpid()), "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    if up.returncode != 0:
        raise SystemExit(f"bench: hack/kube-test-server up failed:\n{up.stderr}")
    try:
        info = json.loads((directory / "server.json").read_text())
        server = KubeServer(directory, Path(info["kubeconfig"]), info["server"], info["tokens"])
        admin = server.connect()
        try:
            install_crds(admin)
            ensure_namespace(admin, NAMESPACE)
        finally:
            admin.close()
        yield server
    finally:
        subprocess.run([*script, "down", "--dir", str(directory)], check=False, cwd=REPO)


def set_candidate(simulator: TrafficSimulator, profile: Profile) -> None:
    """Make the simulated candidate behave as ``profile`` from now on."""
    simulator.profiles[CANDIDATE] = profile
    simulator.latency[CANDIDATE] = LatencyModel.of(profile)


class Canaries:
    """Pushes a canary to main (with retries against CI), alternating good and bad."""

    def __init__(self, world: World, env: Mapping[str, str], work: Path) -> None:
        self._world = world
        self._env = env
        self._work = work
        self.pushed: list[tuple[int, bool]] = []
        """(run, healthy) of every canary pushed."""
        git(env, "clone", "--quiet", str(world.repo.path), work)

    def push(self) -> None:
        """The next canary: its candidate behaves as it is healthy or not."""
        run = len(self.pushed)
        healthy = run % 2 == 0
        set_candidate(self._world.traffic.simulator, HEALTHY if healthy else FAULTY)
        experiment = ExperimentFile(iterations=3)
        files = {
            **CANDIDATE_FILES,
            experiment.path: f"# soak canary {run}\n{experiment.render(NAMESPACE)}",
        }
        for _ in range(60):
            git(self._env, "fetch", "--quiet", "origin", cwd=self._work)
            git(self._env, "reset", "--quiet", "--hard", "origin/main", cwd=self._work)
            for path, text in files.items():
                target = self._work / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            git(self._env, "add", "--all", cwd=self._work)
            git(self._env, "commit", "--quiet", "-m", f"ci: canary {run}", cwd=self._work)
            done = subprocess.run(
                ["git", "push", "--quiet", "origin", "HEAD:main"],
                cwd=self._work,
                env=dict(self._env),
                capture_output=True,
                check=False,
            )
            if done.returncode == 0:
                self.pushed.append((run, healthy))
                return
            time.sleep(0.2)
        raise SystemExit(f"bench: canary {run} could not be pushed in 60 attempts")


class _CI:
    """``ci_writer.py`` pushing to main until stopped."""

    def __init__(self, url: str, work: Path, env: Mapping[str, str], rate: float) -> None:
        self.out = work / "ci.json"
        self.stop_file = work / "ci.stop"
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("ci_writer.py")), url,
             str(work / "ci"), str(rate), "0", str(self.out), str(self.stop_file)],
            env=dict(env),
        )  # fmt: skip

    def stop(self) -> dict[str, Any]:
        self.stop_file.touch()
        if self.process.wait() != 0:
            raise SystemExit("bench: the CI writer failed")
        written: dict[str, Any] = json.loads(self.out.read_text())
        return written


class Profiling:
    """Heap snapshots and tick profiles of the process, taken by signals (``--profile``)."""

    def __init__(self, directory: Path, warmup: float, window: float, end: float) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        site = directory / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        self.env = {"PYTHONPATH": path, "SOAK_PROFILE_DIR": str(directory)}
        self._events = [
            (warmup, "heap", "heap-early.pickle"),
            (warmup, "profile", "ticks-early.pstats"),
            (warmup + window, "profile", None),
            (end - window, "profile", "ticks-late.pstats"),
            (end, "profile", None),
            (end, "heap", "heap-late.pickle"),
        ]

    def due(self, pid: int, t: float) -> None:
        """Send the signals whose time has come (``t``: seconds since the start)."""
        while self._events and self._events[0][0] <= t:
            _at, kind, name = self._events.pop(0)
            if name is not None:
                (self.directory / f"next-{kind}").write_text(name)
            os.kill(pid, signal.SIGUSR1 if kind == "heap" else signal.SIGUSR2)
            if kind == "heap":
                done = self.directory / f"{name}.done"
                deadline = time.monotonic() + 60
                while not done.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)

    def report(self) -> None:
        """Print where the heap grew, and which functions' time per tick grew."""
        early, late = (self.directory / f"heap-{w}.pickle" for w in ("early", "late"))
        if early.exists() and late.exists():
            before = tracemalloc.Snapshot.load(str(early))
            after = tracemalloc.Snapshot.load(str(late))
            print("heap growth (tracemalloc, after the warm-up to the end), by traceback:")
            for stat in after.compare_to(before, "traceback")[:8]:
                print(f"  {stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks:")
                for line in stat.traceback.format(limit=6):
                    print(f"    {line}")
        for name in ("ticks-early.pstats", "ticks-late.pstats"):
            path = self.directory / name
            if path.exists():
                print(f"{name}: top functions by cumulative time")
                pstats.Stats(str(path)).sort_stats("cumulative").print_stats(25)


def _checks(world: World, env: Mapping[str, str], written: Mapping[str, Any]) -> dict[str, Any]:
    """No CI commit lost; every outcome on main once; what the state branch recorded."""
    repo = world.repo.path
    subjects = git(env, "--git-dir", repo, "log", "--format=%s", "main").splitlines()
    ci_log = set(git(env, "--git-dir", repo, "show", "main:ci.log").splitlines())
    lost = [n for n in written["pushed"] if f"ci {n}" not in ci_log]
    ids = git(
        env, "--git-dir", repo, "log", "--format=%(trailers:key=Rollout-Id,valueonly)", "main"
    ).split()
    outcomes = [
        line
        for line in git(
            env, "--git-dir", repo, "log",
            "--format=%(trailers:key=Rollout-Outcome,valueonly,separator=%x20)", "main",
        ).splitlines()
        if line.strip()
    ]  # fmt: skip
    state_commits = int(git(env, "--git-dir", repo, "rev-list", "--count", STATE))
    return {
        "ci_made": written["made"],
        "ci_pushed": len(written["pushed"]),
        "ci_lost": len(lost) + written["made"] - len(written["pushed"]),
        "main_commits": len(subjects),
        "state_commits": state_commits,
        "outcome_commits": len(outcomes),
        "promoted": sum(1 for o in outcomes if "promot" in o.lower()),
        "rolled_back": sum(1 for o in outcomes if "roll" in o.lower()),
        "outcomes_duplicated": len(ids) - len(set(ids)),
    }


@contextlib.contextmanager
def soak_world(work: Path) -> Iterator[tuple[World, dict[str, str]]]:
    """The world, set up (Prometheus has scraped the traffic); the git program's environment."""
    with contextlib.ExitStack() as stack:
        kube = stack.enter_context(kube_test_server(work))
        repos = work / "repos"
        repos.mkdir()
        server = stack.enter_context(git_daemon(repos, work / "home"))
        (work / "world").mkdir()
        world = World(
            work / "world",
            kube_server=kube,
            admin=stack.enter_context(contextlib.closing(kube.connect())),
            git_daemon=GitDaemon(repos, server.port),
            metrics=stack.enter_context(MetricsServer([], service="productpage")),
            prometheus=PrometheusServer("http://127.0.0.1:9", work),
            namespace=NAMESPACE,
            own_prometheus=True,
        )
        stack.callback(world.close)
        world.setup()
        yield world, server.git_env(work / "home")


def _drive(
    args: argparse.Namespace, world: World, canaries: Canaries, profiling: Profiling | None
) -> list[Sample]:
    """Start the process, push canaries and take samples until the time is up."""
    samples: list[Sample] = []
    if profiling is not None:
        os.environ.update(profiling.env)
    process = world.start(interval=args.interval)
    cache = next(world.tmp.glob("cache-*"))
    started = time.monotonic()
    next_canary, next_sample = started + 5.0, started
    end = started + args.minutes * 60
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(Path(args.samples).open("w")) if args.samples else None
        while time.monotonic() < end:
            now = time.monotonic()
            if process.exit_code is not None:
                raise SystemExit(f"bench: reconciler run exited:\n{process.log_tail()}")
            if now >= next_canary:
                threading.Thread(target=canaries.push, daemon=True).start()
                next_canary += args.canary_every
            if profiling is not None:
                profiling.due(process.popen.pid, now - started)
            if now >= next_sample:
                samples.append(sample(process, cache, started))
                if out is not None:
                    out.write(json.dumps(asdict(samples[-1])) + "\n")
                    out.flush()
                next_sample += args.sample_every
            time.sleep(max(0.0, min(next_canary, next_sample, end) - time.monotonic()))
        samples.append(sample(process, cache, started))
    if profiling is not None:
        profiling.due(process.popen.pid, end - started)
    return samples


def _soak(
    args: argparse.Namespace, work: Path, profiling: Profiling | None
) -> tuple[list[Sample], dict[str, Any]]:
    with soak_world(work) as (world, env):
        canaries = Canaries(world, env, work / "canaries")
        ci = _CI(world.repo.url, work, env, args.rate)
        try:
            samples = _drive(args, world, canaries, profiling)
        finally:
            written = ci.stop()
        checks = _checks(world, env, written)
        checks["canaries"] = len(canaries.pushed)
    return samples, checks


def run(args: argparse.Namespace) -> None:
    """``hack/bench.py soak``."""
    if args.quick:
        args.minutes, args.sample_every, args.canary_every = 1.0, 5.0, 20.0
    total = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(300.0, 0.2 * total)
    window = min(600.0, max(args.sample_every, 0.25 * (total - warmup)))
    profiling = Profiling(Path(args.profile), warmup, window, total) if args.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        samples, checks = _soak(args, Path(tmp), profiling)
    figures = summarize(samples, warmup, window)
    if checks["ci_lost"] or checks["outcomes_duplicated"]:
        raise SystemExit(f"bench: the Env repo is wrong after the soak: {checks}")
    print(
        f"soak: reconciler run for {args.minutes:g} min, interval {args.interval:g} s; CI "
        f"{args.rate:g} commits/s on main; a canary every {args.canary_every:g} s "
        f"(good, bad, ...); samples every {args.sample_every:g} s; warm-up {warmup:g} s"
    )
    step = max(1, len(samples) // 12)
    rows = [
        [f"{s.t / 60:.1f}", s.rss_mib, s.anon_mib, s.file_mib, s.cpu_s, s.ticks, s.fds,
         s.threads, s.deleted_mapped, f"{s.cache_mb:.2f}", s.packs, s.objects_mib]
        for s in [*samples[::step], samples[-1]]
    ]  # fmt: skip
    columns = ("min", "RSS MiB", "anon", "file", "CPU s", "ticks", "fds", "threads",
               "deleted mapped", "cache MB", "packs", "objects MiB")  # fmt: skip
    print(table(columns, rows))
    print(
        f"RSS {figures['rss_mib_per_hour']:.1f} MiB/hour (anon {figures['anon_mib_per_hour']:.1f},"
        f" file {figures['file_mib_per_hour']:.1f}, of it libgit2's object cache "
        f"{figures['objects_mib_per_hour']:.1f}, at {figures['objects_mib']['last']:.1f} MiB "
        f"at the end); cache {figures['cache_mb_per_hour']:.1f} "
        f"MB/hour (max {figures['cache_mb']['max']:.2f} MB, {figures['packs_max']} packs max); "
        f"CPU per tick {figures['cpu_ms_per_tick_early']:.1f} -> "
        f"{figures['cpu_ms_per_tick_late']:.1f} ms ({figures['cpu_late_to_early']:.2f}x); "
        f"tick {figures['tick_ms_early']:.0f} -> {figures['tick_ms_late']:.0f} ms"
    )
    print(
        f"{checks['canaries']} canaries: {checks['promoted']} promoted, {checks['rolled_back']} "
        f"rolled back; CI {checks['ci_pushed']}/{checks['ci_made']} pushed, {checks['ci_lost']} "
        f"lost; main {checks['main_commits']} commits, state branch {checks['state_commits']}"
    )
    if profiling is not None:
        profiling.report()
    emit(
        {
            "bench": "soak",
            "minutes": args.minutes,
            "interval": args.interval,
            "rate": args.rate,
            "canary_every": args.canary_every,
            **figures,
            **checks,
            "machine": machine(),
        }
    )
