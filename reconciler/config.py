"""One configuration object for ``reconciler run``, built once from flags, environment and file.

Every setting is declared once in ``FIELDS``: its name, its place in the YAML config file,
its environment variable (``RECONCILER_<NAME>``), its type, default and help. The CLI makes
its flags from that table; ``build`` merges the three sources with the precedence flags >
environment > file > default and validates the result, naming the offending setting and
where it came from. No other module reads the environment or the config file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.errors import PermanentError
from reconciler.ports import DEFAULT_STATE_BRANCH
from reconciler.spec.limits import Limits
from reconciler.spec.weightpolicy import RuleError, policy_from_settings

ENV_PREFIX = "RECONCILER_"


class ConfigError(PermanentError):
    """A setting is missing or invalid; the message names it and its source."""


@dataclass(frozen=True)
class Field:
    """One setting: where it lives in the file, how it is parsed, what it means."""

    name: str
    file_path: tuple[str, ...]
    kind: str
    """``str``, ``path``, ``int``, ``float``, ``bool``, ``list`` of str, ``map`` str to str."""
    help: str

    @property
    def env(self) -> str:
        """Its environment variable."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """Its command-line flag."""
        return "--" + self.name.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field(
        "repo",
        ("repo",),
        "str",
        "The Env repo: a URL libgit2 speaks or a local path.",
    ),
    Field(
        "main_branch",
        ("mainBranch",),
        "str",
        "Branch the GitOps operator syncs.",
    ),
    Field(
        "state_branch",
        ("stateBranch",),
        "str",
        "Orphan state branch.",
    ),
    Field(
        "experiment_paths",
        ("experimentPaths",),
        "list",
        "Directories of main searched for experiment and metric files (repeatable).",
    ),
    Field(
        "cache_dir",
        ("cacheDir",),
        "path",
        "Where the bare cache of the Env repo lives (an emptyDir in a pod).",
    ),
    Field(
        "interval",
        ("interval",),
        "float",
        "Seconds between fetches of the Env repo.",
    ),
    Field(
        "author_name",
        ("author", "name"),
        "str",
        "Commit author name.",
    ),
    Field(
        "author_email",
        ("author", "email"),
        "str",
        "Commit author e-mail.",
    ),
    Field(
        "token_file",
        ("credentials", "tokenFile"),
        "path",
        "File holding the HTTPS token (a mounted Secret).",
    ),
    Field(
        "username",
        ("credentials", "username"),
        "str",
        "HTTPS user name sent with the token.",
    ),
    Field(
        "ssh_key_file",
        ("credentials", "sshKeyFile"),
        "path",
        "SSH private key file.",
    ),
    Field(
        "known_hosts_file",
        ("credentials", "knownHostsFile"),
        "path",
        "known_hosts file with the SSH server's host key.",
    ),
    Field(
        "ca_file",
        ("credentials", "caFile"),
        "path",
        "Extra CA bundle for HTTPS to Git.",
    ),
    Field(
        "prometheus_url",
        ("prometheus", "url"),
        "str",
        "Prometheus base URL.",
    ),
    Field(
        "prometheus_token_file",
        ("prometheus", "tokenFile"),
        "path",
        "File holding a bearer token for Prometheus.",
    ),
    Field(
        "prometheus_ca_file",
        ("prometheus", "caFile"),
        "path",
        "CA bundle for Prometheus.",
    ),
    Field(
        "prometheus_timeout",
        ("prometheus", "timeout"),
        "float",
        "Seconds before a Prometheus query counts as failed.",
    ),
    Field(
        "prometheus_headers",
        ("prometheus", "headers"),
        "map",
        "Extra HTTP header for Prometheus, NAME=VALUE (repeatable).",
    ),
    Field(
        "kubeconfig",
        ("kubernetes", "kubeconfig"),
        "path",
        "kubeconfig file (default: in-cluster configuration).",
    ),
    Field(
        "kube_context",
        ("kubernetes", "context"),
        "str",
        "kubeconfig context.",
    ),
    Field(
        "namespace",
        ("kubernetes", "namespace"),
        "str",
        "Namespace of the reconciler's own objects (Leases).",
    ),
    Field(
        "events",
        ("kubernetes", "events"),
        "bool",
        "Record a Kubernetes Event on the target for each transition.",
    ),
    # -- weight policy: what an Env repo may have the reconciler write (issue 16) --
    Field(
        "weight_namespaces",
        ("kubernetes", "weightNamespaces"),
        "list",
        "Namespaces whose traffic objects experiments may weight ('*': any); unset: the "
        "Argo CD Application's destination namespace or the Flux Kustomization's "
        "targetNamespace, else the reconciler's own namespace (repeatable).",
    ),
    Field(
        "weight_fields",
        ("kubernetes", "weightFields"),
        "list",
        "Extra weight fields beside the known traffic kinds', as GROUP/VERSION/KIND:FIELDPATH "
        "('*' for any version, '[*]' for any index; core group: VERSION/KIND:FIELDPATH) "
        "(repeatable).",
    ),
    Field(
        "listen",
        ("listen",),
        "str",
        "HOST:PORT of /metrics, /healthz, /readyz and /webhook.",
    ),
    Field(
        "webhook_secret_file",
        ("webhook", "secretFile"),
        "path",
        "Shared secret for GitHub/GitLab push webhooks (none: /webhook is off).",
    ),
    Field(
        "http_read_timeout",
        ("http", "readTimeout"),
        "float",
        "Seconds an HTTP client has to send a whole request (and to take each write of the "
        "answer); a slower one is answered 408 and closed.",
    ),
    Field(
        "http_max_connections",
        ("http", "maxConnections"),
        "int",
        "HTTP connections served at once, a thread each; more wait in the listen queue.",
    ),
    Field(
        "leader_election",
        ("leaderElection", "enabled"),
        "bool",
        "Hold a Lease per Env repo so only one replica acts on it.",
    ),
    Field(
        "lease_duration",
        ("leaderElection", "leaseDuration"),
        "float",
        "Seconds a Lease is valid without renewal.",
    ),
    Field(
        "renew_deadline",
        ("leaderElection", "renewDeadline"),
        "float",
        "Seconds within which the holder must renew, or stop acting.",
    ),
    Field(
        "retry_period",
        ("leaderElection", "retryPeriod"),
        "float",
        "Seconds between Lease attempts.",
    ),
    Field(
        "argocd_application",
        ("gitops", "argocdApplication"),
        "str",
        "namespace/name of the Argo CD Application syncing the Env repo.",
    ),
    Field(
        "flux_kustomization",
        ("gitops", "fluxKustomization"),
        "str",
        "namespace/name of the Flux Kustomization applying the Env repo.",
    ),
    Field(
        "flux_gitrepository",
        ("gitops", "fluxGitRepository"),
        "str",
        "namespace/name of the Flux GitRepository fetching the Env repo.",
    ),
    Field(
        "sync_timeout",
        ("gitops", "syncTimeout"),
        "float",
        "Seconds to wait for the GitOps operator to sync an outcome commit.",
    ),
    Field(
        "failpoints",
        ("failpoints",),
        "list",
        "Step boundaries where the process exits hard (crash tests only): after-fetch, "
        "after-state-push, after-weights, after-main-push, after-outcome-record, "
        "after-cleanup-push.",
    ),
    Field(
        "log_json",
        ("log", "json"),
        "bool",
        "Log JSON lines (false: readable console output).",
    ),
    Field(
        "log_level",
        ("log", "level"),
        "str",
        "debug, info, warning or error.",
    ),
    # Limits on what the experiment and Metric loaders read (reconciler.spec.limits.Limits,
    # whose defaults are the documented ones); a file past one is reported, not read.
    Field(
        "max_file_bytes",
        ("limits", "maxFileBytes"),
        "int",
        "Bytes in one experiment or Metric file.",
    ),
    Field(
        "max_documents_per_file",
        ("limits", "maxDocumentsPerFile"),
        "int",
        "YAML documents in one experiment or Metric file.",
    ),
    Field(
        "max_experiment_files",
        ("limits", "maxExperimentFiles"),
        "int",
        "Experiment files read from the Env repo (those of live experiments first).",
    ),
    Field("max_aliases", ("limits", "maxAliases"), "int", "YAML alias uses in one file."),
    Field(
        "max_alias_nodes",
        ("limits", "maxAliasNodes"),
        "int",
        "Nodes YAML aliases may add to one document once expanded.",
    ),
    Field(
        "max_nesting_depth",
        ("limits", "maxNestingDepth"),
        "int",
        "Nesting of mappings and lists in one YAML document.",
    ),
)
_BY_NAME = {f.name: f for f in FIELDS}


def describe(name: str) -> str:
    """How messages name a setting: its flag and file key (``--ca-file / credentials.caFile``)."""
    spec = _BY_NAME[name]
    return f"{spec.flag} / {'.'.join(spec.file_path)}"


@dataclass(frozen=True)
class Settings:
    """The validated configuration (see ``FIELDS`` for each setting's meaning)."""

    repo: str
    main_branch: str = "main"
    state_branch: str = DEFAULT_STATE_BRANCH
    experiment_paths: tuple[str, ...] = (".",)
    cache_dir: Path = Path("/tmp/reconciler-cache")  # noqa: S108 - an emptyDir in the pod
    interval: float = 30.0
    author_name: str = "gitops-reconciler"
    author_email: str = "gitops-reconciler@localhost"
    token_file: Path | None = None
    username: str = "x-access-token"
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None
    ca_file: Path | None = None
    prometheus_url: str | None = None
    prometheus_token_file: Path | None = None
    prometheus_ca_file: Path | None = None
    prometheus_timeout: float = 10.0
    prometheus_headers: Mapping[str, str] = field(default_factory=dict)
    kubeconfig: Path | None = None
    kube_context: str | None = None
    namespace: str | None = None
    listen: str = "0.0.0.0:8080"
    webhook_secret_file: Path | None = None
    http_read_timeout: float = 10.0
    http_max_connections: int = 32
    leader_election: bool = False
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    argocd_application: str | None = None
    flux_kustomization: str | None = None
    flux_gitrepository: str | None = None
    sync_timeout: float = 120.0
    events: bool = True
    weight_namespaces: tuple[str, ...] = ()
    weight_fields: tuple[str, ...] = ()
    failpoints: tuple[str, ...] = ()
    log_json: bool = True
    log_level: str = "info"
    max_file_bytes: int = Limits.max_file_bytes
    max_documents_per_file: int = Limits.max_documents_per_file
    max_experiment_files: int = Limits.max_experiment_files
    max_aliases: int = Limits.max_aliases
    max_alias_nodes: int = Limits.max_alias_nodes
    max_nesting_depth: int = Limits.max_nesting_depth

    @property
    def limits(self) -> Limits:
        """The loader's limits, as configured."""
        return limits_of(self)

    @property
    def listen_address(self) -> tuple[str, int]:
        """``listen`` as (host, port)."""
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)  # noqa: S104 - a pod listens on all addresses


LIMIT_SETTINGS = tuple(f.name for f in fields(Limits))


def limits_of(values: object) -> Limits:
    """The ``Limits`` named by the attributes of ``values`` (Settings, or click's params).

    Raises:
        ConfigError: a limit is not a positive integer.
    """
    try:
        return Limits(**{name: getattr(values, name) for name in LIMIT_SETTINGS})
    except ValueError as exc:
        raise ConfigError(f"limits: {exc}") from None


def build_limits(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Limits:
    """The limits alone (for ``reconciler validate``): flags > environment > defaults.

    Raises:
        ConfigError: a limit is not a positive integer; the message names its source.
    """
    values: dict[str, Any] = {}
    layers = (
        ("environment", from_environment(os.environ if environ is None else environ)),
        ("flag", flags),
    )
    for source, layer in layers:
        for name in LIMIT_SETTINGS:
            if layer.get(name) is not None:
                values[name] = _parse(_BY_NAME[name], layer[name], source)
    try:
        return Limits(**values)
    except ValueError as exc:
        raise ConfigError(f"limits: {exc}") from None


def read_file(path: Path) -> dict[str, Any]:
    """The settings in a YAML config file, by setting name.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or has unknown keys.
    """
    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must be a mapping of settings")
    found: dict[str, Any] = {}
    known_paths = {f.file_path: f.name for f in FIELDS}
    _collect(data, (), known_paths, found, path)
    return found


def _collect(
    node: dict[str, Any],
    prefix: tuple[str, ...],
    known: dict[tuple[str, ...], str],
    found: dict[str, Any],
    path: Path,
) -> None:
    for key, value in node.items():
        here = (*prefix, str(key))
        if here in known:
            found[known[here]] = value
        elif isinstance(value, dict) and any(k[: len(here)] == here for k in known):
            _collect(value, here, known, found, path)
        else:
            raise ConfigError(
                f"config file {path}: unknown setting {'.'.join(here)!r} (known: "
                f"{', '.join(sorted('.'.join(p) for p in known))})"
            )


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings given as ``RECONCILER_*`` variables, by setting name."""
    return {f.name: environ[f.env] for f in FIELDS if f.env in environ}


def build(
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    file: Path | None = None,
) -> Settings:
    """Merge flags > environment > file > defaults into validated ``Settings``.

    Args:
        flags: settings given on the command line (only those the user gave).
        environ: the process environment (``os.environ`` when None).
        file: a YAML config file, if any.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (f"config file {file}", read_file(file) if file else {}),
        ("environment", from_environment(os.environ if environ is None else environ)),
        ("flag", flags),
    ]
    values: dict[str, Any] = {}
    for source, layer in layers:
        for name, raw in layer.items():
            if raw is None:
                continue
            spec = _BY_NAME.get(name)
            if spec is None:
                raise ConfigError(f"{source}: unknown setting {name!r}")
            values[name] = _parse(spec, raw, source)
    if not values.get("repo"):
        raise ConfigError("no Env repo: give --repo, RECONCILER_REPO or 'repo' in the config file")
    settings = Settings(
        **{f.name: _freeze(values[f.name]) for f in fields(Settings) if f.name in values}
    )
    _check(settings)
    return settings


def _parse(spec: Field, raw: Any, source: str) -> Any:  # noqa: ANN401, PLR0911
    where = f"{source}: {spec.name} ({spec.env})"
    try:
        if spec.kind == "str":
            return str(raw)
        if spec.kind == "path":
            return Path(str(raw))
        if spec.kind == "int":
            return int(raw)
        if spec.kind == "float":
            return float(raw)
        if spec.kind == "bool":
            return _parse_bool(raw)
        if spec.kind == "list":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return [str(item).strip() for item in items if str(item).strip()]
        if spec.kind == "map":
            return _parse_map(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}: unknown kind {spec.kind}")


def _parse_bool(raw: Any) -> bool:  # noqa: ANN401
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{raw!r} is not true or false")


def _parse_map(raw: Any) -> dict[str, str]:  # noqa: ANN401
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _freeze(value: Any) -> Any:  # noqa: ANN401
    return tuple(value) if isinstance(value, list) else value


RESTART_ONLY = (
    "repo",
    "leader_election",
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "namespace",
    "listen",
    "http_read_timeout",
    "http_max_connections",
    "webhook_secret_file",
)
"""Settings a running process cannot change: the Leases, the watch on a local repo and the
HTTP server are made from them once. A reload that changes one is refused as a whole."""


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The ``RESTART_ONLY`` settings that differ between ``old`` and ``new`` (flag / file key)."""
    return [describe(name) for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]


def lease_timing_problem(
    retry_period: float, renew_deadline: float, lease_duration: float
) -> str | None:
    """Why these leader-election timings are unsafe (None: they are safe).

    A replica that cannot renew must stop acting (``renew_deadline``) before its Lease can
    be taken over (``lease_duration``), and try more often than that (``retry_period``).
    """
    if 0 < retry_period < renew_deadline < lease_duration:
        return None
    return (
        "leader election needs 0 < retry_period < renew_deadline < lease_duration, so a "
        "replica that cannot renew stops acting before its Lease can be taken over (got "
        f"{retry_period:g}, {renew_deadline:g}, {lease_duration:g})"
    )


def _check(settings: Settings) -> None:
    lease = lease_timing_problem(
        settings.retry_period, settings.renew_deadline, settings.lease_duration
    )
    checks: list[tuple[bool, str]] = [
        (settings.interval > 0, "interval must be above 0 seconds"),
        (settings.prometheus_timeout > 0, "prometheus_timeout must be above 0 seconds"),
        (lease is None, lease or ""),
        (
            settings.log_level in {"debug", "info", "warning", "error"},
            "log_level must be debug, info, warning or error",
        ),
        (_is_address(settings.listen), f"listen {settings.listen!r} is not HOST:PORT"),
        (settings.http_read_timeout > 0, "http_read_timeout must be above 0 seconds"),
        (settings.http_max_connections >= 1, "http_max_connections must be at least 1"),
    ]
    for name in ("argocd_application", "flux_kustomization", "flux_gitrepository"):
        value = getattr(settings, name)
        checks.append((value is None or value.count("/") == 1, f"{name} must be namespace/name"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    limits_of(settings)
    try:
        policy_from_settings(settings.weight_namespaces, settings.weight_fields)
    except RuleError as exc:
        raise ConfigError(f"weight_namespaces / weight_fields: {exc}") from None


def _is_address(text: str) -> bool:
    _, sep, port = text.rpartition(":")
    return bool(sep) and port.isdigit() and 0 <= int(port) <= 65535  # noqa: PLR2004


def click_options(only: Collection[str] | None = None) -> list[Callable[[Any], Any]]:
    """One click option per setting (or per setting in ``only``), without defaults.

    Unset flags are None, so the environment and the file can fill them.
    """
    import click  # noqa: PLC0415 - only the CLI needs click

    defaults = {f.name: f.default for f in fields(Settings)}
    options: list[Callable[[Any], Any]] = []
    for spec in FIELDS:
        if only is not None and spec.name not in only:
            continue
        default = defaults.get(spec.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        default_text = "" if default in (None, MISSING) else f" [default: {shown}]"
        help_text = f"{spec.help}{default_text} (env {spec.env}; file {'.'.join(spec.file_path)})"
        if spec.kind == "bool":
            options.append(
                click.option(
                    f"{spec.flag}/--no-{spec.flag[2:]}", spec.name, default=None, help=help_text
                )
            )
        elif spec.kind in {"list", "map"}:
            singular = spec.flag.removesuffix("s")
            options.append(
                click.option(singular, spec.name, multiple=True, default=None, help=help_text)
            )
        else:
            options.append(click.option(spec.flag, spec.name, default=None, help=help_text))
    return options
