"""Who wrote each commit of a real Env repo: the replica, its Lease term, and the fence."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.controller.actor import ACTOR, LEASE_TERM, Actor, StampedStore, parse_term
from reconciler.controller.isolation import LeadershipLostError
from reconciler.gitstore import GitEnvStore
from reconciler.ports import DEFAULT_STATE_BRANCH, CommitInfo, CommitSpec, Plan
from tests.gitutil import commit_files, git, make_bare_repo, rev_parse

pytestmark = pytest.mark.integration

AUTHOR = ("gitops-reconciler", "reconciler@example.test")
STATE = DEFAULT_STATE_BRANCH
Term = tuple[str, int] | None

_caches = itertools.count()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare Env repo on the local disk whose main has one commit."""
    path = tmp_path / "env.git"
    make_bare_repo(path, {"README.md": "Env repo\n"})
    return path


def replica(
    remote: Path, tmp_path: Path, identity: str = "replica-0", term: Term = ("lease-uid", 1)
) -> StampedStore:
    """A replica's store, fetched now, acting under ``term`` (None: no term callable)."""
    store = GitEnvStore.open(
        str(remote),
        tmp_path / f"cache-{next(_caches)}.git",
        author=AUTHOR,
        sleep=lambda _seconds: None,
    )
    store.fetch()
    return StampedStore(store, Actor(identity, (lambda: term) if term is not None else None))


def writing(path: str, message: str = "record", calls: list[str | None] | None = None) -> Plan:
    """A plan of one reconciler commit changing ``path`` (``calls`` records the tips given)."""

    def plan(tip: str | None) -> list[CommitSpec]:
        if calls is not None:
            calls.append(tip)
        return [CommitSpec(message=message, changes={path: f"{message}\n".encode()})]

    return plan


def tip_commit(store: StampedStore, branch: str, remote: Path) -> CommitInfo:
    tip = rev_parse(remote, branch)
    assert tip is not None
    store.fetch()
    return next(iter(store.log(tip)))


def test_a_commit_names_the_replica_and_its_lease_term(remote: Path, tmp_path: Path) -> None:
    store = replica(remote, tmp_path, "reconciler-7d9f-abcde", ("0f1e-uid", 3))
    result = store.update_branch(STATE, writing("state/a.json"))
    assert result.commits
    info = tip_commit(store, STATE, remote)
    assert info.id == result.tip
    assert info.trailer(ACTOR) == "reconciler-7d9f-abcde"
    assert info.trailer(LEASE_TERM) == "0f1e-uid/3"
    # git itself reads them back, as `git log` shows them to a person auditing the repo
    trailers = git("log", "-1", "--format=%(trailers:only,unfold)", STATE, cwd=remote)
    assert "Rollout-Actor: reconciler-7d9f-abcde" in trailers
    assert "Rollout-Lease-Term: 0f1e-uid/3" in trailers


def test_main_commits_are_stamped_too(remote: Path, tmp_path: Path) -> None:
    store = replica(remote, tmp_path, "replica-1", ("uid", 2))
    store.update_branch("main", writing("apps/a.yaml", "promote a"))
    info = tip_commit(store, "main", remote)
    assert info.subject == "promote a"
    assert (info.trailer(ACTOR), info.trailer(LEASE_TERM)) == ("replica-1", "uid/2")


def test_without_leader_election_a_commit_names_the_replica_and_no_term(
    remote: Path, tmp_path: Path
) -> None:
    store = replica(remote, tmp_path, "single", term=None)
    store.update_branch(STATE, writing("state/a.json"))
    info = tip_commit(store, STATE, remote)
    assert info.trailer(ACTOR) == "single"
    assert info.trailer(LEASE_TERM) is None


def test_a_persons_commit_is_not_stamped(remote: Path, tmp_path: Path) -> None:
    store = replica(remote, tmp_path, "replica-0", ("uid", 1))

    def plan(_tip: str | None) -> list[CommitSpec]:
        return [
            CommitSpec(message="record the command", changes={"state/a.json": b"1\n"}),
            CommitSpec(
                message="pause checkout\n\nSigned-off-by: Alice <alice@example.test>",
                changes={"commands/pause.yaml": b"pause\n"},
                author=("Alice", "alice@example.test"),
            ),
        ]

    result = store.update_branch("main", plan)
    assert len(result.commits) == 2
    person, ours = list(itertools.islice(store.log(tip_commit(store, "main", remote).id), 2))
    assert person.author == "Alice <alice@example.test>"
    assert person.message.rstrip("\n") == (
        "pause checkout\n\nSigned-off-by: Alice <alice@example.test>"
    )
    assert (person.trailer(ACTOR), person.trailer(LEASE_TERM)) == (None, None)
    assert (ours.trailer(ACTOR), ours.trailer(LEASE_TERM)) == ("replica-0", "uid/1")


def test_a_replica_that_lost_its_lease_writes_nothing(remote: Path, tmp_path: Path) -> None:
    holder: list[tuple[str, int] | None] = [("uid", 1)]
    store = GitEnvStore.open(str(remote), tmp_path / "cache.git", author=AUTHOR)
    store.fetch()
    stamped = StampedStore(store, Actor("replica-0", lambda: holder[0]))
    stamped.update_branch(STATE, writing("state/a.json"))
    before = {branch: rev_parse(remote, branch) for branch in ("main", STATE)}
    holder[0] = None  # the Lease was not renewed
    for branch in ("main", STATE):
        with pytest.raises(LeadershipLostError, match="no longer holds the Env repo's Lease"):
            stamped.update_branch(branch, writing("state/b.json"))
    assert {branch: rev_parse(remote, branch) for branch in ("main", STATE)} == before


@pytest.mark.parametrize("fresh", [True, False], ids=["fetching-first", "losing-the-push"])
def test_an_older_term_of_the_same_lease_may_not_follow_a_newer_one(
    remote: Path, tmp_path: Path, fresh: bool
) -> None:
    replica(remote, tmp_path, "old", ("uid", 4)).update_branch(STATE, writing("state/a.json"))
    stale = replica(remote, tmp_path, "old", ("uid", 4))  # paused while its Lease is taken over
    replica(remote, tmp_path, "new", ("uid", 5)).update_branch(STATE, writing("state/a.json", "b"))
    newer = rev_parse(remote, STATE)
    tips: list[str | None] = []
    with pytest.raises(LeadershipLostError, match=r"term 5, newer than ours \(4\)"):
        stale.update_branch(STATE, writing("state/a.json", "stale", tips), fresh=fresh)
    assert newer not in tips  # never planned on top of the newer term's write
    assert rev_parse(remote, STATE) == newer
    info = tip_commit(stale, STATE, remote)
    assert (info.trailer(ACTOR), info.trailer(LEASE_TERM)) == ("new", "uid/5")


def test_a_persons_command_after_the_newer_term_does_not_let_the_older_one_write(
    remote: Path, tmp_path: Path
) -> None:
    replica(remote, tmp_path, "new", ("uid", 5)).update_branch(STATE, writing("state/a.json"))
    # a person pauses the run: a commit of theirs, with no term, on top of the newer holder's
    command = commit_files(remote, {"commands/pause": "x\n"}, message="pause", branch=STATE)
    stale = replica(remote, tmp_path, "old", ("uid", 4))
    with pytest.raises(LeadershipLostError, match=r"term 5, newer than ours \(4\)"):
        stale.update_branch(STATE, writing("state/a.json", "stale"), fresh=True)
    assert rev_parse(remote, STATE) == command


@pytest.mark.parametrize(
    "term",
    [("uid", 5), ("uid", 6), ("recreated-uid", 0), ("recreated-uid", 1)],
    ids=["same-term", "newer-term", "new-lease-from-0", "new-lease"],
)
def test_the_same_newer_or_a_recreated_leases_term_may_write(
    remote: Path, tmp_path: Path, term: tuple[str, int]
) -> None:
    replica(remote, tmp_path, "first", ("uid", 5)).update_branch(STATE, writing("state/a.json"))
    result = replica(remote, tmp_path, "second", term).update_branch(
        STATE, writing("state/a.json", "next"), fresh=True
    )
    assert rev_parse(remote, STATE) == result.tip
    assert tip_commit(replica(remote, tmp_path), STATE, remote).trailer(LEASE_TERM) == (
        f"{term[0]}/{term[1]}"
    )


def test_main_is_not_fenced_by_terms(remote: Path, tmp_path: Path) -> None:
    replica(remote, tmp_path, "new", ("uid", 5)).update_branch("main", writing("apps/a.yaml"))
    older = replica(remote, tmp_path, "old", ("uid", 4))
    result = older.update_branch("main", writing("apps/a.yaml", "older"))
    assert rev_parse(remote, "main") == result.tip
    assert tip_commit(older, "main", remote).trailer(LEASE_TERM) == "uid/4"


@pytest.mark.parametrize(
    "trailer",
    ["", "\n\nRollout-Lease-Term: not-a-term", "\n\nRollout-Lease-Term: uid/\u00b2"],
    ids=["no-trailer", "garbage", "superscript-digit"],
)
def test_a_state_tip_written_by_hand_does_not_stop_the_lease_holder(
    remote: Path, tmp_path: Path, trailer: str
) -> None:
    replica(remote, tmp_path, "first", ("uid", 5)).update_branch(STATE, writing("state/a.json"))
    by_hand = commit_files(
        remote, {"state/note": "x\n"}, message=f"a hand edit{trailer}", branch=STATE
    )
    result = replica(remote, tmp_path, "second", ("uid", 6)).update_branch(
        STATE, writing("state/a.json", "next"), fresh=True
    )
    assert rev_parse(remote, STATE) == result.tip != by_hand


def test_a_term_is_read_back_as_it_was_written() -> None:
    assert parse_term("0f1e-uid/3") == ("0f1e-uid", 3)
    assert parse_term("ns/name/12") == ("ns/name", 12)  # the last slash separates the number
    for garbage in (
        None,
        "",
        "uid",
        "uid/",
        "uid/-1",
        "uid/3 ",
        "uid/x",
        "uid/\u00b2",
        "uid/\u0663",
    ):
        assert parse_term(garbage) is None


@given(st.one_of(st.none(), st.text(), st.builds("{}/{}".format, st.text(), st.text())))
def test_parsing_a_term_never_raises(value: str | None) -> None:
    term = parse_term(value)
    if term is not None:
        assert value is not None
        uid, number = term
        assert value == f"{uid}/{value.rpartition('/')[2]}"
        assert number >= 0


@given(st.text(), st.integers(min_value=0, max_value=2**63))
def test_a_written_term_is_parsed_back(uid: str, number: int) -> None:
    assert parse_term(f"{uid}/{number}") == (uid, number)


def test_an_actor_without_a_term_callable_never_asks_for_one() -> None:
    assert Actor("single").trailers() == [(ACTOR, "single")]
    calls: list[int] = []

    def term() -> tuple[str, int] | None:
        calls.append(1)
        return ("uid", 7)

    leader = Actor("leader", term)
    assert leader.trailers() == [(ACTOR, "leader"), (LEASE_TERM, "uid/7")]
    leader.trailers()
    assert calls == [1, 1]  # read at each write, never cached
