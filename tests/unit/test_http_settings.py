"""The HTTP server's two settings: their defaults, their three spellings, their checks."""

from pathlib import Path

import pytest

from reconciler.config import ConfigError, build


def test_defaults_bound_each_request_to_ten_seconds_and_32_connections() -> None:
    settings = build(flags={"repo": "/env"}, environ={})
    assert (settings.server.read_timeout, settings.server.max_connections) == (10.0, 32)


def test_the_file_environment_and_flags_set_them(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("repo: /env\nhttp:\n  readTimeout: 2.5\n  maxConnections: 8\n")
    assert build(flags={}, environ={}, file=file).server.max_connections == 8
    assert build(flags={}, environ={}, file=file).server.read_timeout == 2.5
    environ = {"RECONCILER_HTTP_READ_TIMEOUT": "4", "RECONCILER_HTTP_MAX_CONNECTIONS": "16"}
    from_env = build(flags={}, environ=environ, file=file)
    assert (from_env.server.read_timeout, from_env.server.max_connections) == (4.0, 16)
    from_flag = build(flags={"http_max_connections": "2"}, environ=environ, file=file)
    assert from_flag.server.max_connections == 2


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("http_read_timeout", "0", "http_read_timeout must be above 0 seconds"),
        ("http_max_connections", "0", "http_max_connections must be at least 1"),
        ("http_max_connections", "many", "http_max_connections"),
    ],
)
def test_a_limit_that_would_refuse_every_request_is_refused(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(flags={"repo": "/env", name: value}, environ={})
