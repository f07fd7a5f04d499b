"""Which repository a Git URL names, however it is spelled (config duplicates, webhooks)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!/).*)$")
"""``git@host:org/repo.git``: git's scp-like SSH syntax (no scheme, a colon before the path)."""


def repo_key(url: str) -> str:
    """``host/path`` of a Git URL, whatever its scheme, user, port, case of host or ``.git``.

    ``https://github.com/org/env.git``, ``git@github.com:org/env`` and
    ``ssh://git@github.com:22/org/env.git`` all give ``github.com/org/env``: one
    repository, as a push webhook names it and as the configuration does (two entries with
    one key are refused: each would act on the repo). A local path is
    kept as it is (without a trailing slash or ``.git``).
    """
    text = url.strip()
    if "://" in text:
        try:
            parts = urlsplit(text)
        except ValueError:  # a bracketed host that is no IPv6 address: not a URL after all
            return text.rstrip("/").removesuffix(".git")
        host, path = (parts.hostname or "").lower(), parts.path
    else:
        scp = _SCP_LIKE.match(text)
        if scp is None or scp.group("host").startswith("."):
            return text.rstrip("/").removesuffix(".git")
        host, path = scp.group("host").lower(), scp.group("path")
    path = path.strip("/").removesuffix(".git")
    return f"{host}/{path}" if host else path
