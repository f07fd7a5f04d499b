"""How a push event's repository URL is matched to an Env repo served."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!/).*)$")
"""``git@host:org/repo.git``: git's scp-like SSH syntax (no scheme, a colon before the path)."""


def match_key(url: str) -> str:
    """``host/path`` of a Git URL, whatever its scheme, user, port, case of host or ``.git``.

    ``https://github.com/org/env.git``, ``git@github.com:org/env`` and
    ``ssh://git@github.com:22/org/env.git`` all give ``github.com/org/env``: one
    repository, as a push webhook names it and as the configuration does. A local path is
    kept as it is (without a trailing slash or ``.git``).
    """
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        host, path = (parts.hostname or "").lower(), parts.path
    else:
        scp = _SCP_LIKE.match(text)
        if scp is None or scp.group("host").startswith("."):
            return text.rstrip("/").removesuffix(".git")
        host, path = scp.group("host").lower(), scp.group("path")
    path = path.strip("/").removesuffix(".git")
    return f"{host}/{path}" if host else path
