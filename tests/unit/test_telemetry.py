"""What /metrics shows of the process itself: memory, descriptors, the cache, tick phases.

A user must see growth in Grafana before it hurts, and the label sets must not grow with
every experiment ever run: a finished experiment's series are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.server.telemetry import TICK_PHASES, Telemetry

REPO = "git://example.test/env.git"


@dataclass(frozen=True)
class Stats:
    bytes: int = 123_456
    packs: int = 7
    merges: int = 3
    repacks: int = 1
    failures: int = 0


def samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(telemetry.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_process_memory_descriptors_and_cache_are_exported() -> None:
    telemetry = Telemetry()
    telemetry.watch_cache(REPO, Stats)
    found = samples(telemetry)
    assert found[("process_resident_memory_bytes", ())] > 0
    assert found[("process_open_fds", ())] > 0
    assert found[("reconciler_git_cache_bytes", (("repo", REPO),))] == 123_456
    assert found[("reconciler_git_cache_packs", (("repo", REPO),))] == 7
    upkeep = "reconciler_git_cache_maintenance_total"
    assert found[(upkeep, (("kind", "merged"), ("repo", REPO)))] == 3
    assert found[(upkeep, (("kind", "repacked"), ("repo", REPO)))] == 1


def test_a_repo_no_longer_served_leaves_no_series_and_the_others_keep_theirs() -> None:
    telemetry = Telemetry()
    other = "https://git.example/other.git"
    for repo in (REPO, other):
        telemetry.watch_cache(repo, Stats)
        telemetry.ticks.labels(repo, "ok").inc()
        telemetry.pushes.labels(repo, "main", "accepted").inc()
        telemetry.count_corrections(repo, ["ns/exp"], ["ns/exp"])
    telemetry.forget(REPO)
    repos = {dict(labels).get("repo") for (_name, labels) in samples(telemetry)}
    assert REPO not in repos
    assert other in repos
    found = samples(telemetry)
    assert found[("reconciler_ticks_total", (("repo", other), ("result", "ok")))] == 1
    assert found[("reconciler_git_cache_packs", (("repo", other),))] == 7


def test_tick_phases_are_a_histogram_with_a_fixed_label_set() -> None:
    telemetry = Telemetry()
    for phase in TICK_PHASES:
        telemetry.tick_phase.labels(phase).observe(0.003)
    found = samples(telemetry)
    phases = {
        dict(labels)["phase"]
        for name, labels in found
        if name == "reconciler_tick_phase_seconds_count"
    }
    assert phases == set(TICK_PHASES)
    # one series a phase for the whole process, whatever the repos served
    assert all("repo" not in dict(labels) for name, labels in found if "tick_phase" in name)


def test_a_finished_experiments_corrections_are_dropped_from_metrics() -> None:
    telemetry = Telemetry()
    name = "reconciler_weight_corrections_total"
    telemetry.count_corrections(REPO, ["ns/a", "ns/b"], live={"ns/a", "ns/b"})
    telemetry.count_corrections(REPO, ["ns/a"], live={"ns/a", "ns/b"})
    found = samples(telemetry)
    assert found[(name, (("experiment", "ns/a"), ("repo", REPO)))] == 2
    assert found[(name, (("experiment", "ns/b"), ("repo", REPO)))] == 1
    telemetry.count_corrections(REPO, [], live={"ns/a"})  # ns/b finished
    found = samples(telemetry)
    assert (name, (("experiment", "ns/b"), ("repo", REPO))) not in found
    assert found[(name, (("experiment", "ns/a"), ("repo", REPO)))] == 2


def test_the_object_cache_is_exported_with_its_bound() -> None:
    telemetry = Telemetry()
    assert ("reconciler_git_object_cache_bytes", ()) not in samples(telemetry)
    telemetry.watch_object_cache(lambda: (4_096, 16 * 2**20))
    found = samples(telemetry)
    assert found[("reconciler_git_object_cache_bytes", ())] == 4_096
    assert found[("reconciler_git_object_cache_limit_bytes", ())] == 16 * 2**20
