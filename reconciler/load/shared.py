"""One load generator for every Env repo of the process, each repo seeing only its runs.

The generator's caps (``load.maxQpsTotal``, connections) are the process's: many repos
share one generator thread and one budget. Each repo's loop converges *its* runs only:
``ScopedLoad`` keys a repo's run ids by the repo, so two repos with an experiment of the
same name never meet, and one repo's tick never stops another's load.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from reconciler.ports import LoadGenerator, LoadPlan, MetricValue

_SEP = "\x00"


class ClosableLoad(LoadGenerator, Protocol):
    """A generator that can be stopped (``load.generator.HttpLoad``)."""

    def close(self) -> None:
        """Stop every run."""
        ...


class SharedLoad:
    """The process's generator, handed out per repo (thread-safe)."""

    def __init__(self, inner: ClosableLoad) -> None:
        """Share ``inner``."""
        self._inner = inner
        self._lock = threading.Lock()
        self._plans: dict[str, dict[str, LoadPlan]] = {}

    def scoped(self, repo: str) -> ScopedLoad:
        """The generator as ``repo``'s loop sees it."""
        return ScopedLoad(self, repo)

    def forget(self, repo: str) -> None:
        """Stop the runs of a repo no longer served."""
        self.converge(repo, {})

    def converge(self, repo: str, plans: Mapping[str, LoadPlan]) -> dict[str, str]:
        """Set ``repo``'s runs to ``plans``, keeping every other repo's; ``repo``'s refusals."""
        with self._lock:
            if plans:
                self._plans[repo] = dict(plans)
            else:
                self._plans.pop(repo, None)
            everything = {
                key(scope, run_id): plan
                for scope, runs in self._plans.items()
                for run_id, plan in runs.items()
            }
            refused = self._inner.converge(everything)
        prefix = repo + _SEP
        return {k.removeprefix(prefix): why for k, why in refused.items() if k.startswith(prefix)}

    def observe(self, repo: str, run_id: str, version: str, metric: str) -> MetricValue:
        """One built-in metric of one of ``repo``'s runs."""
        return self._inner.observe(key(repo, run_id), version, metric)

    def close(self) -> None:
        """Stop every repo's runs and the generator."""
        with self._lock:
            self._plans.clear()
        self._inner.close()


def key(repo: str, run_id: str) -> str:
    """A run's id in the shared generator."""
    return f"{repo}{_SEP}{run_id}"


class ScopedLoad:
    """A ``LoadGenerator`` that is one repo's share of a ``SharedLoad``."""

    def __init__(self, shared: SharedLoad, repo: str) -> None:
        """``repo``'s view of ``shared``."""
        self._shared = shared
        self._repo = repo

    def converge(self, plans: Mapping[str, LoadPlan]) -> dict[str, str]:
        """Load exactly ``plans`` for this repo; the other repos' runs go on."""
        return self._shared.converge(self._repo, plans)

    def observe(self, run_id: str, version: str, metric: str) -> MetricValue:
        """One built-in metric of one of this repo's runs."""
        return self._shared.observe(self._repo, run_id, version, metric)
