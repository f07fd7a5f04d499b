"""A person operates an experiment with commits: pause, resume, abort, promote, approve.

The commands go through the real CLI (``reconciler abort ...``) against a real bare
repository; the real loop answers them on its next tick; the assertions read what a person
would: the state branch's commits and trailers (``git log``), main's outcome, the cluster's
weights.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.audit_cmds import history
from reconciler.demo import scenario
from reconciler.engine.state import Phase, from_json
from reconciler.metrics.profile import Profile
from tests.integration.bookinfo import ALICE, KEY, BookinfoWorld


def experiment(approval: str = "") -> bytes:
    """The demo's canary, with ``spec.approval`` when given (YAML under ``spec:``)."""
    text = scenario.demo_file("experiment.yaml")
    if approval:
        text = text.replace(b"  gitops:\n", approval.encode() + b"  gitops:\n", 1)
    return text


def tick_until_awaiting_approval(world: BookinfoWorld, limit: int = 12) -> None:
    """Tick until the run waits at its gate (its last iteration decided a promotion)."""
    for _ in range(limit):
        world.tick()
        if world.phase() == Phase.AWAITING_APPROVAL.value:
            return
    pytest.fail(f"not awaiting approval after {limit} ticks: {world.phase()}")


def test_abort_rolls_back_at_once_and_the_answer_cites_the_persons_commit(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    for _ in range(3):
        world.tick()
    assert world.harness.weight_of("productpage-candidate") > 0
    code, out = world.command("abort", "--reason", "p99 looks bad on the dashboard")
    assert code == 0, out
    asked = world.git("log", "-1", "--format=%H %an <%ae>%n%B", "reconciler-state")
    command_commit = asked.split()[0]
    assert "Alice Example <alice@example.com>" in asked
    assert "Rollout-Command: abort" in asked
    assert world.pending()

    report = world.tick()
    assert world.harness.weight_of("productpage-candidate") == 0
    assert world.outcomes_on_main() == ["rolled-back"]
    assert world.pending() == []
    answered = [t for t, _ in report.recorded if t.commands]
    assert len(answered) == 1
    answer = world.git("log", "--format=%B", "--grep=aborted by", "reconciler-state")
    assert f"Rollout-Command-Commit: {command_commit}" in answer
    assert "Rollout-Command-Result: done" in answer
    assert "p99 looks bad on the dashboard" in answer
    rolled = world.git("log", "-1", "--format=%B", "main")
    assert "aborted by Alice Example <alice@example.com>" in rolled


def test_pause_freezes_iterations_but_not_the_cluster_convergence(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    world.tick()
    before = world.state()
    assert world.command("pause", "--reason", "incident INC-42")[0] == 0
    world.tick()
    assert world.state()["paused"] is not None
    frozen = world.state()
    for _ in range(5):
        world.tick(advance=5)
    after = world.state()
    assert after["iteration"] == frozen["iteration"] >= before["iteration"]  # type: ignore[operator]
    assert after["weights"] == frozen["weights"]
    # Someone edits the weights with kubectl while it is paused: the record still wins.
    candidate = world.harness.refs["productpage-candidate"]
    stable = world.harness.refs["productpage-stable"]
    world.harness.cluster.set_weights([(stable, 0), (candidate, 100)])
    world.tick()
    weights = after["weights"]
    assert isinstance(weights, dict)
    assert world.harness.weight_of("productpage-candidate") == weights["productpage-candidate"]
    code, out = world.command("pause")
    assert code == 1
    assert "already paused by Alice Example" in out
    assert world.command("resume")[0] == 0
    world.tick()
    assert world.state()["paused"] is None
    world.tick(advance=2)
    assert world.state()["iteration"] == frozen["iteration"] + 1  # type: ignore[operator]


def test_promote_refuses_a_failing_candidate_unless_forced(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path, candidate=Profile(error_rate=0.2))
    world.tick()
    world.tick()  # iteration 1: the candidate fails its error-rate objective
    assert world.command("promote")[0] == 0
    world.tick()
    records = world.state()["commands"]
    assert isinstance(records, list)
    assert records[-1]["result"] == "refused"
    assert "no candidate met its objectives" in records[-1]["why"]
    assert world.outcomes_on_main() == []
    assert world.command("promote", "--force", "--reason", "hotfix must ship")[0] == 0
    world.tick()
    assert world.outcomes_on_main() == ["promoted"]
    promoted = world.git("log", "-1", "--format=%B", "main")
    assert "forced by Alice Example" in promoted
    assert "hotfix must ship" in promoted


def test_promote_ends_a_passing_run_early(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    world.tick()
    assert world.command("promote")[0] == 0
    world.tick()
    assert world.outcomes_on_main() == ["promoted"]
    archived = world.git("log", "-3", "--format=%s", "reconciler-state")
    assert "promoted by Alice Example" in archived


def test_a_promotion_waits_at_its_gate_until_approved(tmp_path: Path) -> None:
    gate = "  approval:\n    before: [promotion]\n    timeoutSeconds: 600\n"
    world = BookinfoWorld(tmp_path, file=experiment(gate))
    tick_until_awaiting_approval(world)
    held = world.harness.weight_of("productpage-candidate")
    for _ in range(5):
        world.tick(advance=10)
    assert world.phase() == Phase.AWAITING_APPROVAL.value
    assert world.harness.weight_of("productpage-candidate") == held
    assert world.outcomes_on_main() == []
    code, out = world.command("promote")
    assert code == 1
    assert "use approve" in out
    assert world.command("approve", "--reason", "release manager OK")[0] == 0
    world.tick()
    assert world.outcomes_on_main() == ["promoted"]


def test_an_unanswered_gate_rolls_back_after_its_timeout(tmp_path: Path) -> None:
    gate = "  approval:\n    before: [promotion]\n    timeoutSeconds: 30\n"
    world = BookinfoWorld(tmp_path, file=experiment(gate))
    tick_until_awaiting_approval(world)
    world.tick(advance=31)
    assert world.outcomes_on_main() == ["rolled-back"]
    assert world.harness.weight_of("productpage-candidate") == 0


def test_a_start_gate_keeps_the_candidate_at_zero_until_approved(tmp_path: Path) -> None:
    gate = "  approval:\n    before: [start]\n"
    world = BookinfoWorld(tmp_path, file=experiment(gate))
    world.tick()
    assert world.phase() == Phase.AWAITING_APPROVAL.value
    for _ in range(3):
        world.tick(advance=5)
    assert world.harness.weight_of("productpage-candidate") == 0
    assert world.state()["iteration"] == 0
    assert world.command("approve")[0] == 0
    world.tick()
    assert world.phase() == Phase.PROGRESSING.value
    assert world.harness.weight_of("productpage-candidate") == 20  # maxCandidateWeightIncrement


def test_commands_that_cannot_apply_are_refused_by_the_cli(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    code, out = world.command("abort")
    assert code == 1
    assert "has no branch 'reconciler-state'" in out  # nothing started yet
    world.tick()
    for verb, why in (("resume", "not paused"), ("approve", "does not wait for an approval")):
        code, out = world.command(verb)
        assert code == 1
        assert why in out
    code, out = world.command("abort", "--id", f"{KEY}@000000000000")
    assert code == 1
    assert "the live run of" in out
    assert world.pending() == []


def test_a_hand_written_command_for_another_run_is_ignored_and_said_so(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    world.tick()
    store = world.harness.store
    store.fetch()
    from reconciler.engine.control import command_file  # noqa: PLC0415
    from reconciler.ports import CommitSpec  # noqa: PLC0415
    from reconciler.testing import constant  # noqa: PLC0415

    other = command_file("abort", f"{KEY}@0123456789ab")
    garbage = b"\x00not json"
    store.update_branch(
        store.state_branch,
        constant(
            [
                CommitSpec(
                    "by hand",
                    {
                        f"commands/{KEY}/1-abort.json": other,
                        f"commands/{KEY}/2-x.json": garbage,
                        "commands/stray.json": b"{}",
                    },
                    author=("Mallory", "mallory@example.com"),
                )
            ]
        ),
    )
    iteration = world.state()["iteration"]
    world.tick()
    assert world.pending() == []
    assert world.outcomes_on_main() == []
    assert world.phase() == Phase.PROGRESSING.value
    assert world.state()["iteration"] == iteration + 1  # type: ignore[operator]
    ignored = world.git("log", "--format=%B", "--grep=commands: ignored", "reconciler-state")
    assert "it is for run bookinfo/productpage-canary@0123456789ab" in ignored
    assert "not JSON" in ignored
    assert "Mallory <mallory@example.com>" in ignored


def test_a_command_acts_once_across_restarts(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    world.tick()
    assert world.command("pause")[0] == 0
    world.harness.restart()  # a new process finds the command in Git
    world.tick()
    world.harness.restart()
    world.tick()
    world.tick()
    log = world.git("log", "--format=%(trailers:key=Rollout-Command-Result,valueonly)",
                    "reconciler-state")  # fmt: skip
    assert [line for line in log.splitlines() if line] == ["done"]
    doc = from_json(world.git("show", f"reconciler-state:experiments/{KEY}.json").encode())
    assert doc.paused is not None
    assert doc.paused.author == ALICE


@pytest.mark.parametrize("verb", ["pause", "abort"])
def test_the_command_commit_is_by_the_person_and_the_answer_by_the_reconciler(
    tmp_path: Path, verb: str
) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    assert world.command(verb)[0] == 0
    world.tick()
    lines = world.git(
        "log", "--format=%an|%cn|%(trailers:key=Rollout-Command-Result,valueonly,separator=)",
        "reconciler-state",
    ).splitlines()  # fmt: skip
    asked = [line for line in lines if line.startswith("Alice")]
    answered = [line for line in lines if line.endswith("|done")]
    assert len(asked) == 1
    assert asked[0].startswith("Alice Example|Alice Example|")
    assert len(answered) == 1
    assert not answered[0].startswith("Alice")


# -- signed approvals -----------------------------------------------------------------


def keypair(directory: Path, name: str) -> tuple[Path, str]:
    """A new ed25519 key (no passphrase): its private key file and its public key line."""
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key, key.with_suffix(".pub").read_text().strip()


def git_approve(world: BookinfoWorld, key: Path, workdir: Path) -> str:
    """An approval made with plain git, signed by ``git commit -S`` (gpg.format=ssh)."""
    from reconciler.engine.control import command_file  # noqa: PLC0415

    run_id = str(world.state()["id"])
    env_git = ["git", "-C", str(workdir)]
    subprocess.run(
        ["git", "clone", "-q", "-b", "reconciler-state", world.harness.remote, str(workdir)],
        check=True,
    )
    target = workdir / "commands" / KEY / "20261206T000000-approve-by-git.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(command_file("approve", run_id, reason="signed with git"))
    subprocess.run([*env_git, "add", "-A"], check=True)
    subprocess.run(
        [
            *env_git, "-c", "user.name=Alice Example", "-c", "user.email=alice@example.com",
            "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}",
            "commit", "-q", "-S", "-m", "productpage: approve",
            "-m", f"Rollout-Command: approve\nRollout-Id: {run_id}",
        ],
        check=True,
    )  # fmt: skip
    subprocess.run([*env_git, "push", "-q", "origin", "reconciler-state"], check=True)
    return subprocess.run(
        [*env_git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_signed_gate_counts_only_approvals_signed_by_an_allowed_key(tmp_path: Path) -> None:
    from reconciler.gitstore.signatures import AllowedSigners  # noqa: PLC0415

    alice_key, alice_pub = keypair(tmp_path, "alice")
    mallory_key, _ = keypair(tmp_path, "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'alice@example.com namespaces="git" {alice_pub}\n')
    gate = "  approval:\n    before: [start]\n    requireSigned: true\n"
    world = BookinfoWorld(tmp_path / "world", file=experiment(gate))
    world.harness.restart(verifier=AllowedSigners(allowed))
    world.tick()
    assert world.phase() == Phase.AWAITING_APPROVAL.value

    assert world.command("approve")[0] == 0  # unsigned
    world.tick()
    assert world.command("approve", "--sign-key", str(mallory_key))[0] == 0  # not allowed
    world.tick()
    assert world.phase() == Phase.AWAITING_APPROVAL.value
    assert world.harness.weight_of("productpage-candidate") == 0
    records = world.state()["commands"]
    assert isinstance(records, list)
    assert [(r["result"], r["signer"]) for r in records] == [("refused", None)] * 2
    assert "(unsigned)" in records[0]["why"]
    assert "(unknown key)" in records[1]["why"]

    commit = git_approve(world, alice_key, tmp_path / "clone")
    world.tick()
    assert world.phase() == Phase.PROGRESSING.value
    assert world.harness.weight_of("productpage-candidate") == 20
    last = world.state()["commands"]
    assert isinstance(last, list)
    assert last[-1]["commit"] == commit
    assert last[-1]["signer"] == "alice@example.com"
    assert last[-1]["result"] == "done"
    # git itself agrees the approval is signed by an allowed key.
    verified = subprocess.run(
        ["git", "--git-dir", world.harness.remote, "-c", f"gpg.ssh.allowedSignersFile={allowed}",
         "verify-commit", commit],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr


def test_the_cli_signs_as_git_does(tmp_path: Path) -> None:
    from reconciler.gitstore.signatures import AllowedSigners  # noqa: PLC0415

    key, public = keypair(tmp_path, "alice")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'alice@example.com namespaces="git" {public}\n')
    gate = "  approval:\n    before: [promotion]\n    requireSigned: true\n"
    world = BookinfoWorld(tmp_path / "world", file=experiment(gate))
    world.harness.restart(verifier=AllowedSigners(allowed))
    tick_until_awaiting_approval(world)
    assert world.command("approve", "--sign-key", str(key))[0] == 0
    asked = world.git("log", "-1", "--format=%H", "reconciler-state").strip()
    verified = subprocess.run(
        ["git", "--git-dir", world.harness.remote, "-c", f"gpg.ssh.allowedSignersFile={allowed}",
         "verify-commit", asked],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    world.tick()
    assert world.outcomes_on_main() == ["promoted"]


def test_history_lists_what_was_asked_and_by_whom_beside_the_answers(tmp_path: Path) -> None:
    world = BookinfoWorld(tmp_path)
    world.tick()
    world.tick()
    assert world.command("pause", "--reason", "look at the dashboards")[0] == 0
    world.tick()
    result = CliRunner().invoke(history, [KEY, "--repo", world.harness.remote, "-o", "json"])
    printed = result.stdout  # the JSON follows any log lines the test's logging printed
    rows = json.loads(printed[printed.index("[\n") :])
    asked = [r for r in rows if r["phase"].startswith("asked:")]
    assert [r["phase"] for r in asked] == ["asked: pause"]
    assert "pause asked by Alice Example" in asked[0]["summary"]
    assert asked[0]["weights"] == {}
    assert asked[0]["metrics"] == {}
    answered = rows[rows.index(asked[0]) + 1]
    assert answered["phase"] == "Progressing"
    assert "paused by Alice Example" in answered["summary"]
