"""Find experiments and Metric documents on main: a tree diff, parses cached by blob.

The first scan of a process lists main's tree once; later scans read only the files that
changed since the previous main commit. A file is parsed only when its bytes carry a
``kind: Experiment`` or ``kind: Metric`` line, and each blob is parsed once per process;
only the parses of files main still holds are kept, and without the source location of
every field (``Experiment.locations``: what ``reconciler validate`` reports with, 60 % of a
parsed experiment's memory; the problems keep their own). Problems found in a file are
returned with every scan that still sees that blob, so the caller can report them; the
caller decides how loudly. ``scan`` may be given the specs the state branch recorded for
the blobs it names (each live state document holds its experiment's normalised spec): a
file whose blob is among them is then not parsed again, so a restarted process does not
re-read every experiment file (DESIGN.md 4.3); their problems were reported when they were
first seen. The loaders' ``Limits`` bound each file; at most ``max_experiment_files`` files
with a ``kind: Experiment`` line are read per scan (those holding live experiments first,
then in path order), and each further one is reported with the limit that kept it out.
Never writes anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import structlog

from reconciler.controller.isolation import REPO_WIDE, describe
from reconciler.errors import Location
from reconciler.ports import EnvStore
from reconciler.spec.limits import Limits, exceeded
from reconciler.spec.loader import (
    LoadResult,
    Problem,
    experiment_lines,
    load_experiments,
    looks_like_experiment,
)
from reconciler.spec.metric import MetricDefinition, load_metrics, looks_like_metric
from reconciler.spec.model import Experiment

log = structlog.get_logger("reconciler.controller")

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Found:
    """An experiment on main, with the blob that names this run of it."""

    spec: Experiment
    blob: str


@dataclass(frozen=True)
class Scan:
    """What main holds now."""

    main: str
    experiments: tuple[Found, ...]
    metrics: tuple[MetricDefinition, ...]
    """Metric documents on main, in path order."""
    problems: tuple[tuple[str, Problem], ...]
    """(blob id, problem) for every file on main with problems."""


class Discovery:
    """Keeps, per process, which experiment files main holds and what they parse to."""

    def __init__(
        self, store: EnvStore, paths: tuple[str, ...] = ("",), limits: Limits | None = None
    ) -> None:
        """Watch ``paths`` (directories of main; ``""`` is the whole repository).

        ``limits`` bounds what is read (the documented defaults when None).
        """
        self._limits = limits or Limits()
        self._looks: dict[str, bool] = {}
        """Whether each file (``path\0blob``) has a ``kind: Experiment`` line."""
        self._store = store
        self._paths = tuple(p.strip("/") for p in paths)
        self._seen: str | None = None
        self._files: dict[str, str] = {}
        self._parsed: dict[str, tuple[LoadResult, tuple[MetricDefinition, ...]]] = {}
        self._known: dict[str, list[Experiment]] = {}

    def scan(self, main: str, known: Iterable[tuple[str, Experiment]] = ()) -> Scan:
        """Experiments and problems on ``main`` (a commit id).

        ``known`` pairs a blob id with an experiment already parsed from it (a live state
        document's spec): a file not parsed yet whose blob holds exactly the known
        experiments (as many ``kind: Experiment`` documents, from the same path) is taken
        from them instead of being parsed.
        """
        self._known = {}
        for blob, spec in known:
            self._known.setdefault(blob, []).append(spec)
        self._update(main)
        found: list[Found] = []
        metrics: list[MetricDefinition] = []
        problems: list[tuple[str, Problem]] = []
        over = self._over_limit(main)
        for path in sorted(self._files):
            blob = self._files[path]
            if path in over:
                problems.append((blob, over[path]))
                continue
            result, definitions = self._parse(path, blob, main)
            found.extend(Found(spec, blob) for spec in result.experiments)
            metrics.extend(definitions)
            problems.extend((blob, p) for p in result.problems)
        return Scan(main, tuple(found), tuple(metrics), tuple(problems))

    def _update(self, main: str) -> None:
        """Bring the list of files (and the caches) to ``main``."""
        if self._seen is None:
            for prefix in self._paths:
                for path, blob in self._store.list_files(main, prefix):
                    self._consider(path, blob)
        elif self._seen != main:
            for path in self._store.changed_paths(self._seen, main):
                if not self._watched(path):
                    continue
                self._files.pop(path, None)
                changed = self._store.blob_id(main, path)
                if changed is not None:
                    self._consider(path, changed)
            kept = {f"{path}\0{blob}" for path, blob in self._files.items()}
            self._parsed = {k: v for k, v in self._parsed.items() if k in kept}
            self._looks = {k: v for k, v in self._looks.items() if k in kept}
        self._seen = main

    def _over_limit(self, main: str) -> dict[str, Problem]:
        """Experiment files past ``max_experiment_files``, each with the problem to report."""
        limit = self._limits.max_experiment_files
        if len(self._files) <= limit:
            return {}
        candidates = []
        for path, blob in self._files.items():
            key = f"{path}\0{blob}"
            looks = self._looks.get(key)
            if looks is None:
                data = self._store.read_file(main, path) or b""
                looks = self._looks[key] = looks_like_experiment(data)
            if looks:
                candidates.append((blob not in self._known, path))
        if len(candidates) <= limit:
            return {}
        candidates.sort()
        found = f"the watched paths hold {len(candidates):,} experiment files"
        message = f"not read: {exceeded('max_experiment_files', found, self._limits)}"
        return {
            path: Problem(Location(path, 1), "error", message) for _, path in candidates[limit:]
        }

    def _consider(self, path: str, blob: str) -> None:
        if path.endswith(_YAML_SUFFIXES) and self._watched(path):
            self._files[path] = blob

    def _watched(self, path: str) -> bool:
        return any(not p or path == p or path.startswith(p + "/") for p in self._paths)

    def _parse(
        self, path: str, blob: str, main: str
    ) -> tuple[LoadResult, tuple[MetricDefinition, ...]]:
        key = f"{path}\0{blob}"
        cached = self._parsed.get(key)
        if cached is None:
            data = self._store.read_file(main, path) or b""
            try:
                cached = self._parse_data(path, blob, data)
            except REPO_WIDE:
                raise
            except Exception as exc:  # invariant 9: this file's fault alone
                log.error("experiment_file_bug", path=path, error=describe(exc), exc_info=exc)
                why = f"internal error while reading this file (please report it): {describe(exc)}"
                cached = (LoadResult((), (Problem(Location(path), "error", why),)), ())
            self._parsed[key] = cached
        return cached

    def _parse_data(
        self, path: str, blob: str, data: bytes
    ) -> tuple[LoadResult, tuple[MetricDefinition, ...]]:
        """The experiments, Metric documents and problems in one file's bytes."""
        experiments = LoadResult((), ())
        recorded = self._recorded(path, blob, data)
        if recorded is not None:
            experiments = LoadResult(recorded, ())
        elif looks_like_experiment(data):
            loaded = load_experiments(path, data, limits=self._limits)
            experiments = LoadResult(
                tuple(replace(e, locations={}) for e in loaded.experiments), loaded.problems
            )
        definitions: tuple[MetricDefinition, ...] = ()
        if looks_like_metric(data):
            metrics = load_metrics(path, data, limits=self._limits)
            definitions = tuple(metrics.metrics)
            problems = tuple(dict.fromkeys((*experiments.problems, *metrics.problems)))
            experiments = LoadResult(experiments.experiments, problems)
        return experiments, definitions

    def _recorded(self, path: str, blob: str, data: bytes) -> tuple[Experiment, ...] | None:
        """The experiments the state branch recorded for this file, when they are all of it."""
        specs = [spec for spec in self._known.get(blob, ()) if spec.path == path]
        if not specs or experiment_lines(data) != len(specs):
            return None
        return tuple(sorted(specs, key=lambda spec: spec.key))
