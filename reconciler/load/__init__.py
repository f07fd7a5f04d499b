"""The built-in load generator (issue 22): HTTP load to each version, measured as Iter8's metrics.

``generator.HttpLoad`` implements ``ports.LoadGenerator`` (build it with
``HttpLoad.from_settings(settings.load, api_server_host=...)``). The pure parts stand
alone and import no I/O library, so ``validate`` can use them offline and without httpx:
``targets`` (which URLs, headers, methods and addresses are allowed: ``check_target``),
``admission`` (the caps), ``pacing`` (when each request is due) and ``stats`` (the counts,
the latency histogram and the nine metrics). ``resolver`` turns names into addresses;
``sender`` sends one run's requests on the generator's event loop.

What it must never do: import httpx here (``import reconciler.spec.targets`` runs this file
first), or execute anything named by an experiment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.load.generator import HttpLoad

__all__ = ["HttpLoad"]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module attributes, loaded on first use
    if name == "HttpLoad":
        from reconciler.load.generator import HttpLoad  # noqa: PLC0415 - keeps httpx lazy

        return HttpLoad
    raise AttributeError(f"module 'reconciler.load' has no attribute {name!r}")
