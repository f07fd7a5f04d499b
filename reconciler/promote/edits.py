"""Pure tree transforms: main's files in, the outcome commit's file changes out.

``needed_paths`` says which files of main an outcome reads; ``apply`` turns their content
into the changes of the promotion or rollback commit. Edits run in order on a virtual
tree (a later edit sees an earlier one's result), then ``cleanup`` and the experiment
file itself are deleted, so main no longer names an experiment that is over. ``set``
changes one YAML scalar and no other byte (``reconciler.promote.yamlset``). A ``copy`` or
``set`` whose file is missing, or a ``set`` path that does not exist, is an error that names
the file and path; deleting a file that is already gone is not (the edit is idempotent).
Replacement and ``set`` values may use the winner's variables as ``{{ variables.NAME }}``.
No I/O: the caller reads and commits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from reconciler.errors import Location, PromotionError
from reconciler.promote.yamlset import YamlSetError, set_scalar
from reconciler.spec.model import CopyEdit, DeleteEdit, Edit, Experiment, SetEdit, Version

PROMOTED, ROLLED_BACK = "promoted", "rolled-back"
_VARIABLE = re.compile(r"\{\{\s*variables\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")


def edits_for(spec: Experiment, outcome: str) -> tuple[Edit, ...]:
    """The edits an outcome performs, cleanup and the experiment file's deletion included.

    A blue/green promotion keeps the files it would delete (``blue_green_cleanup``) for
    its cleanup commit: the winner serves from them until the baseline runs its version.
    """
    own = spec.gitops.promote if outcome == PROMOTED else spec.gitops.rollback
    if outcome == PROMOTED and spec.blue_green_cleanup:
        kept = tuple(e for e in own if not isinstance(e, DeleteEdit))
        return (*kept, DeleteEdit((spec.path,)))
    deletions = tuple(dict.fromkeys((*spec.gitops.cleanup, spec.path)))
    return (*own, DeleteEdit(deletions))


def cleanup_changes(spec: Experiment, files: Mapping[str, bytes | None]) -> dict[str, None]:
    """A blue/green promotion's cleanup commit: each of its files still on main, deleted.

    ``files``: main's content of at least ``spec.blue_green_cleanup`` (None: absent). A file
    already gone is left out, so the cleanup can be retried (and may change nothing).
    """
    return {path: None for path in spec.blue_green_cleanup if files.get(path) is not None}


def needed_paths(spec: Experiment, outcome: str) -> set[str]:
    """Files of main that ``apply`` reads for this outcome."""
    needed = set()
    for edit in edits_for(spec, outcome):
        if isinstance(edit, CopyEdit):
            needed.add(edit.source)
        elif isinstance(edit, SetEdit):
            needed.add(edit.file)
    return needed


def apply(
    spec: Experiment, outcome: str, winner: str | None, files: Mapping[str, bytes | None]
) -> dict[str, bytes | None]:
    """The outcome commit's changes: path to new content, or None to delete.

    Args:
        spec: the experiment whose outcome this is.
        outcome: ``promoted`` or ``rolled-back``.
        winner: the winning version's name (promotion only).
        files: content on main of at least ``needed_paths(spec, outcome)``; None: absent.

    Raises:
        PromotionError: a copy's source is missing, or a variable is not defined.
    """
    version = _version(spec, winner)
    tree: dict[str, bytes | None] = dict(files)
    changes: dict[str, bytes | None] = {}
    for edit in edits_for(spec, outcome):
        if isinstance(edit, CopyEdit):
            content = tree.get(edit.source)
            if content is None:
                raise PromotionError(
                    f"{Location(spec.path)}: spec.gitops copy source {edit.source!r} is not on "
                    "main; fix the path or drop the edit"
                )
            text = content.decode()
            for replacement in edit.replacements:
                text = text.replace(replacement.old, _expand(replacement.new, version, spec))
            tree[edit.destination] = changes[edit.destination] = text.encode()
        elif isinstance(edit, SetEdit):
            tree[edit.file] = changes[edit.file] = _set(spec, edit, tree.get(edit.file), version)
        else:
            for path in edit.paths:
                tree[path] = changes[path] = None
    return changes


def _set(spec: Experiment, edit: SetEdit, content: bytes | None, version: Version | None) -> bytes:
    where = f"{Location(spec.path)}: spec.gitops set {edit.file} {edit.path}"
    if content is None:
        raise PromotionError(f"{where}: the file is not on main; fix the path or drop the edit")
    value = _expand(edit.value, version, spec)
    try:
        return set_scalar(content.decode(), edit.path, value, document=edit.document).encode()
    except (YamlSetError, UnicodeDecodeError) as exc:
        raise PromotionError(f"{where}: {exc}") from None


def _version(spec: Experiment, winner: str | None) -> Version | None:
    for version in spec.versions:
        if version.name == winner:
            return version
    return None


def _expand(template: str, version: Version | None, spec: Experiment) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = version.variable(name) if version is not None else None
        if found is None:
            raise PromotionError(
                f"{Location(spec.path)}: '{{{{ variables.{name} }}}}' is used in spec.gitops "
                f"but version {version.name if version else '(none)'} defines no variable "
                f"{name!r}"
            )
        return found

    return _VARIABLE.sub(value, template)
