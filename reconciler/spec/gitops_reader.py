"""Reading ``spec.gitops`` of an Experiment: the edits of its promotion, rollback and cleanup.

Every path is joined to the experiment file's directory and checked here, at validate time,
as the promotion checks it before it writes main's tree. A mixin of the Experiment reader
(``spec.loader``), on the shared field readers (``spec.reader``).
"""

from __future__ import annotations

import posixpath
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.spec import fieldpath
from reconciler.spec.model import (
    Approval,
    CopyEdit,
    DeleteEdit,
    DeploymentPattern,
    Edit,
    Experiment,
    GateName,
    GitOps,
    OnTimeout,
    Replacement,
    SetEdit,
)
from reconciler.spec.reader import FieldReader
from reconciler.spec.repopath import split_path
from reconciler.spec.yamldoc import excerpt

__all__ = ["GitOpsReader"]


class GitOpsReader(FieldReader):
    """Reads an Experiment's ``spec.gitops``."""

    repo_path: str
    """The experiment file's path in the repository (its edits' paths are relative to it)."""

    def _gitops(self, spec: CommentedMap) -> GitOps:
        where = "spec.gitops"
        node = self._map(spec, "gitops", "spec", required=False)
        self._unknown(node, where, {"promote", "rollback", "cleanup"})
        return GitOps(
            promote=self._edits(node, "promote", where),
            rollback=self._edits(node, "rollback", where),
            cleanup=tuple(self._paths(node, "cleanup", where)),
        )

    def _approval(self, spec: CommentedMap) -> Approval:
        """``spec.approval``: the gates a person passes with ``reconciler approve``."""
        where = "spec.approval"
        node = self._map(spec, "approval", "spec", required=False)
        self._unknown(node, where, {"before", "timeoutSeconds", "onTimeout", "requireSigned"})
        before: list[GateName] = []
        for index, item in enumerate(self._seq(node, "before", where)):
            try:
                gate = GateName(item) if isinstance(item, str) else None
            except ValueError:
                gate = None
            if gate is None:
                raise self._error(
                    self._at(node["before"], index),
                    f"'{where}.before[{index}]' must be one of "
                    f"{', '.join(g.value for g in GateName)}, not {excerpt(item)}",
                )
            if gate not in before:
                before.append(gate)
        signed = node.get("requireSigned", False)
        if not isinstance(signed, bool):
            raise self._error(
                self._at(node, "requireSigned"),
                f"'{where}.requireSigned' must be true or false, not {excerpt(signed)}",
            )
        if node and not before:
            self._warn(
                self._at(spec, "approval"),
                f"'{where}' names no gate: add 'before: [promotion]' and/or 'before: [start]'",
            )
        return Approval(
            before=tuple(before),
            timeout_seconds=self._int(node, "timeoutSeconds", where, 86400, low=1, high=2_592_000),
            on_timeout=self._enum(node, "onTimeout", where, OnTimeout, OnTimeout.ROLLBACK),
            require_signed=signed,
        )

    def _edits(self, node: CommentedMap, key: str, where: str) -> tuple[Edit, ...]:
        def edit(item: CommentedMap, at: str) -> Edit:
            if set(item) == {"copy"}:
                body = self._map(item, "copy", at, required=True)
                self._unknown(body, f"{at}.copy", {"from", "to", "replace"})
                source = self._repo_path(body, "from", f"{at}.copy")
                destination = self._repo_path(body, "to", f"{at}.copy")
                replacements = []
                for index, rep in enumerate(self._seq(body, "replace", f"{at}.copy")):
                    rat = f"{at}.copy.replace[{index}]"
                    if not isinstance(rep, CommentedMap):
                        raise self._error(self._at(body, "replace"), f"'{rat}' must be a mapping")
                    self._unknown(rep, rat, {"old", "new"})
                    old = self._req(rep, "old", rat)
                    new = rep.get("new")
                    if not isinstance(new, str):
                        raise self._error(self._at(rep), f"'{rat}.new' must be a string")
                    replacements.append(Replacement(old=old, new=new))
                return CopyEdit(source, destination, tuple(replacements))
            if set(item) == {"delete"}:
                return DeleteEdit(tuple(self._paths(item, "delete", at)))
            if set(item) == {"set"}:
                return self._set_edit(self._map(item, "set", at, required=True), f"{at}.set")
            raise self._error(
                self._at(item),
                f"'{at}' must have exactly one of 'copy' (with 'from', 'to' and optional "
                f"'replace'), 'set' (with 'file', 'path' and 'value') or 'delete' (a list "
                f"of paths), got {', '.join(excerpt(k) for k in list(item)[:5])}",
            )

        return tuple(self._each_map(self._seq(node, key, where), f"{where}.{key}", edit))

    def _set_edit(self, body: CommentedMap, at: str) -> SetEdit:
        self._unknown(body, at, {"file", "path", "value", "document"})
        file = self._repo_path(body, "file", at)
        path = self._req(body, "path", at)
        try:
            fieldpath.parse(path)
        except fieldpath.FieldPathError as exc:
            raise self._error(self._at(body, "path"), str(exc)) from None
        value = body.get("value")
        if value is None or isinstance(value, (CommentedMap, CommentedSeq)):
            raise self._error(
                self._parent(body), f"'{at}.value' must be a scalar such as \"1.2.3\""
            )
        document = self._int(body, "document", at, 0, low=0, high=1000)
        return SetEdit(file=file, path=path, value=str(value), document=document)

    def _paths(self, node: CommentedMap, key: str, where: str) -> list[str]:
        seq = self._seq(node, key, where)
        return [self._normalise(seq, i, f"{where}.{key}[{i}]") for i in range(len(seq))]

    def _repo_path(self, node: CommentedMap, key: str, where: str) -> str:
        self._req(node, key, where)
        return self._normalise(node, key, f"{where}.{key}")

    def _normalise(self, node: CommentedMap | CommentedSeq, key: Any, at: str) -> str:  # noqa: ANN401
        raw = node[key]
        if not isinstance(raw, str) or not raw:
            raise self._error(self._at(node, key), f"'{at}' must be a path")
        if raw.startswith("/"):
            raise self._error(
                self._at(node, key),
                f"'{at}' is absolute ({excerpt(raw)}); write it relative to the experiment file's "
                "directory",
            )
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(self.repo_path), raw))
        if joined == ".." or joined.startswith("../") or joined == ".":
            raise self._error(
                self._at(node, key), f"'{at}' ({excerpt(raw)}) points outside the repository"
            )
        if self.repo_path.startswith(joined + "/"):
            raise self._error(
                self._at(node, key),
                f"'{at}' ({excerpt(raw)}) names the directory {excerpt(joined)}; name a file",
            )
        try:
            # What the promotion checks before it writes main's tree (an absolute path is a
            # file read outside a repository, by validate or a test).
            split_path(joined.removeprefix("/"))
        except ValueError:
            raise self._error(
                self._at(node, key),
                f"'{at}' ({excerpt(raw)}) is not a path a promotion may write: no '.git', no "
                "empty, '.' or '..' parts left after joining, no backslash, no NUL",
            ) from None
        return joined

    def _check_blue_green(self, experiment: Experiment, spec: CommentedMap) -> None:
        """Warn when a blue/green switch back to the baseline cannot wait for its rollout.

        After a blue/green promotion the winner serves until the baseline runs its version:
        the outcome applied, then every readiness object ready. Without readiness objects
        only the first half can be waited for.
        """
        if experiment.deployment_pattern is not DeploymentPattern.BLUE_GREEN:
            return
        if experiment.readiness.objects:
            return
        self._warn(
            self.locations.get("spec.strategy", self._at(spec)),
            "BlueGreen without 'spec.readiness.objects': after a promotion, traffic returns "
            "to the baseline once the GitOps operator reports the outcome applied (or "
            "syncTimeout passes), without waiting for the baseline's rollout of the "
            "winner's version; list the baseline's Deployment under spec.readiness.objects",
        )
