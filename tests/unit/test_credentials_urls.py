from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.gitstore.credentials import (
    Credentials,
    Login,
    redact_url,
    scrub,
    setting,
    split_login,
    ssh_address,
    url_scheme,
)


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("https://github.com/org/env.git", "https"),
        ("HTTP://host/env.git", "http"),
        ("ssh://git@host:2222/org/env.git", "ssh"),
        ("git+ssh://host/env.git", "ssh"),
        ("git@github.com:org/env.git", "ssh"),
        ("host:env.git", "ssh"),
        ("git://127.0.0.1:9418/env.git", "git"),
        ("file:///srv/env.git", "file"),
        ("/srv/env.git", "file"),
        ("relative/env.git", "file"),
        ("./with:colon/env.git", "file"),
    ],
)
def test_url_scheme_follows_git_rules(url: str, scheme: str) -> None:
    assert url_scheme(url) == scheme


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:tok@host:8443/env.git?x=secret#f", "https://host:8443/env.git"),
        ("https://tok@host/env.git", "https://host/env.git"),
        ("git@github.com:org/env.git", "github.com:org/env.git"),
        ("/srv/env.git", "/srv/env.git"),
    ],
)
def test_redacted_urls_hold_no_userinfo(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_userinfo_from_library_messages() -> None:
    url = "https://user:hunter2@host/env.git"
    text = scrub(f"failed to connect to {url}: refused (user:hunter2)", url)
    assert "hunter2" not in text
    assert "https://host/env.git" in text


def test_scrub_keeps_an_ssh_login_name_readable() -> None:
    url = "ssh://git@host/env.git"
    assert (
        scrub(f"{url}: git-upload-pack failed", url) == "ssh://host/env.git: git-upload-pack failed"
    )


def test_scrub_removes_an_ssh_password_but_keeps_the_login_name() -> None:
    url = "ssh://git:hunter2@host/env.git"
    assert scrub("ssh://git@host/env.git: refused (hunter2)", url) == (
        "ssh://git@host/env.git: refused (***)"
    )


def test_credentials_repr_shows_paths_never_secrets(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("do-not-show")
    assert "do-not-show" not in repr(Credentials(token_file=token))


def test_public_key_or_passphrase_without_private_key_is_refused() -> None:
    with pytest.raises(ValueError, match="need ssh_key_file"):
        Credentials(ssh_public_key_file=Path("k.pub"))


@pytest.mark.parametrize(
    ("url", "stored", "login"),
    [
        ("https://u:t0k@host:8443/env.git", "https://host:8443/env.git", Login("u", "t0k")),
        ("https://t0k@host/env.git", "https://host/env.git", Login("t0k", None)),
        ("https://u:p%40ss@host/env.git", "https://host/env.git", Login("u", "p@ss")),
        ("https://host/env.git", "https://host/env.git", None),
        ("ssh://git@host:2222/env.git", "ssh://git@host:2222/env.git", None),
        ("ssh://git:pw@host/env.git", "ssh://git@host/env.git", Login("git", "pw")),
        ("git@host:org/env.git", "git@host:org/env.git", None),
        ("/srv/env.git", "/srv/env.git", None),
    ],
)
def test_split_login_keeps_secrets_of_the_userinfo_out_of_the_stored_url(
    url: str, stored: str, login: Login | None
) -> None:
    assert split_login(url) == (stored, login)


def test_a_login_never_shows_its_password() -> None:
    assert "t0k" not in repr(Login("u", "t0k"))


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("ssh://git@host:2222/env.git", ("host", 2222)),
        ("ssh://Host.Example/env.git", ("Host.Example", 22)),
        ("ssh://git@[::1]:2222/env.git", ("::1", 2222)),
        ("git@github.com:org/env.git", ("github.com", 22)),
        ("host:env.git", ("host", 22)),
    ],
)
def test_ssh_address_is_the_host_as_written_and_the_port(
    url: str, address: tuple[str, int]
) -> None:
    assert ssh_address(url) == address


def test_messages_name_settings_by_flag_and_config_key() -> None:
    assert setting("ca_file") == "--ca-file / credentials.caFile"
    assert setting("ssh_known_hosts_file") == "--known-hosts-file / credentials.knownHostsFile"
    assert setting("token_file") == "--token-file / credentials.tokenFile"
