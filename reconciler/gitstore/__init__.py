"""The Env repo through pygit2: fetch, read, commit without a working tree, CAS push.

This package is the only place pygit2 is imported. ``GitEnvStore`` implements
``reconciler.ports.EnvStore``; ``trailers`` and ``state_branch`` hold the pure message and
layout helpers the controller uses to write and read the state branch.
"""

from reconciler.gitstore.credentials import Credentials, redact_url
from reconciler.gitstore.repo import GitEnvStore
from reconciler.gitstore.state_branch import (
    ARCHIVE_DIR,
    LIVE_DIR,
    README_PATH,
    README_TEXT,
    archive_path,
    check_name,
    live_path,
    load_live,
    parse_live_path,
    with_readme,
)
from reconciler.gitstore.trailers import (
    decode_mapping,
    encode_mapping,
    format_message,
    parse_trailers,
)

__all__ = [
    "ARCHIVE_DIR",
    "LIVE_DIR",
    "README_PATH",
    "README_TEXT",
    "Credentials",
    "GitEnvStore",
    "archive_path",
    "check_name",
    "decode_mapping",
    "encode_mapping",
    "format_message",
    "live_path",
    "load_live",
    "parse_live_path",
    "parse_trailers",
    "redact_url",
    "with_readme",
]
