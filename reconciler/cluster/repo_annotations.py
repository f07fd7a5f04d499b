"""Env repos named by the cluster: annotated Argo CD Applications and Flux GitRepositories.

Pure: an object (or a credentials Secret) as the API server returns it goes in; a
config-file-shaped repo entry, or the problems that keep it out, come out. Everything in
those objects is hostile input: whoever may create an Application or a GitRepository
anywhere in the cluster writes the annotations, so every value is bounded, free of
control characters, and checked before it becomes a setting (branches as Git allows them,
paths relative and without ``..``, URLs without credentials in them). A credentials
Secret hands its values only to the repository URLs it names itself (its ``url`` key, as
in Argo CD's repository Secrets) and, when it says so, only to objects in the namespaces
it lists: an annotation can never send a token to a server of its writer's choosing.
Nothing here raises on content, reads a file, or puts a secret value in a message.
"""

from __future__ import annotations

import base64
import binascii
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

PREFIX = "reconciler.gitops.io/"
ENABLED = PREFIX + "enabled"
CREDENTIALS_SECRET = PREFIX + "credentials-secret"
INTERVAL = PREFIX + "interval"
EXPERIMENT_PATHS = PREFIX + "experiment-paths"
STATE_BRANCH = PREFIX + "state-branch"
FLUX_KUSTOMIZATION = PREFIX + "flux-kustomization"
SECRET_NAMESPACES = PREFIX + "namespaces"
"""On a credentials Secret: the namespaces whose objects may use it (comma-separated)."""
KNOWN = frozenset(
    {ENABLED, CREDENTIALS_SECRET, INTERVAL, EXPERIMENT_PATHS, STATE_BRANCH, FLUX_KUSTOMIZATION}
)

MAX_VALUE = 1024
"""Characters in one annotation value."""
MAX_URL = 2048
MAX_PATH = 256
MAX_PATHS = 16
MAX_BRANCH = 255
MAX_INTERVAL = 86_400.0
MAX_SECRET_VALUE = 1 << 20
"""Bytes in one Secret value (the API server's limit for a whole Secret)."""
MAX_SECRET_URLS = 64
SHOWN = 80
"""Characters of a hostile value quoted in a problem."""

ARGOCD_DEFAULT_BRANCH = "main"
FLUX_DEFAULT_BRANCH = "master"
"""What Flux's source-controller checks out when a GitRepository names no ``spec.ref``."""

_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
_HTTP_SCHEMES = frozenset({"https", "http"})
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!//)[^\s]+$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_TAG = re.compile(r"^v?\d+(\.\d+)*([-+][0-9A-Za-z.+-]*)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_BAD_REF_CHARS = frozenset("~^:?*[\\ ")

ARGOCD = "argocd Application"
FLUX = "flux GitRepository"

# Keys of the credentials Secret: Flux's names first, then Argo CD's.
TOKEN_KEYS = ("token", "password")
SSH_KEY_KEYS = ("identity", "sshPrivateKey")
KNOWN_HOSTS_KEYS = ("known_hosts",)
CA_KEYS = ("ca.crt", "caFile")
TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret
SSH_KEY_FILE = "identity"
KNOWN_HOSTS_FILE = "known_hosts"
CA_FILE = "ca.crt"


@dataclass(frozen=True)
class Candidate:
    """An annotated object that names a usable Env repo, its credentials not yet resolved."""

    source: str
    """``argocd Application team-a/env``: how messages name the object."""
    order: tuple[str, str, str]
    """(namespace, name, kind): the first one wins a repo URL two objects name."""
    namespace: str
    entry: dict[str, Any]
    """The config-file-shaped repo entry, without ``credentials``."""
    secret: str
    """The credentials Secret's name (in the reconciler's own namespace)."""


@dataclass(frozen=True)
class SecretMaterial:
    """What a credentials Secret holds, checked: file name -> content, and its bindings."""

    files: Mapping[str, bytes]
    username: str | None
    urls: tuple[str, ...]
    """Repository URLs (or prefixes ending in ``/``) the Secret's credentials may go to."""
    namespaces: frozenset[str] | None
    """Namespaces whose objects may use it; None: any."""


def show(value: object) -> str:
    """A hostile value quoted for a message: bounded, control characters escaped."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:SHOWN]
    return repr(cut) + ("..." if len(text) > SHOWN else "")


def _clean(value: object, limit: int = MAX_VALUE) -> str | None:
    """``value`` if it is a string within ``limit`` without control characters."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):  # noqa: PLR2004 - C0/C1
        return None
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def object_name(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of an object, if both look like Kubernetes names."""
    meta = _mapping(obj.get("metadata"))
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace):
        return None
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        return None
    return namespace, name


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object's annotations (empty when absent or malformed)."""
    return _mapping(_mapping(obj.get("metadata")).get("annotations"))


def opted_in(obj: Mapping[str, Any]) -> bool:
    """Whether the object asks to be an Env repo (any value but absent or ``"false"``).

    A value other than ``"true"`` is taken as asking, so that ``parse_*`` reports it.
    """
    value = annotations_of(obj).get(ENABLED)
    return value is not None and value != "false"


def is_namespaced_name(text: str) -> bool:
    """``namespace/name`` with a valid namespace and name."""
    namespace, sep, name = text.partition("/")
    return bool(sep) and bool(_DNS_LABEL.match(namespace)) and bool(_DNS_SUBDOMAIN.match(name))


def branch_problem(branch: str) -> str | None:
    """Why ``branch`` cannot be a branch name (``git check-ref-format``'s rules), or None."""
    if not branch or len(branch) > MAX_BRANCH or _clean(branch, MAX_BRANCH) is None:
        return f"at most {MAX_BRANCH} characters, no control characters"
    if any(c in _BAD_REF_CHARS for c in branch) or ".." in branch or "@{" in branch:
        return "no spaces, '..', '@{' or any of ~^:?*[\\"
    parts = branch.split("/")
    if branch in {"@", "HEAD"} or branch.startswith("-") or any(not p for p in parts):
        return "not HEAD or '@', not starting with '-', no empty component ('//', '/' at an end)"
    if branch.endswith((".", ".lock")) or any(p.startswith(".") for p in parts):
        return "no component starting with '.', not ending in '.' or '.lock'"
    return None


def experiment_path(value: object) -> str | None:
    """A repo-relative directory, normalized (``.`` the root), or None when it is not one."""
    text = _clean(value, MAX_PATH)
    if text is None or not text.strip() or text.startswith("/") or "\\" in text:
        return None
    if ".." in text.split("/"):
        return None
    return posixpath.normpath(text)


def url_problem(url: object) -> str | None:  # noqa: PLR0911 - one return per defect
    """Why ``url`` cannot be an Env repo's address, or None (never quotes userinfo)."""
    text = _clean(url, MAX_URL)
    if text is None or not text or any(c.isspace() for c in text):
        return f"must be a URL of at most {MAX_URL} characters without spaces"
    if "://" not in text:
        if _SCP_LIKE.match(text) and not {".", ".."} & set(text.partition(":")[2].split("/")):
            return None
        return "must be an https://, http:// or ssh:// URL (or git@host:path), not a local path"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a URL"
    scheme = parts.scheme.lower()
    if scheme not in _HTTP_SCHEMES | _SSH_SCHEMES:
        return f"scheme {show(scheme)} is not https, http or ssh"
    if not parts.hostname:
        return "names no host"
    if {".", ".."} & {unquote(s) for s in parts.path.split("/")}:
        return "must have no '.' or '..' in its path"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo and (scheme in _HTTP_SCHEMES or ":" in userinfo):
        return "carries credentials: put them in the credentials Secret instead"
    if parts.query or parts.fragment:
        return "must have no query or fragment"
    return None


def is_ssh(url: str) -> bool:
    """Whether ``url`` (one ``url_problem`` accepts) goes over SSH."""
    if "://" in url:
        return url.split("://", 1)[0].lower() in _SSH_SCHEMES
    return True


def url_key(url: str) -> str:
    """``url`` as two spellings of one repository compare: host lowercase, no ``.git``/``/``."""
    text = url.rstrip("/")
    text = text.removesuffix(".git").rstrip("/")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme.lower()}://{host.lower()}{slash}{path}"
    host, colon, path = text.partition(":")
    return f"{host.lower()}{colon}{path}"


def _interval(value: object) -> tuple[float | None, str | None]:
    text = _clean(value, 32)
    try:
        seconds = float(text) if text is not None else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_INTERVAL:
        return None, f"{INTERVAL} {show(value)} must be seconds above 0, at most {MAX_INTERVAL:g}"
    return (int(seconds) if seconds.is_integer() else seconds), None


def _paths(value: object) -> tuple[list[str] | None, str | None]:
    text = _clean(value)
    items = [p.strip() for p in text.split(",")] if text is not None else []
    paths = [experiment_path(p) for p in items if p]
    if not paths or len(paths) > MAX_PATHS or None in paths:
        return None, (
            f"{EXPERIMENT_PATHS} {show(value)} must list 1 to {MAX_PATHS} directories, "
            "comma-separated, each relative to the repo root and without '..'"
        )
    return [p for p in paths if p is not None], None


def _common(
    notes: Mapping[str, Any], entry: dict[str, Any], problems: list[str], *, flux: bool
) -> str | None:
    """Read the annotations both kinds take into ``entry``; the credentials Secret's name."""
    unknown = sorted(
        show(k) for k in notes if isinstance(k, str) and k.startswith(PREFIX) and k not in KNOWN
    )
    if unknown:
        problems.append(
            f"unknown annotations {', '.join(unknown)} (known: {', '.join(sorted(KNOWN))})"
        )
    if notes.get(ENABLED) != "true":
        problems.append(f'{ENABLED} is {show(notes.get(ENABLED))}: set it to "true" or "false"')
    if FLUX_KUSTOMIZATION in notes and not flux:
        problems.append(f"{FLUX_KUSTOMIZATION} is for Flux GitRepositories: remove it")
    if INTERVAL in notes:
        entry["interval"], problem = _interval(notes[INTERVAL])
        problems.extend([problem] if problem else [])
    if EXPERIMENT_PATHS in notes:
        entry["experimentPaths"], problem = _paths(notes[EXPERIMENT_PATHS])
        problems.extend([problem] if problem else [])
    if STATE_BRANCH in notes:
        value = notes[STATE_BRANCH]
        why = branch_problem(value) if isinstance(value, str) else "a string"
        if why:
            problems.append(f"{STATE_BRANCH} {show(value)} is not a branch name ({why})")
        entry["stateBranch"] = value
    secret = notes.get(CREDENTIALS_SECRET)
    if secret is None:
        problems.append(
            f"{CREDENTIALS_SECRET} is missing: name the Secret (in the reconciler's own "
            "namespace) that holds the credentials to push to this repository"
        )
    elif not isinstance(secret, str) or not _DNS_SUBDOMAIN.match(secret):
        problems.append(f"{CREDENTIALS_SECRET} {show(secret)} is not a Secret name")
        secret = None
    return secret


def _argocd_branch(revision: object) -> tuple[str | None, str | None]:
    if revision is None or revision in ("", "HEAD"):
        return ARGOCD_DEFAULT_BRANCH, None
    text = _clean(revision, MAX_BRANCH)
    if text is not None and text.startswith("refs/heads/"):
        text = text.removeprefix("refs/heads/")
    elif text is not None and (text.startswith("refs/") or _SHA.match(text) or _TAG.match(text)):
        return None, (
            f"targetRevision {show(revision)} looks like a tag or a commit: the Application "
            "deploys a fixed revision, not what the reconciler commits; point it at a branch"
        )
    why = branch_problem(text) if text is not None else "a string"
    if why:
        return None, f"targetRevision {show(revision)} is not a branch name ({why})"
    return text, None


def _argocd_source(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    source = spec.get("source")
    if isinstance(source, Mapping):
        return source
    sources = spec.get("sources")
    if isinstance(sources, list):
        for item in sources[: MAX_PATHS * 4]:
            if isinstance(item, Mapping) and "path" in item:
                return item
    return None


def parse_application(obj: Mapping[str, Any]) -> Candidate | list[str]:
    """The candidate an annotated Argo CD Application names, or why it names none."""
    return _parse(obj, flux=False)


def parse_git_repository(obj: Mapping[str, Any]) -> Candidate | list[str]:
    """The candidate an annotated Flux GitRepository names, or why it names none."""
    return _parse(obj, flux=True)


def label(obj: Mapping[str, Any], *, flux: bool) -> str:
    """How messages name the object: ``argocd Application team-a/env``."""
    named = object_name(obj)
    where = f"{named[0]}/{named[1]}" if named else show(_mapping(obj.get("metadata")).get("name"))
    return f"{FLUX if flux else ARGOCD} {where}"


def _parse(obj: Mapping[str, Any], *, flux: bool) -> Candidate | list[str]:
    named = object_name(obj)
    if named is None:
        return ["its namespace or name is not a Kubernetes name"]
    namespace, name = named
    problems: list[str] = []
    entry: dict[str, Any] = {}
    spec = _mapping(obj.get("spec"))
    if flux:
        url, branch = _flux_source(spec, problems)
        kustomization = annotations_of(obj).get(FLUX_KUSTOMIZATION)
        if not isinstance(kustomization, str) or not is_namespaced_name(kustomization):
            problems.append(
                f"{FLUX_KUSTOMIZATION} {show(kustomization)} must name the Kustomization that "
                "applies this source, as namespace/name"
            )
        gitops = {"fluxGitRepository": f"{namespace}/{name}", "fluxKustomization": kustomization}
    else:
        url, branch = _argocd_source_entry(spec, entry, problems)
        gitops = {"argocdApplication": f"{namespace}/{name}"}
    secret = _common(annotations_of(obj), entry, problems, flux=flux)
    if problems or secret is None:
        return problems
    entry.update(repo=url, mainBranch=branch, gitops=gitops)
    return Candidate(
        source=f"{FLUX if flux else ARGOCD} {namespace}/{name}",
        order=(namespace, name, FLUX if flux else ARGOCD),
        namespace=namespace,
        entry=dict(sorted(entry.items())),
        secret=secret,
    )


def _flux_source(spec: Mapping[str, Any], problems: list[str]) -> tuple[Any, str | None]:
    url = spec.get("url")
    if why := url_problem(url):
        problems.append(f"spec.url {why}")
    ref = spec.get("ref")
    if ref is None:
        return url, FLUX_DEFAULT_BRANCH
    ref = _mapping(ref)
    pinned = [k for k in ("tag", "semver", "commit") if ref.get(k)]
    name = ref.get("name")
    if isinstance(name, str) and name.startswith("refs/heads/") and not ref.get("branch"):
        ref = {**ref, "branch": name.removeprefix("refs/heads/")}
    elif name:
        pinned.append("name")
    if pinned:
        problems.append(
            f"spec.ref.{pinned[0]} pins a fixed revision, not what the reconciler commits: "
            "point spec.ref.branch at the branch to promote into"
        )
        return url, None
    branch = ref.get("branch", FLUX_DEFAULT_BRANCH)
    why = branch_problem(branch) if isinstance(branch, str) else "a string"
    if why:
        problems.append(f"spec.ref.branch {show(branch)} is not a branch name ({why})")
        return url, None
    return url, branch


def _argocd_source_entry(
    spec: Mapping[str, Any], entry: dict[str, Any], problems: list[str]
) -> tuple[Any, str | None]:
    source = _argocd_source(spec)
    if source is None:
        problems.append("has no spec.source, nor a spec.sources[] entry with a path")
        return None, None
    url = source.get("repoURL")
    if why := url_problem(url):
        problems.append(f"repoURL {why}")
    if "chart" in source and "path" not in source:
        problems.append("its source is a Helm chart, not a directory of an Env repo")
    path = experiment_path(source.get("path", "."))
    if path is None:
        problems.append(f"path {show(source.get('path'))} is not a relative path without '..'")
    else:
        entry["experimentPaths"] = [path]
    branch, problem = _argocd_branch(source.get("targetRevision"))
    problems.extend([problem] if problem else [])
    return url, branch


def _decode(data: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str | None, bytes | None]:
    """(key, value) of the first of ``keys`` the Secret's ``data`` holds, or (None, None).

    Raises:
        ValueError: the value is not bounded base64 (says which key, never the value).
    """
    for key in keys:
        if key in data:
            raw = data[key]
            if not isinstance(raw, str) or len(raw) > MAX_SECRET_VALUE * 4 // 3 + 4:
                raise ValueError(f"key {key} is not base64 of at most {MAX_SECRET_VALUE} bytes")
            try:
                return key, base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"key {key} is not valid base64") from None
    return None, None


def _text(key: str, value: bytes, *, lines: bool) -> str:
    """``value`` as UTF-8 text without control characters (line breaks where ``lines``).

    Raises:
        ValueError: it is not (says which key, never the value).
    """
    try:
        text = value.decode()
    except UnicodeDecodeError:
        raise ValueError(f"key {key} is not UTF-8 text") from None
    body = text.rstrip("\r\n")
    allowed = {"\n", "\r", "\t"} if lines else set()
    if not body.strip() or any(
        (ord(c) < 0x20 or ord(c) == 0x7F) and c not in allowed  # noqa: PLR2004 - C0, DEL
        for c in body
    ):
        return _refuse(key, "is empty or holds control characters")
    return body


def _refuse(key: str, why: str) -> str:
    raise ValueError(f"key {key} {why}")


def parse_secret(obj: Mapping[str, Any]) -> SecretMaterial:
    """The credentials a Secret holds, checked (Flux's and Argo CD's key names).

    Raises:
        ValueError: a value cannot be used, or nothing can (what to fix; no values).
    """
    data = _mapping(obj.get("data"))
    files: dict[str, bytes] = {}
    key, token = _decode(data, TOKEN_KEYS)
    if key and token is not None:
        files[TOKEN_FILE] = _text(key, token, lines=False).encode()
    key, identity = _decode(data, SSH_KEY_KEYS)
    if key and identity is not None:
        text = _text(key, identity, lines=True)
        if "PRIVATE KEY-----" not in text:
            _refuse(key, "is not a PEM or OpenSSH private key")
        files[SSH_KEY_FILE] = (text + "\n").encode()
    key, hosts = _decode(data, KNOWN_HOSTS_KEYS)
    if key and hosts is not None:
        files[KNOWN_HOSTS_FILE] = (_text(key, hosts, lines=True) + "\n").encode()
    key, ca = _decode(data, CA_KEYS)
    if key and ca is not None:
        text = _text(key, ca, lines=True)
        if "-----BEGIN CERTIFICATE-----" not in text:
            _refuse(key, "is not a PEM certificate bundle")
        files[CA_FILE] = (text + "\n").encode()
    if TOKEN_FILE not in files and SSH_KEY_FILE not in files:
        raise ValueError(
            "holds no credentials: add key token (or password) for HTTPS, identity (or "
            "sshPrivateKey) and known_hosts for SSH"
        )
    username = None
    key, user = _decode(data, ("username",))
    if key and user is not None:
        username = _text(key, user, lines=False)
        if len(username) > MAX_BRANCH:
            _refuse(key, f"is longer than {MAX_BRANCH} characters")
    return SecretMaterial(files, username, _secret_urls(data), _secret_namespaces(obj))


def _secret_urls(data: Mapping[str, Any]) -> tuple[str, ...]:
    key, value = _decode(data, ("url",))
    if key is None or value is None:
        raise ValueError(
            "names no repository: add key url with the repository URL its credentials are "
            "for (one a line; a prefix ending in '/' covers the repositories under it)"
        )
    urls = tuple(u.strip() for u in _text(key, value, lines=True).splitlines() if u.strip())
    if len(urls) > MAX_SECRET_URLS or any(url_problem(u.rstrip("/") or u) for u in urls):
        _refuse(key, f"must list 1 to {MAX_SECRET_URLS} repository URLs, one a line")
    return urls


def _secret_namespaces(obj: Mapping[str, Any]) -> frozenset[str] | None:
    value = annotations_of(obj).get(SECRET_NAMESPACES)
    if value is None:
        return None
    text = _clean(value)
    names = [n.strip() for n in text.split(",")] if text is not None else []
    if not names or not all(_DNS_LABEL.match(n) for n in names):
        raise ValueError(f"annotation {SECRET_NAMESPACES} must list namespaces, comma-separated")
    return frozenset(names)


def secret_allows(material: SecretMaterial, url: str, namespace: str) -> str | None:
    """Why the Secret's credentials may not go to ``url`` for an object in ``namespace``."""
    if material.namespaces is not None and namespace not in material.namespaces:
        return (
            f"is not for objects in namespace {namespace} (its annotation "
            f"{SECRET_NAMESPACES} lists {', '.join(sorted(material.namespaces))})"
        )
    key = url_key(url)
    for allowed in material.urls:
        if allowed.endswith("/"):
            prefix = url_key(allowed) + "/"
            if key.startswith(prefix) and len(key) > len(prefix):
                return None
        elif url_key(allowed) == key:
            return None
    return "does not name this repository in its key url: add the URL there"


def credentials_entry(
    material: SecretMaterial, url: str, paths: Mapping[str, str]
) -> dict[str, str] | str:
    """The entry's ``credentials`` for ``url`` (file name -> path in ``paths``), or why none."""
    found = material.files
    if is_ssh(url):
        if SSH_KEY_FILE not in found:
            return "holds no SSH key for this ssh URL: add key identity (or sshPrivateKey)"
        if KNOWN_HOSTS_FILE not in found:
            return (
                "holds no known_hosts for this ssh URL: add key known_hosts with the "
                "server's host key (ssh-keyscan HOST)"
            )
        return {"knownHostsFile": paths[KNOWN_HOSTS_FILE], "sshKeyFile": paths[SSH_KEY_FILE]}
    if TOKEN_FILE not in found:
        return "holds no token for this https URL: add key token (or password)"
    entry = {"tokenFile": paths[TOKEN_FILE]}
    if material.username:
        entry["username"] = material.username
    if CA_FILE in found:
        entry["caFile"] = paths[CA_FILE]
    return dict(sorted(entry.items()))


def files_for(credentials: Mapping[str, str]) -> set[str]:
    """The credential file names an entry's ``credentials`` refer to."""
    keys = {"tokenFile", "sshKeyFile", "knownHostsFile", "caFile"}
    return {posixpath.basename(v) for k, v in credentials.items() if k in keys}
