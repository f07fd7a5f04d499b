from __future__ import annotations

import pytest

from reconciler.gitstore.known_hosts import lookup_name, select

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIPortTwentyTwoKeyXXXXXXXXXXXXXXXXXXXXXXXXXX"
ED_2222 = "AAAAC3NzaC1lZDI1NTE5AAAAIPort2222KeyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQRsaKeyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
# `ssh-keygen -H` of "git.example.com ssh-ed25519 ED" and "[git.example.com]:2222 ...".
HASHED = (
    f"|1|bkRLOMHjVXnYQeYxvNl4HNYtLvw=|vYIccqZyblAEK2QMMfITkkZ6490= ssh-ed25519 {ED}\n"
    f"|1|MoIxRGqZEqqP4rx6r8ieMyhZPZg=|AaYwrxtqow6UFapVRZnFYdjqKrs= ssh-ed25519 {ED_2222}\n"
)


def keys(text: str, host: str = "git.example.com", port: int = 22) -> list[str]:
    return [key for _, key in select(text, host, port).keys]


def test_the_lookup_name_is_the_plain_host_for_port_22_and_bracketed_otherwise() -> None:
    assert lookup_name("git.example.com", 22) == "git.example.com"
    assert lookup_name("git.example.com", 2222) == "[git.example.com]:2222"
    assert lookup_name("::1", 2222) == "[::1]:2222"


def test_a_plain_host_entry_vouches_for_port_22_only() -> None:
    text = f"git.example.com ssh-ed25519 {ED}\n"
    assert keys(text) == [ED]
    assert keys(text, port=2222) == []


def test_a_bracketed_entry_vouches_for_its_port_only() -> None:
    text = f"[git.example.com]:2222 ssh-ed25519 {ED_2222}\n"
    assert keys(text, port=2222) == [ED_2222]
    assert keys(text, port=2223) == []
    assert keys(text) == []


def test_hashed_entries_match_by_hmac_of_the_name_and_port() -> None:
    assert keys(HASHED) == [ED]
    assert keys(HASHED, port=2222) == [ED_2222]
    assert keys(HASHED, host="other.example.com") == []


def test_patterns_wildcards_negation_and_case_follow_openssh() -> None:
    text = (
        f"*.example.com,!evil.example.com ssh-ed25519 {ED}\n"
        f"[*.example.com]:2222 ssh-ed25519 {ED_2222}\n"
        f"git.example.co? ssh-rsa {RSA}\n"
    )
    assert keys(text, host="GIT.Example.com") == [ED, RSA]
    assert keys(text, host="evil.example.com") == []
    assert keys(text, host="git.example.com", port=2222) == [ED_2222]
    assert keys(text, host="[git.example.com]") == []  # brackets are literal, not a class


def test_the_selection_is_written_under_the_one_name_libssh2_looks_up_first() -> None:
    selected = select(f"*.example.com ssh-ed25519 {ED}\n{HASHED}", "Git.example.com", 22)
    assert selected.render() == f"Git.example.com ssh-ed25519 {ED}\n"
    selected = select(HASHED, "git.example.com", 2222)
    assert selected.render() == f"[git.example.com]:2222 ssh-ed25519 {ED_2222}\n"


def test_a_revoked_key_is_removed_even_when_listed_for_the_host() -> None:
    text = (
        f"git.example.com ssh-ed25519 {ED}\n"
        f"git.example.com ssh-rsa {RSA}\n"
        f"@revoked * ssh-ed25519 {ED}\n"
    )
    selected = select(text, "git.example.com", 22)
    assert [key for _, key in selected.keys] == [RSA]
    assert selected.revoked == ("ssh-ed25519",)


def test_a_revocation_for_other_hosts_does_not_apply() -> None:
    text = f"git.example.com ssh-ed25519 {ED}\n@revoked other.example.com ssh-ed25519 {ED}\n"
    assert keys(text) == [ED]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"@cert-authority *.example.com ssh-ed25519 {ED}", "host certificates"),
        ("git.example.com sk-ssh-ed25519@openssh.com AAAA", "cannot check"),
        ("git.example.com ssh-ed25519-cert-v01@openssh.com AAAA", "cannot check"),
    ],
)
def test_lines_libgit2_cannot_use_are_dropped_and_said_why(line: str, why: str) -> None:
    selected = select(f"{line}\n", "git.example.com", 22)
    assert selected.keys == ()
    assert why in selected.dropped[0]


@pytest.mark.parametrize(
    "line",
    [
        "# git.example.com ssh-ed25519 AAAA",
        "",
        "git.example.com ssh-ed25519",
        "@unknown-marker git.example.com ssh-ed25519 AAAA",
        "git.example.com 2048 65537 1234567",  # an SSH protocol 1 line
        "|1|not-base64|also-not ssh-ed25519 AAAA",
    ],
)
def test_comments_and_malformed_lines_vouch_for_nothing(line: str) -> None:
    assert select(f"{line}\n", "git.example.com", 22).keys == ()


def test_the_key_types_are_listed_once_in_file_order() -> None:
    text = f"git.example.com ssh-rsa {RSA}\ngit.example.com ssh-ed25519 {ED}\n"
    text += f"git.example.com ssh-rsa {RSA[:-1]}Y\n"
    assert select(text, "git.example.com", 22).key_types == ("ssh-rsa", "ssh-ed25519")
