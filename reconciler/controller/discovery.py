"""Find experiments and Metric documents on main: a tree diff, parses cached by blob.

The first scan of a process lists main's tree once; later scans read only the files that
changed since the previous main commit. A file is parsed only when its bytes carry a
``kind: Experiment`` or ``kind: Metric`` line, and each blob is parsed once per process.
Problems found in a file are returned with every scan that still sees that blob, so the
caller can report them; the caller decides how loudly. Never writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.ports import EnvStore
from reconciler.spec.loader import LoadResult, Problem, load_experiments, looks_like_experiment
from reconciler.spec.metric import MetricDefinition, load_metrics, looks_like_metric
from reconciler.spec.model import Experiment

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

    def __init__(self, store: EnvStore, paths: tuple[str, ...] = ("",)) -> None:
        """Watch ``paths`` (directories of main; ``""`` is the whole repository)."""
        self._store = store
        self._paths = tuple(p.strip("/") for p in paths)
        self._seen: str | None = None
        self._files: dict[str, str] = {}
        self._parsed: dict[str, tuple[LoadResult, tuple[MetricDefinition, ...]]] = {}

    def scan(self, main: str) -> Scan:
        """Experiments and problems on ``main`` (a commit id)."""
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
        self._seen = main
        found: list[Found] = []
        metrics: list[MetricDefinition] = []
        problems: list[tuple[str, Problem]] = []
        for path in sorted(self._files):
            blob = self._files[path]
            result, definitions = self._parse(path, blob, main)
            found.extend(Found(spec, blob) for spec in result.experiments)
            metrics.extend(definitions)
            problems.extend((blob, p) for p in result.problems)
        return Scan(main, tuple(found), tuple(metrics), tuple(problems))

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
            experiments = LoadResult((), ())
            if looks_like_experiment(data):
                experiments = load_experiments(path, data)
            definitions: tuple[MetricDefinition, ...] = ()
            if looks_like_metric(data):
                loaded = load_metrics(path, data)
                definitions = tuple(loaded.metrics)
                problems = tuple(dict.fromkeys((*experiments.problems, *loaded.problems)))
                experiments = LoadResult(experiments.experiments, problems)
            cached = (experiments, definitions)
            self._parsed[key] = cached
        return cached
