from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2
import pytest

from reconciler.errors import GitPermanentError, GitTemporaryError, PushRejectedError
from reconciler.gitstore import (
    README_PATH,
    GitEnvStore,
    format_message,
    live_path,
    load_live,
    with_readme,
)
from reconciler.ports import CommitSpec
from tests.gitutil import (
    commit_files,
    git,
    git_env,
    is_ancestor,
    ls_tree,
    rev_parse,
    show_file,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reconciler.ports import Plan
    from tests.fixtures.git import GitDaemon

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")


def open_store(url: str, tmp_path: Path, **kwargs: object) -> GitEnvStore:
    store = GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR, **kwargs)  # type: ignore[arg-type]
    store.fetch()
    return store


def add(changes: dict[str, bytes | None], message: str = "change") -> list[CommitSpec]:
    return [CommitSpec(message=message, changes=changes)]


def adding(changes: dict[str, bytes | None], message: str = "change") -> Plan:
    """A plan that makes one commit of ``changes`` whatever the tip."""
    return lambda _tip: add(changes, message)


@pytest.fixture(params=["git-daemon", "local-path"])
def any_remote(request: pytest.FixtureRequest, env_remote: str, git_daemon: GitDaemon) -> str:
    """The same fresh remote, reached through git:// or as a plain local path."""
    if request.param == "local-path":
        return str(git_daemon.path(env_remote))
    return env_remote


def remote_dir(url: str, git_daemon: GitDaemon) -> Path:
    return git_daemon.path(url) if url.startswith("git://") else Path(url)


def test_fetch_returns_main_tip_and_none_for_absent_state_branch(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    store = GitEnvStore.open(env_remote, tmp_path / "cache.git", author=AUTHOR)
    heads = store.fetch()
    assert heads.main == rev_parse(git_daemon.path(env_remote), "main")
    assert heads.state is None


def test_reads_files_directories_and_blob_ids_at_a_commit(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    tip = commit_files(
        remote,
        {"apps/ratings/deployment.yaml": "kind: Deployment\n", "apps/ratings/svc.yaml": "x"},
        message="add ratings",
    )
    store = open_store(env_remote, tmp_path)
    assert store.read_file(tip, "apps/ratings/svc.yaml") == b"x"
    assert store.read_file(tip, "apps/ratings") is None
    assert store.read_file(tip, "nothing/here.yaml") is None
    assert store.exists(tip, "apps/ratings")
    assert not store.exists(tip, "apps/reviews")
    assert store.blob_id(tip, "README.md") == git(
        "--git-dir", remote, "rev-parse", f"{tip}:README.md"
    )
    assert store.blob_id(tip, "apps") is None
    assert sorted(p for p, _ in store.list_files(tip, "apps/ratings")) == [
        "apps/ratings/deployment.yaml",
        "apps/ratings/svc.yaml",
    ]
    assert sorted(p for p, _ in store.list_files(tip)) == sorted(ls_tree(remote, tip))
    assert list(store.list_files(tip, "absent")) == []


def test_update_branch_pushes_commits_built_without_a_working_tree(
    any_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = remote_dir(any_remote, git_daemon)
    store = open_store(any_remote, tmp_path)
    seen: list[str | None] = []

    def plan(tip: str | None) -> Sequence[CommitSpec]:
        seen.append(tip)
        return [
            CommitSpec("add a", {"experiments/bookinfo/a.json": b"{}\n"}),
            CommitSpec("add b, change readme", {"x/y/z/b.txt": b"b", "README.md": b"new\n"}),
        ]

    before = rev_parse(remote, "main")
    result = store.update_branch("main", plan)

    assert seen == [before]
    assert result.attempts == 1
    assert len(result.commits) == 2
    assert result.tip == result.commits[-1] == rev_parse(remote, "main")
    assert show_file(remote, "main", "x/y/z/b.txt") == "b"
    assert show_file(remote, "main", "README.md") == "new\n"
    assert show_file(remote, "main~1", "experiments/bookinfo/a.json") == "{}\n"
    assert git("--git-dir", remote, "log", "--format=%an <%ae>|%s", "-1", "main") == (
        "gitops-reconciler <reconciler@example.test>|add b, change readme"
    )
    assert list(tmp_path.joinpath("cache.git").glob("index")) == []
    # The next update starts from our own tip without a fetch.

    def plan_again(tip: str | None) -> list[CommitSpec]:
        seen.append(tip)
        return add({"c": b"c"})

    again = store.update_branch("main", plan_again)
    assert seen[-1] == result.tip
    assert again.attempts == 1


def test_state_branch_starts_as_orphan_with_readme(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    store = open_store(env_remote, tmp_path)
    path = live_path("bookinfo", "quickstart-exp")
    document = json.dumps({"phase": "Progressing"}, indent=2, sort_keys=True).encode()
    tips: list[str | None] = []

    def plan(tip: str | None) -> list[CommitSpec]:
        tips.append(tip)
        return [CommitSpec("quickstart-exp: started", with_readme(tip, {path: document}))]

    result = store.update_branch(store.state_branch, plan)

    assert tips == [None]
    parents = git("--git-dir", remote, "rev-list", "--parents", "-1", "reconciler-state").split()
    assert parents == [result.tip]  # no parent: an orphan branch
    assert sorted(ls_tree(remote, "reconciler-state")) == [README_PATH, path]
    assert "git log" in (show_file(remote, "reconciler-state", README_PATH) or "")
    assert result.tip is not None
    assert load_live(store, result.tip) == {path: document}
    assert store.fetch().state == result.tip


def test_deleting_the_last_file_of_a_directory_removes_the_directory(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    store = open_store(env_remote, tmp_path)
    store.update_branch("main", lambda _tip: add({"a/b/c.txt": b"c", "a/d.txt": b"d"}))
    store.update_branch("main", lambda _tip: add({"a/b/c.txt": None, "never/there": None}))
    assert "a/b/c.txt" not in ls_tree(remote, "main")
    assert git("--git-dir", remote, "ls-tree", "--name-only", "main:a") == "d.txt"
    result = store.update_branch("main", lambda _tip: add({"a/d.txt": None}))
    assert result.tip is not None
    assert not store.exists(result.tip, "a")
    assert sorted(ls_tree(remote, "main")) == ["README.md", "apps/productpage/deployment.yaml"]


def test_changed_paths_lists_added_modified_and_deleted_files(
    env_remote: str, tmp_path: Path
) -> None:
    store = open_store(env_remote, tmp_path)
    old = store.fetch().main
    assert old is not None
    result = store.update_branch(
        "main",
        lambda _tip: add(
            {
                "README.md": b"changed\n",
                "apps/productpage/deployment.yaml": None,
                "apps/reviews/exp.yaml": b"kind: Experiment\n",
            }
        ),
    )
    assert result.tip is not None
    assert store.changed_paths(old, result.tip) == [
        "README.md",
        "apps/productpage/deployment.yaml",
        "apps/reviews/exp.yaml",
    ]
    assert store.changed_paths(result.tip, result.tip) == []
    assert sorted(store.changed_paths(None, old)) == [
        "README.md",
        "apps/productpage/deployment.yaml",
    ]


def test_rejected_push_is_replanned_on_the_new_tip_and_keeps_the_other_commit(
    any_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = remote_dir(any_remote, git_daemon)
    store = open_store(any_remote, tmp_path)
    ours_before = store.fetch().main
    theirs = commit_files(remote, {"other.txt": "from another clone\n"}, message="other")
    tips: list[str | None] = []

    def plan(tip: str | None) -> list[CommitSpec]:
        tips.append(tip)
        return [CommitSpec("ours", {"ours.txt": f"planned on {tip}\n".encode()})]

    result = store.update_branch("main", plan)

    assert tips == [ours_before, theirs]
    assert result.attempts == 2
    assert result.tip == rev_parse(remote, "main")
    assert is_ancestor(remote, theirs, "main")
    assert show_file(remote, "main", "ours.txt") == f"planned on {theirs}\n"
    assert show_file(remote, "main", "other.txt") == "from another clone\n"


def test_rejection_reported_by_the_server_through_the_callback_is_retried(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    marker = tmp_path / "declined-once"
    hook = remote / "hooks" / "update"
    hook.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            if [ ! -e {marker} ]; then touch {marker}; echo "declined once" >&2; exit 1; fi
            """)
    )
    hook.chmod(0o755)
    store = open_store(env_remote, tmp_path)
    result = store.update_branch("main", lambda _tip: add({"f": b"1"}))
    assert marker.exists()
    assert result.attempts == 2
    assert result.tip == rev_parse(remote, "main")


def test_push_gives_up_with_push_rejected_after_max_attempts(
    any_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = remote_dir(any_remote, git_daemon)
    sleeps: list[float] = []
    store = open_store(any_remote, tmp_path, max_push_attempts=3, sleep=sleeps.append)
    calls = 0

    def plan_that_always_loses(_tip: str | None) -> list[CommitSpec]:
        nonlocal calls
        calls += 1
        commit_files(remote, {"race.txt": str(calls)}, message=f"competitor {calls}")
        return add({"ours.txt": b"never lands"})

    with pytest.raises(PushRejectedError) as caught:
        store.update_branch("main", plan_that_always_loses)

    assert calls == 3
    assert len(sleeps) == 2
    assert 0 < sleeps[0] <= sleeps[1] <= 2.0
    assert caught.value.ref == "main"
    assert "still rejected after 3 attempts" in str(caught.value)
    assert show_file(remote, "main", "ours.txt") is None
    assert show_file(remote, "main", "race.txt") == "3"


def test_empty_plan_pushes_nothing(env_remote: str, git_daemon: GitDaemon, tmp_path: Path) -> None:
    store = open_store(env_remote, tmp_path)
    before = rev_parse(git_daemon.path(env_remote), "main")
    result = store.update_branch("main", lambda _tip: [])
    assert (result.commits, result.tip, result.attempts) == ((), before, 0)


def test_trailers_written_by_the_store_are_read_by_plain_git_log(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    store = open_store(env_remote, tmp_path)
    message = format_message(
        "productpage: iteration 7/10, candidate at 30%",
        [
            ("Rollout-Id", "bookinfo/quickstart-exp@3f2a9c1e07b4"),
            ("Rollout-Weights", "productpage-v1=70,productpage-v2=30"),
        ],
        body="Objectives met.",
    )
    result = store.update_branch(
        store.state_branch, lambda tip: [CommitSpec(message, with_readme(tip, {}))]
    )
    assert result.tip is not None
    out = git(
        "--git-dir",
        remote,
        "log",
        "-1",
        "--format=%(trailers:key=Rollout-Weights,valueonly)",
        "reconciler-state",
    )
    assert out == "productpage-v1=70,productpage-v2=30"
    (info,) = list(store.log(result.tip))
    assert info.trailer("rollout-id") == "bookinfo/quickstart-exp@3f2a9c1e07b4"
    assert info.subject == "productpage: iteration 7/10, candidate at 30%"


def test_log_lists_newest_first_and_stops_at_hide(env_remote: str, tmp_path: Path) -> None:
    store = open_store(env_remote, tmp_path)
    base = store.fetch().main
    assert base is not None
    result = store.update_branch(
        "main", lambda _tip: [CommitSpec(f"step {i}", {f"s{i}": b""}) for i in range(3)]
    )
    assert result.tip is not None
    assert [c.subject for c in store.log(result.tip, hide=base)] == ["step 2", "step 1", "step 0"]
    assert [c.id for c in store.log(result.tip)][-1] == base


def test_fetch_reads_a_branch_deleted_on_the_remote_as_absent(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    store = open_store(env_remote, tmp_path)
    store.update_branch(store.state_branch, lambda tip: add(dict(with_readme(tip, {}))))
    assert store.fetch().state is not None
    git("--git-dir", remote, "branch", "-D", "reconciler-state")
    assert store.fetch().state is None
    assert store.tip("reconciler-state") is None


def test_open_reuses_the_cache_and_follows_a_changed_url(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    first = open_store(env_remote, tmp_path)
    tip = first.fetch().main
    first.close()
    local = str(git_daemon.path(env_remote))
    again = GitEnvStore.open(local, tmp_path / "cache.git", author=AUTHOR)
    assert again.tip("main") == tip  # the cache survived
    assert again.url == local
    assert again.fetch().main == tip


def test_pushing_to_a_non_bare_local_remote_is_a_permanent_error(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    git("init", "--quiet", "--initial-branch=main", work)
    git("commit", "--quiet", "--allow-empty", "-m", "start", cwd=work)
    before = git("rev-parse", "HEAD", cwd=work)
    store = open_store(str(work), tmp_path)
    with pytest.raises(GitPermanentError, match="not a bare repository"):
        store.update_branch("main", adding({"f": b"x"}))
    assert git("rev-parse", "HEAD", cwd=work) == before
    assert git("for-each-ref", "refs/reconciler", cwd=work) == ""


def test_relative_local_path_is_made_absolute(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = git_daemon.path(env_remote)
    monkeypatch.chdir(remote.parent)
    store = GitEnvStore.open(remote.name, tmp_path / "cache.git", author=AUTHOR)
    assert store.url == str(remote)
    assert store.fetch().main == rev_parse(remote, "main")


def test_invalid_paths_in_a_plan_are_refused_before_anything_is_pushed(
    env_remote: str, tmp_path: Path
) -> None:
    store = open_store(env_remote, tmp_path)
    for bad in ("../escape", "/abs", "a//b", ".git/config", "a/./b"):
        with pytest.raises(ValueError, match="invalid repository path"):
            store.update_branch("main", adding({bad: b"x"}))
    with pytest.raises(ValueError, match="directory"):
        store.update_branch("main", lambda _tip: add({"apps": b"x"}))
    with pytest.raises(ValueError, match="file"):
        store.update_branch("main", lambda _tip: add({"README.md/x": b"x"}))


def test_unknown_commit_is_a_permanent_error(env_remote: str, tmp_path: Path) -> None:
    store = open_store(env_remote, tmp_path)
    with pytest.raises(GitPermanentError, match="not in the local cache"):
        store.read_file("0" * 40, "README.md")
    with pytest.raises(GitPermanentError, match="not in the local cache"):
        store.read_file("not-hex", "README.md")


def test_unreachable_server_is_a_temporary_error_after_bounded_retries(tmp_path: Path) -> None:
    from tests.fixtures.net import free_port  # noqa: PLC0415

    url = f"git://127.0.0.1:{free_port()}/nothing.git"
    store = GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR)
    with pytest.raises(GitTemporaryError, match="fetch from") as caught:
        store.fetch()
    assert not isinstance(caught.value, GitPermanentError)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_missing_local_repository_is_a_permanent_error(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}{tmp_path / 'absent.git'}"
    store = GitEnvStore.open(url, tmp_path / "cache.git", author=AUTHOR)
    with pytest.raises(GitPermanentError, match="no repository at"):
        store.fetch()


def test_repository_missing_on_the_server_is_a_permanent_error(
    git_daemon: GitDaemon, tmp_path: Path
) -> None:
    store = GitEnvStore.open(git_daemon.url("missing.git"), tmp_path / "cache.git", author=AUTHOR)
    with pytest.raises(GitPermanentError, match="no such repository"):
        store.fetch()


def test_unknown_transport_is_refused_at_open(tmp_path: Path) -> None:
    with pytest.raises(GitPermanentError, match="unsupported transport 'foo'"):
        GitEnvStore.open("foo://host/env.git", tmp_path / "cache.git", author=AUTHOR)


def test_tree_update_reads_only_the_trees_on_the_changed_path(tmp_path: Path) -> None:
    """Unrelated subtrees are never loaded: they are even absent from the repository."""
    full = pygit2.init_repository(str(tmp_path / "full.git"), bare=True)
    sig = pygit2.Signature(*AUTHOR)
    big = full.TreeBuilder()
    for i in range(3000):
        big.insert(f"f{i:04}.yaml", full.create_blob(f"{i}\n".encode()), pygit2.enums.FileMode.BLOB)
    live = full.TreeBuilder()
    live.insert("a.json", full.create_blob(b"{}"), pygit2.enums.FileMode.BLOB)
    exp = full.TreeBuilder()
    exp.insert("ns", live.write(), pygit2.enums.FileMode.TREE)
    root = full.TreeBuilder()
    root.insert("archive", big.write(), pygit2.enums.FileMode.TREE)
    root.insert("experiments", exp.write(), pygit2.enums.FileMode.TREE)
    commit = full.create_commit(None, sig, sig, "big\n", root.write(), [])
    # A repository holding the commit and everything but the big archive/ subtree.
    partial = pygit2.init_repository(str(tmp_path / "partial.git"), bare=True)
    wanted = [commit, full[commit].peel(pygit2.Tree).id]
    tree = full[commit].peel(pygit2.Tree)
    experiments = tree["experiments"]
    assert isinstance(experiments, pygit2.Tree)
    ns = experiments["ns"]
    assert isinstance(ns, pygit2.Tree)
    wanted += [experiments.id, ns.id, ns["a.json"].id]
    for oid in wanted:
        obj = full[oid]
        partial.odb.write(obj.type, obj.read_raw())
    assert tree["archive"].id not in partial
    partial.references.create("refs/remotes/origin/main", commit)

    store = GitEnvStore.open(str(tmp_path / "nowhere"), tmp_path / "partial.git", author=AUTHOR)
    assert load_live(store, str(commit)) == {"experiments/ns/a.json": b"{}"}
    assert store.changed_paths(str(commit), str(commit)) == []
    new_tip = store._build_commits(  # noqa: SLF001 - no push: the remote does not exist
        str(commit), add({"experiments/ns/b.json": b"[]", "experiments/ns/a.json": None})
    )[-1]
    assert store.changed_paths(str(commit), new_tip) == [
        "experiments/ns/a.json",
        "experiments/ns/b.json",
    ]
    assert store.blob_id(new_tip, "archive") is None
    assert partial[new_tip].peel(pygit2.Tree)["archive"].id == tree["archive"].id


WRITER = textwrap.dedent("""\
    import random, subprocess, sys, time
    url, work, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def git(*args, check=True):
        return subprocess.run(["git", *args], cwd=work, capture_output=True, text=True,
                              check=check)

    subprocess.run(["git", "clone", "--quiet", url, work], check=True, capture_output=True)
    for i in range(count):
        with open(f"{work}/writer.log", "a") as log:
            log.write(f"writer {i}\\n")
        git("add", "writer.log")
        git("commit", "--quiet", "-m", f"writer {i}")
        for _attempt in range(200):
            if git("push", "--quiet", "origin", "HEAD:main", check=False).returncode == 0:
                break
            print("rejected", file=sys.stderr, flush=True)
            git("fetch", "--quiet", "origin", "main")
            git("rebase", "--quiet", "origin/main")
        else:
            sys.exit(f"writer {i}: gave up")
        print(git("rev-parse", "HEAD").stdout.strip(), flush=True)
        time.sleep(random.uniform(0, 0.01))
    """)


def test_concurrent_writer_process_loses_nothing_and_nothing_is_forced(
    any_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = remote_dir(any_remote, git_daemon)
    git("--git-dir", remote, "config", "core.logAllRefUpdates", "always")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(script), any_remote, str(tmp_path / "writer"), "10"],
        env=git_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = open_store(
        any_remote, tmp_path, max_push_attempts=40, backoff_initial=0.005, backoff_max=0.05
    )
    assert writer.stdout is not None
    theirs = [writer.stdout.readline().strip()]  # the writer is pushing: start racing it
    try:
        results = [
            store.update_branch("main", adding({f"ours/{i}.txt": b"x"}, f"ours {i}"))
            for i in range(10)
        ]
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    theirs += out.split()
    assert len(theirs) == 10
    # Both writers really raced (each lost some pushes) and each recovered.
    assert sum(r.attempts - 1 for r in results) + err.count("rejected") > 0

    tip = rev_parse(remote, "main")
    assert tip is not None
    for commit in theirs + [c for r in results for c in r.commits]:
        assert is_ancestor(remote, commit, tip), commit
    subjects = git("--git-dir", remote, "log", "--format=%s", "main").splitlines()
    for i in range(10):
        assert subjects.count(f"ours {i}") == 1
        assert subjects.count(f"writer {i}") == 1
    assert show_file(remote, "main", "writer.log") == "".join(f"writer {i}\n" for i in range(10))
    assert sorted(p for p in ls_tree(remote, "main") if p.startswith("ours/")) == [
        f"ours/{i}.txt" for i in range(10)
    ]
    # Every update the remote's main ever took was a fast-forward: nothing was forced.
    moves = git("--git-dir", remote, "reflog", "show", "--format=%H", "refs/heads/main").split()
    assert len(moves) >= 20
    for newer, older in itertools.pairwise(moves):
        assert is_ancestor(remote, older, newer), (older, newer)


def test_a_tick_of_many_versions_of_a_document_reaches_the_server_as_deltas(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    # The cache bounds libgit2's delta window (``PACK_WINDOW_BYTES``) to push faster: the
    # versions of one document still go as deltas against each other, not whole.
    store = open_store(env_remote, tmp_path)
    lines = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(128)]  # 8 KiB, no repeats
    versions = 100

    def plan(_tip: str | None) -> list[CommitSpec]:
        specs = []
        for v in range(versions):
            lines[v % len(lines)] = hashlib.sha256(b"version %d" % v).hexdigest()
            specs.append(CommitSpec(f"v{v}", {"state/doc.txt": "\n".join(lines).encode()}))
        return specs

    packs = remote_dir(env_remote, git_daemon) / "objects" / "pack"
    before = {p.name for p in packs.glob("*.pack")}
    result = store.update_branch("main", plan)
    assert len(result.commits) == versions
    received = [p for p in packs.glob("*.pack") if p.name not in before]
    assert len(received) == 1, "the server keeps the pushed pack as it came"
    whole = versions * len(zlib.compress("\n".join(lines).encode(), 1))
    # whole, it would be 489 KB; as deltas 50 KB, most of it the commits
    assert received[0].stat().st_size < whole / 4
    assert show_file(remote_dir(env_remote, git_daemon), "main", "state/doc.txt") == (
        "\n".join(lines)
    )


def _numbered(count: int) -> Plan:
    """A plan of ``count`` commits, each adding one file, whatever the tip."""
    specs = [CommitSpec(f"step {n}", {f"n/{n}.txt": f"{n}\n".encode()}) for n in range(count)]
    return lambda _tip: specs


def _log_updates(remote: Path, log: Path, *, refuse: str = "") -> None:
    """Have the server record each ref update it is asked for (refusing refs under ``refuse``)."""
    hook = remote / "hooks" / "update"
    refusal = f'case "$1" in {refuse}*) echo "private refs refused" >&2; exit 1;; esac\n'
    hook.write_text(f'#!/bin/sh\necho "$1 $3" >> {log}\n' + (refusal if refuse else ""))
    hook.chmod(0o755)


def _updates(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


def test_a_long_push_goes_ahead_in_steps_and_only_the_last_push_moves_the_branch(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    updates = tmp_path / "updates.log"
    _log_updates(remote, updates)
    store = open_store(env_remote, tmp_path, push_step=3)

    result = store.update_branch("main", _numbered(10))

    commits = result.commits
    private = {ref for ref, _new in _updates(updates) if ref != "refs/heads/main"}
    assert len(private) == 1
    (ahead,) = private
    assert ahead.startswith("refs/reconciler/incoming/")
    assert _updates(updates) == [
        (ahead, commits[2]),
        (ahead, commits[5]),
        (ahead, commits[8]),
        ("refs/heads/main", commits[9]),
        (ahead, "0" * 40),  # deleted once the branch moved
    ]
    assert git("log", "--format=%s", "-10", "main", cwd=remote).splitlines() == [
        f"step {n}" for n in reversed(range(10))
    ]
    assert git("for-each-ref", "refs/reconciler", cwd=remote) == ""
    assert git("for-each-ref", "refs/reconciler", cwd=tmp_path / "cache.git") == ""
    git("fsck", "--connectivity-only", cwd=remote)


class _Watched(Mapping[str, "bytes | None"]):
    """One commit's changes that note, when the store reads them, the server's ref updates."""

    def __init__(self, n: int, log: Path, seen: dict[int, int]) -> None:
        self._changes = {f"n/{n}.txt": f"{n}\n".encode()}
        self._n, self._log, self._seen = n, log, seen

    def __getitem__(self, path: str) -> bytes | None:
        return self._changes[path]

    def __iter__(self) -> Iterator[str]:
        updates = len(_updates(self._log)) if self._log.exists() else 0
        self._seen.setdefault(self._n, updates)
        return iter(self._changes)

    def __len__(self) -> int:
        return len(self._changes)


def test_a_long_pushs_steps_reach_the_server_while_its_later_commits_are_still_being_built(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    # libgit2 sends a step without Python's lock, so the next commits are built meanwhile:
    # a first tick of 10,000 transitions took 8.9 to 10.1 s instead of 11.1 to 12.0.
    remote = git_daemon.path(env_remote)
    updates = tmp_path / "updates.log"
    _log_updates(remote, updates)
    store = open_store(env_remote, tmp_path, push_step=3)
    seen: dict[int, int] = {}
    specs = [CommitSpec(f"step {n}", _Watched(n, updates, seen)) for n in range(10)]

    result = store.update_branch("main", lambda _tip: specs)

    commits = result.commits
    ahead = _updates(updates)[0][0]
    assert _updates(updates)[:2] == [(ahead, commits[2]), (ahead, commits[5])]
    # a step is sent once the one before it is in: by the 7th commit the first step was,
    # by the 10th the second, and the branch moved only after the last
    assert seen[2] == 0
    assert seen[6] >= 1
    assert seen[9] >= 2
    assert rev_parse(remote, "main") == result.tip
    assert git("for-each-ref", "refs/reconciler", cwd=remote) == ""


def test_a_step_cut_off_by_the_server_fails_the_push_and_the_next_one_lands_every_commit_once(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    before = rev_parse(remote, "main")
    assert before is not None
    hook = remote / "hooks" / "update"
    # the second private-ref update: the server process dies under it
    hook.write_text(
        "#!/bin/sh\n"
        'case "$1" in refs/reconciler/*)\n'
        f"  echo x >> {tmp_path / 'steps'}\n"
        f'  [ "$(wc -l < {tmp_path / "steps"})" -eq 2 ] && kill -9 $PPID;;\n'
        "esac\n"
        "exit 0\n"
    )
    hook.chmod(0o755)
    store = open_store(env_remote, tmp_path, push_step=3)

    with pytest.raises(GitTemporaryError):
        store.update_branch("main", _numbered(10))

    assert rev_parse(remote, "main") == before, "a failed step moved the branch"
    hook.unlink()
    store.fetch()
    result = store.update_branch("main", _numbered(10))
    assert result.attempts == 1
    assert git("log", "--format=%s", "-11", "main", cwd=remote).splitlines() == [
        *(f"step {n}" for n in reversed(range(10))),
        git("log", "--format=%s", "-1", before, cwd=remote),
    ]
    assert git("for-each-ref", "refs/reconciler", cwd=remote) == ""
    git("fsck", "--connectivity-only", cwd=remote)


def test_a_long_push_to_a_local_path_lands_whole_and_leaves_no_private_ref(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    store = open_store(str(remote), tmp_path, push_step=3)

    result = store.update_branch("main", _numbered(10))

    assert rev_parse(remote, "main") == result.tip
    assert len(git("rev-list", "main", cwd=remote).splitlines()) == 11
    assert git("for-each-ref", "refs/reconciler", cwd=remote) == ""
    git("fsck", "--connectivity-only", cwd=remote)


def test_a_server_that_refuses_the_private_ref_gets_single_pushes_from_then_on(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    updates = tmp_path / "updates.log"
    _log_updates(remote, updates, refuse="refs/reconciler/")
    store = open_store(env_remote, tmp_path, push_step=3)

    first = store.update_branch("main", _numbered(10))
    second = store.update_branch("main", _numbered(10))

    refs = [ref for ref, _new in _updates(updates)]
    assert refs[0].startswith("refs/reconciler/incoming/")  # tried once, refused
    assert refs[1:] == ["refs/heads/main", "refs/heads/main"]
    assert first.attempts == second.attempts == 1
    assert rev_parse(remote, "main") == second.tip
    assert len(git("rev-list", "main", cwd=remote).splitlines()) == 21


def test_a_stepped_push_that_loses_the_race_is_replanned_and_lands_each_commit_once(
    env_remote: str, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    remote = git_daemon.path(env_remote)
    store = open_store(env_remote, tmp_path, push_step=2)
    theirs = commit_files(remote, {"other.txt": "another writer\n"}, message="other")
    tips: list[str | None] = []

    def plan(tip: str | None) -> list[CommitSpec]:
        tips.append(tip)
        return list(_numbered(6)(tip))

    result = store.update_branch("main", plan)

    assert result.attempts == 2
    assert tips[1] == theirs
    assert is_ancestor(remote, theirs, "main")
    assert git("log", "--format=%s", "-7", "main", cwd=remote).splitlines() == [
        *(f"step {n}" for n in reversed(range(6))),
        "other",
    ]
    assert git("for-each-ref", "refs/reconciler", cwd=remote) == ""
