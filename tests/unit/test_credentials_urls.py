from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.gitstore.credentials import Credentials, redact_url, scrub, url_scheme


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


def test_credentials_repr_shows_paths_never_secrets(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("do-not-show")
    assert "do-not-show" not in repr(Credentials(token_file=token))


def test_public_key_or_passphrase_without_private_key_is_refused() -> None:
    with pytest.raises(ValueError, match="need ssh_key_file"):
        Credentials(ssh_public_key_file=Path("k.pub"))
