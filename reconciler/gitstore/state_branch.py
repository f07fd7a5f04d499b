"""The layout of the state branch (DESIGN.md 4.3): where each state document lives.

The state branch is an orphan branch of the Env repo holding ``README.md``, one
``experiments/<namespace>/<name>.json`` per live experiment and
``archive/<namespace>/<name>/<id>.json`` per finished one. This module builds those paths
from validated Kubernetes-style names (so no path can escape its directory), adds the
README to the branch's first commit, and loads the live documents of a tip. It never
parses or interprets a document, and never reads more than the tip's ``experiments/``
subtree: recovery costs grow with the number of live experiments, never with history.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Mapping

    from reconciler.gitstore.repo import GitEnvStore

__all__ = [
    "ARCHIVE_DIR",
    "LIVE_DIR",
    "README_PATH",
    "README_TEXT",
    "archive_path",
    "check_name",
    "live_path",
    "load_live",
    "parse_live_path",
    "with_readme",
]

log = structlog.get_logger(__name__)

README_PATH = "README.md"
LIVE_DIR = "experiments"
ARCHIVE_DIR = "archive"

README_TEXT = """\
# reconciler-state

This branch is written by the progressive-delivery reconciler. It holds the state of every
rollout it runs against this repository; no other state exists anywhere. Do not edit it by
hand while the reconciler runs: it is rewritten by compare-and-swap pushes, never forced.

    experiments/<namespace>/<name>.json     current state of each live experiment
    archive/<namespace>/<name>/<id>.json    finished experiments (promoted, rolled back,
                                            preempted)
    commands/<namespace>/<name>/<file>.json commands people pushed (reconciler pause,
                                            resume, abort, promote, approve) that the
                                            reconciler has not answered yet

Each commit is one state transition; its message ends in trailers that plain git reads:

    git log --oneline reconciler-state
    git log reconciler-state --format='%h %s%n%(trailers:key=Rollout-Weights,valueonly)'
    git log reconciler-state --format='%(trailers)' -- experiments/<namespace>/<name>.json
    git show reconciler-state:experiments/<namespace>/<name>.json

Trailers: Rollout-Experiment, Rollout-Id, Rollout-Phase, Rollout-Iteration,
Rollout-Weights (version=percent,...), Rollout-Verdict. A command commit (by the person
who sent it) carries Rollout-Command; the commit that answers it Rollout-Command,
Rollout-Command-Result (done, refused, ignored) and Rollout-Command-Commit. Promotion and
rollback commits on the main branch carry Rollout-Id, Rollout-Outcome, Rollout-Winner and
Rollout-State (the state commit that recorded the decision).
"""

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_NAME_MAX = 253
_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_ID_MAX = 128
_LIVE = re.compile(rf"{LIVE_DIR}/([^/]+)/([^/]+)\.json")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` when it is a Kubernetes-style name, usable as one path component.

    Raises:
        ValueError: ``value`` is not ``[a-z0-9]([-a-z0-9.]*[a-z0-9])?`` of at most 253
            characters (so it cannot be empty, ``..``, or hold a ``/``).
    """
    if len(value) > _NAME_MAX or not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid {kind} {value!r}: expected a Kubernetes name "
            "(lower-case letters, digits, '-' and '.', at most 253 characters)"
        )
    return value


def live_path(namespace: str, name: str) -> str:
    """``experiments/<namespace>/<name>.json``: where a live experiment's state lives."""
    return f"{LIVE_DIR}/{check_name('namespace', namespace)}/{check_name('name', name)}.json"


def archive_path(namespace: str, name: str, id_suffix: str) -> str:
    """``archive/<namespace>/<name>/<id_suffix>.json``: a finished experiment's state.

    Raises:
        ValueError: a name is invalid (see ``check_name``) or ``id_suffix`` is not
            letters, digits, ``.``, ``_`` and ``-`` (at most 128, no ``..``).
    """
    check_name("namespace", namespace)
    check_name("name", name)
    if len(id_suffix) > _ID_MAX or not _ID.fullmatch(id_suffix) or ".." in id_suffix:
        raise ValueError(f"invalid experiment id suffix {id_suffix!r} for {namespace}/{name}")
    return f"{ARCHIVE_DIR}/{namespace}/{name}/{id_suffix}.json"


def parse_live_path(path: str) -> tuple[str, str] | None:
    """``(namespace, name)`` for a well-formed live path, else None."""
    match = _LIVE.fullmatch(path)
    if match is None:
        return None
    namespace, name = match.groups()
    try:
        check_name("namespace", namespace)
        check_name("name", name)
    except ValueError:
        return None
    return namespace, name


def with_readme(tip: str | None, changes: Mapping[str, bytes | None]) -> Mapping[str, bytes | None]:
    """``changes``, plus README.md when ``tip`` is None (the orphan branch's first commit)."""
    if tip is not None or README_PATH in changes:
        return changes
    return {README_PATH: README_TEXT.encode("utf-8"), **changes}


def load_live(store: GitEnvStore, tip: str) -> dict[str, bytes]:
    """Raw JSON of every live experiment at ``tip``: ``{path: bytes}``.

    Reads only the ``experiments/`` subtree of the tip's tree. Files there that do not
    follow the layout are skipped with a warning, never interpreted.
    """
    documents: dict[str, bytes] = {}
    for path, blob_id in store.list_files(tip, LIVE_DIR):
        if parse_live_path(path) is None:
            log.warning("state_branch_unexpected_file", commit=tip, path=path)
            continue
        documents[path] = store.read_blob(blob_id)
    return documents
