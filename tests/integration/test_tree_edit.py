"""Trees and commits built in memory (``treeedit``) are the ones libgit2 builds, id for id."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pygit2.enums import FileMode, ObjectType

from reconciler.gitstore import GitEnvStore
from reconciler.gitstore.treeedit import TreeEditor, commit_bytes, object_id
from reconciler.gitstore.trees import Node, nest
from reconciler.ports import CommitSpec
from tests.gitutil import git, rev_parse, show_file

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from tests.fixtures.git import GitDaemon

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")


class _OdbSink:
    """Writes each object through libgit2, and checks it gives the id computed here."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo

    def add(self, kind: int, data: bytes, oid: bytes) -> None:
        assert self.repo.odb.write(kind, data).raw == oid


# -- the reference: libgit2's TreeBuilder, one per directory on a changed path --------------


def _write(
    repo: pygit2.Repository, tree: pygit2.Tree | None, node: Node, prefix: str
) -> pygit2.Oid | None:
    """Write ``tree`` with ``node``'s changes applied; None when the result is empty."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for name, change in node.items():
        path = f"{prefix}{name}"
        existing = tree[name] if tree is not None and name in tree else None
        if isinstance(change, dict):
            _write_subtree(repo, builder, existing=existing, name=name, node=change, path=path)
            continue
        if existing is not None and existing.type == ObjectType.TREE:
            raise ValueError(f"{path!r} is a directory; change the files in it instead")
        if change is None:
            if existing is not None:
                builder.remove(name)
            continue
        mode = FileMode.BLOB
        if existing is not None and existing.filemode == FileMode.BLOB_EXECUTABLE:
            mode = FileMode.BLOB_EXECUTABLE
        builder.insert(name, repo.create_blob(change), mode)
    if len(builder) == 0:
        return None
    return builder.write()


def _write_subtree(
    repo: pygit2.Repository,
    builder: pygit2.TreeBuilder,
    *,
    existing: pygit2.Object | None,
    name: str,
    node: Node,
    path: str,
) -> None:
    if existing is not None and not isinstance(existing, pygit2.Tree):
        raise ValueError(f"cannot write under {path!r}: it is a file")
    written = _write(repo, existing, node, f"{path}/")
    if written is not None:
        builder.insert(name, written, FileMode.TREE)
    elif existing is not None:
        builder.remove(name)


def build_tree(
    repo: pygit2.Repository, base: pygit2.Tree | None, changes: Mapping[str, bytes | None]
) -> pygit2.Oid:
    """Write the tree ``base`` becomes after ``changes`` (path -> content, None deletes).

    ``base`` None starts from an empty tree. Deleting an absent path is a no-op.

    Raises:
        ValueError: a path is invalid (see ``split_path``), is a directory, or runs
            through a file.
    """
    written = _write(repo, base, nest(changes), "")
    return written if written is not None else repo.TreeBuilder().write()


def _repo(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "r.git"), bare=True)


def _libgit2_chain(
    repo: pygit2.Repository, base: pygit2.Tree | None, steps: list[Mapping[str, bytes | None]]
) -> list[str]:
    ids = []
    for changes in steps:
        oid = build_tree(repo, base, changes)
        base = repo[oid].peel(pygit2.Tree)
        ids.append(str(oid))
    return ids


def _editor_chain(
    repo: pygit2.Repository, base: bytes | None, steps: list[Mapping[str, bytes | None]]
) -> list[str]:
    editor = TreeEditor(repo, _OdbSink(repo), base)
    return [editor.apply(changes).hex() for changes in steps]


_NAMES = st.sampled_from(["a", "b", "a.json", "a-b", "ab", "z", "b0"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=3).map("/".join)
_STEPS = st.lists(
    st.dictionaries(_PATHS, st.one_of(st.none(), st.binary(max_size=8)), max_size=4),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS)
def test_edited_trees_have_the_ids_libgit2_gives_them(
    tmp_path: Path, steps: list[Mapping[str, bytes | None]]
) -> None:
    """Random change sets (files, directories named like files, deletions, conflicts)."""
    repo = _repo(tmp_path)
    expected: list[str] = []
    base: pygit2.Tree | None = None
    for changes in steps:  # stop where libgit2 refuses, and check the editor refuses too
        try:
            oid = build_tree(repo, base, changes)
        except ValueError as refused:
            with pytest.raises(ValueError, match=re.escape(str(refused))):
                _editor_chain(repo, None, [*steps[: len(expected)], changes])
            break
        base = repo[oid].peel(pygit2.Tree)
        expected.append(str(oid))
    assert _editor_chain(repo, None, steps[: len(expected)]) == expected


def test_editing_starts_from_an_existing_tree_and_keeps_modes_it_does_not_touch(
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path)
    builder = repo.TreeBuilder()
    builder.insert("run.sh", repo.create_blob(b"#!/bin/sh\n"), FileMode.BLOB_EXECUTABLE)
    builder.insert("link", repo.create_blob(b"run.sh"), FileMode.LINK)
    sub = repo.TreeBuilder()
    sub.insert("x.json", repo.create_blob(b"{}"), FileMode.BLOB)
    builder.insert("experiments", sub.write(), FileMode.TREE)
    base = repo[builder.write()].peel(pygit2.Tree)
    steps: list[Mapping[str, bytes | None]] = [
        {"run.sh": b"#!/bin/sh\nexit 0\n", "experiments/y.json": b"[]"},
        {"experiments/x.json": None},
        {"experiments/y.json": None},  # the directory goes with its last file
        {"link": None, "run.sh": None},  # nothing left: the empty tree
        {"again/a": b"a"},
    ]
    edited = _editor_chain(repo, base.id.raw, steps)
    assert edited == _libgit2_chain(repo, base, steps)
    mode = repo[edited[0]].peel(pygit2.Tree)["run.sh"].filemode
    assert mode == FileMode.BLOB_EXECUTABLE
    assert edited[3] == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"experiments": b"x"}, "is a directory"),
        ({"experiments/x.json/y": b"x"}, "it is a file"),
        ({"../x": b"x"}, "invalid repository path"),
        ({"a/.git/x": b"x"}, "invalid repository path"),
        ({"a": b"x", "a/b": b"y"}, "runs through the file"),
    ],
)
def test_paths_libgit2_refuses_are_refused_with_the_same_words(
    tmp_path: Path, changes: Mapping[str, bytes | None], error: str
) -> None:
    repo = _repo(tmp_path)
    base = build_tree(repo, None, {"experiments/x.json": b"{}"})
    with pytest.raises(ValueError, match=error):
        build_tree(repo, repo[base].peel(pygit2.Tree), changes)
    editor = TreeEditor(repo, _OdbSink(repo), base.raw)
    with pytest.raises(ValueError, match=error):
        editor.apply(changes)


@pytest.mark.parametrize(
    ("name", "email", "offset", "message"),
    [
        ("gitops-reconciler", "reconciler@example.test", 0, "one line\n\nRollout-Id: a/b@c\n"),
        ("  Zoë Ångström ", " zoe@example.test", 120, "no newline at the end"),
        ("Ada", "ada@example.test", -330, "ünïcode\n"),
    ],
)
def test_commits_are_written_byte_for_byte_as_libgit2_writes_them(
    tmp_path: Path, name: str, email: str, offset: int, message: str
) -> None:
    repo = _repo(tmp_path)
    tree = repo.TreeBuilder().write()
    parent = repo.create_commit(
        None,
        pygit2.Signature("p", "p@x", 1, 0),
        pygit2.Signature("p", "p@x", 1, 0),
        "p\n",
        tree,
        [],
    )
    signature = pygit2.Signature(name, email, 1_800_000_000, offset)
    for parents in ([], [parent]):
        expected = repo.create_commit(None, signature, signature, message, tree, parents)
        content = commit_bytes(tree.raw, [p.raw for p in parents], signature, signature, message)
        assert object_id(ObjectType.COMMIT, content) == expected.raw
        assert repo[expected].read_raw() == content


def test_a_big_tick_pushed_to_git_daemon_is_what_git_reads_and_fsck_is_clean(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    """Many commits across directories, some signed by libgit2 in the middle of the chain."""
    remote = git_daemon.path(env_remote)
    store = GitEnvStore.open(env_remote, tmp_path / "cache.git", author=AUTHOR)
    store.fetch()
    specs = []
    for i in range(300):
        path = f"experiments/ns{i % 7}/e{i % 40}.json"
        changes: dict[str, bytes | None] = {path: f'{{"i": {i}}}\n'.encode()}
        if i % 50 == 49:
            changes[f"experiments/ns{i % 7}/e{(i + 1) % 40}.json"] = None
        sign = (
            (lambda _content: b"-----BEGIN SSH SIGNATURE-----\nx\n-----END SSH SIGNATURE-----")
            if i % 100 == 3
            else None
        )
        specs.append(CommitSpec(f"step {i}\n", changes, sign=sign))

    result = store.update_branch("state", lambda _tip: specs)

    assert result.tip == rev_parse(remote, "state")
    assert git("--git-dir", remote, "rev-list", "--count", "state") == "300"
    assert show_file(remote, "state", "experiments/ns5/e19.json") == '{"i": 299}\n'
    assert "gpgsig" in git("--git-dir", remote, "cat-file", "commit", "state~296")
    git("--git-dir", remote, "fsck", "--strict", "--no-dangling")
