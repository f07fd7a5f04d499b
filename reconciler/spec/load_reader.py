"""Reading the built-in load an experiment asks for: ``spec.load``, or Iter8's ``metrics/collect``.

Iter8 v0.7's ``metrics/collect`` task (in ``spec.strategy.actions.start`` or ``.loop``) sent
HTTP load to each version and measured Iter8's built-in metrics; its ``with`` fields are
read as they are (``versions[].name/url/headers``, ``time``, ``numQueries``, ``qps``,
``connections``, ``payloadStr``, ``contentType``, ``loadOnly``). Our own format writes the
same as ``spec.load``. Nothing is executed: every other task of ``actions`` is reported as
never run. Targets are checked here for their shape (an in-cluster Service name, never an
IP literal or a host outside the cluster); the generator checks them again, resolved, before
it sends anything. A mixin of the Experiment reader (``spec.loader``), on the ``spec.gitops`` reader
(a payload file is a repository path as an edit's is); pure.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Location
from reconciler.spec.gitops_reader import GitOpsReader
from reconciler.spec.model import Load, VersionLoad
from reconciler.spec.targets import ANY_NAMESPACE, check_headers, check_method, check_target
from reconciler.spec.yamldoc import excerpt, finite_number

__all__ = ["LoadReader", "go_duration"]

COLLECT_TASK = "metrics/collect"
_SERVICE = re.compile(
    r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?\.?$"
)
_DURATION = re.compile(r"(?P<number>\d+(\.\d+)?)(?P<unit>ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOAD_KEYS = {
    "versions", "qps", "durationSeconds", "requests", "connections", "method", "payload",
    "payloadFile", "contentType", "timeoutSeconds", "loadOnly",
}  # fmt: skip
_COLLECT_KEYS = {
    "versions", "time", "numQueries", "qps", "connections", "loadOnly", "payloadStr",
    "payloadURL", "contentType",
}  # fmt: skip


def go_duration(text: str) -> float | None:
    """Seconds of a Go duration string (``10s``, ``1m30s``, ``500ms``); None when it is not one."""
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group("number")) * _UNITS[match.group("unit")]
        position = match.end()
    return total if text and position == len(text) else None


class LoadReader(GitOpsReader):
    """Reads an Experiment's built-in load (its payload file is a repository path, as edits')."""

    def _own_load(self, spec: CommentedMap, namespace: str) -> Load | None:
        """``spec.load`` of our format (None when absent)."""
        if "load" not in spec:
            return None
        where = "spec.load"
        node = self._map(spec, "load", "spec", required=True)
        self._unknown(node, where, _LOAD_KEYS)
        method = (self._str(node, "method", where) or "GET").upper()
        bad_method = check_method(method)
        if bad_method is not None:
            raise self._error(self._at(node, "method"), f"'{where}.method': {bad_method}")
        payload_file = (
            self._repo_path(node, "payloadFile", where) if "payloadFile" in node else None
        )
        return Load(
            versions=self._targets(node, where, namespace),
            qps=self._positive(node, "qps", where, 8.0),
            duration_seconds=self._optional_positive(node, "durationSeconds", where),
            requests=self._optional_count(node, "requests", where),
            connections=self._int(node, "connections", where, 4, low=1, high=1024),
            method=method,
            payload=self._str(node, "payload", where),
            payload_file=payload_file,
            content_type=self._str(node, "contentType", where),
            timeout_seconds=self._positive(node, "timeoutSeconds", where, 10.0),
            load_only=self._flag(node, "loadOnly", where),
        )

    def _collect_load(self, actions: CommentedMap, namespace: str, at: Location) -> Load | None:
        """Iter8's ``metrics/collect`` task in ``spec.strategy.actions`` (None: there is none).

        Every other task is reported once as never run.
        """
        found: Load | None = None
        others = []
        for when, tasks in actions.items():
            if not isinstance(tasks, CommentedSeq):
                continue
            for index, task in enumerate(tasks):
                if isinstance(task, CommentedMap) and task.get("task") == COLLECT_TASK:
                    where = f"spec.strategy.actions.{when}[{index}]"
                    if found is not None:
                        raise self._error(
                            self._at(tasks, index),
                            f"'{where}': a second {COLLECT_TASK} task; one experiment sends "
                            "one load",
                        )
                    found = self._collect(task, where, namespace)
                else:
                    others.append(self._at(tasks, index))
        if others or found is None:
            which = "tasks other than metrics/collect are" if found is not None else "is"
            self._warn(
                at,
                f"'spec.strategy.actions' {which} never executed (nothing in the Env repo runs "
                "as code); describe the promotion and rollback commits in 'spec.gitops' with "
                "apiVersion reconciler/v1alpha1",
            )
        return found

    def _collect(self, task: CommentedMap, where: str, namespace: str) -> Load:
        node = self._map(task, "with", where, required=True)
        at = f"{where}.with"
        self._unknown(node, at, _COLLECT_KEYS)
        payload_url = self._str(node, "payloadURL", at)
        if payload_url is not None:
            refused = check_target(payload_url, namespace, (ANY_NAMESPACE,))
            if refused is not None:
                raise self._error(
                    self._at(node, "payloadURL"),
                    f"'{at}.payloadURL': {refused}; only an in-cluster Service is fetched (or "
                    "give the body inline as 'payloadStr', or as a file of the Env repo with "
                    "'spec.load.payloadFile', apiVersion reconciler/v1alpha1)",
                )
        time = self._str(node, "time", at)
        duration = go_duration(time) if time is not None else None
        if time is not None and not duration:
            raise self._error(
                self._at(node, "time"),
                f"'{at}.time' must be a Go duration like 10s, 1m or 500ms, not {excerpt(time)}",
            )
        requests = self._optional_count(node, "numQueries", at)
        payload = self._str(node, "payloadStr", at)
        return Load(
            versions=self._targets(node, at, namespace),
            qps=self._positive(node, "qps", at, 8.0),
            # Iter8: numQueries wins over time; neither means 100 queries.
            duration_seconds=duration if requests is None else None,
            requests=requests if requests is not None or duration else 100,
            connections=self._int(node, "connections", at, 4, low=1, high=1024),
            method="POST" if payload is not None or payload_url is not None else "GET",
            # Iter8: payloadURL wins over payloadStr
            payload=payload if payload_url is None else None,
            payload_url=payload_url,
            content_type=self._str(node, "contentType", at),
            load_only=self._flag(node, "loadOnly", at),
        )

    def _targets(self, node: CommentedMap, where: str, namespace: str) -> tuple[VersionLoad, ...]:
        seq = self._seq(node, "versions", where)
        if not seq:
            raise self._error(self._parent(node), f"'{where}.versions' must list the versions")

        def one(item: CommentedMap, at: str) -> VersionLoad:
            self._unknown(item, at, {"name", "url", "headers", "qps"})
            name = self._req(item, "name", at)
            url = self._req(item, "url", at)
            refused = check_target(url, namespace, (ANY_NAMESPACE,))
            if refused is not None:
                raise self._error(self._at(item, "url"), f"'{at}.url': {refused}")
            if check_target(url, namespace) is not None:
                self._warn(
                    self._at(item, "url"),
                    f"'{at}.url' is a Service of another namespace than the experiment's "
                    f"({namespace!r}): the reconciler sends it load only when its configuration "
                    "allows that namespace (load.allowedNamespaces)",
                )
            headers = self._map(item, "headers", at, required=False)
            pairs = []
            for key, value in headers.items():
                if not isinstance(key, str) or not isinstance(value, str | int | float):
                    raise self._error(
                        self._at(headers, key), f"'{at}.headers' must map names to text"
                    )
                pairs.append((key, str(value)))
            bad = check_headers(pairs)
            if bad is not None:
                raise self._error(self._at(item, "headers"), f"'{at}.headers': {bad}")
            return VersionLoad(name, url, tuple(pairs), self._optional_positive(item, "qps", at))

        versions = tuple(self._each_map(seq, f"{where}.versions", one))
        names = [v.version for v in versions]
        if len(set(names)) != len(names):
            raise self._error(self._at(node, "versions"), f"'{where}.versions' repeats a name")
        return versions

    def _positive(self, node: CommentedMap, key: str, where: str, default: float) -> float:
        value = self._optional_positive(node, key, where)
        return default if value is None else value

    def _optional_positive(self, node: CommentedMap, key: str, where: str) -> float | None:
        if key not in node:
            return None
        number = finite_number(node[key])
        if number is None or number <= 0:
            raise self._error(self._at(node, key), f"'{where}.{key}' must be a positive number")
        return number

    def _optional_count(self, node: CommentedMap, key: str, where: str) -> int | None:
        if key not in node:
            return None
        return self._int(node, key, where, 0, low=1, high=10_000_000)

    def _flag(self, node: CommentedMap, key: str, where: str) -> bool:
        value: Any = node.get(key, False)
        if not isinstance(value, bool):
            raise self._error(self._at(node, key), f"'{where}.{key}' must be true or false")
        return value
