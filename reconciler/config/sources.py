"""Settings from flags, environment and file: merged, parsed, validated, named in errors.

``build`` merges the three sources with the precedence flags > environment > file >
default and validates the result, naming the offending setting and where it came from. A
command that needs only some settings (``status`` the repo and its credentials, ``metrics``
Prometheus) passes ``only``: the others keep their defaults, whatever the environment holds.
No other module reads the environment or the config file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.config.declare import Field
from reconciler.config.repourl import repo_key
from reconciler.config.settings import (
    BY_NAME,
    FIELDS,
    PROCESS_WIDE,
    Settings,
    lease_timing_problem,
)
from reconciler.errors import PermanentError
from reconciler.spec.weightpolicy import RuleError, policy_from_settings

REPOS_KEY = "repos"
"""The config file's list of Env repos, one entry each, shaped like the file itself."""


class ConfigError(PermanentError):
    """A setting is missing or invalid; the message names it and its source."""


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
    entries = data.pop(REPOS_KEY, None)
    known_paths = {f.file_path: f.name for f in FIELDS}
    _collect(data, (), known_paths, found, f"config file {path}")
    if entries is not None:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(
                f"config file {path}: {REPOS_KEY} must be a list of mappings, one per Env "
                "repo, each with at least 'repo: URL'"
            )
        found[REPOS_KEY] = entries
    return found


def _collect(
    node: dict[str, Any],
    prefix: tuple[str, ...],
    known: dict[tuple[str, ...], str],
    found: dict[str, Any],
    where: str,
) -> None:
    for key, value in node.items():
        here = (*prefix, str(key))
        if here in known:
            found[known[here]] = value
        elif isinstance(value, dict) and any(k[: len(here)] == here for k in known):
            _collect(value, here, known, found, where)
        else:
            raise ConfigError(
                f"{where}: unknown setting {'.'.join(here)!r} (known: "
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
    only: Collection[str] | None = None,
) -> Settings:
    """Merge flags > environment > file > defaults into validated ``Settings``.

    Args:
        flags: settings given on the command line (only those the user gave).
        environ: the process environment (``os.environ`` when None).
        file: a YAML config file, if any.
        only: the settings this command reads (None: all, and the repo is required); the
            others keep their defaults.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (f"config file {file}", read_file(file) if file else {}),
        ("environment", from_environment(os.environ if environ is None else environ)),
        ("flag", flags),
    ]
    values: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for source, layer in layers:
        for name, raw in layer.items():
            if raw is None or (only is not None and name not in only):
                continue
            if name == REPOS_KEY and source.startswith("config file"):
                entries = raw
                continue
            spec = BY_NAME.get(name)
            if spec is None:
                raise ConfigError(f"{source}: unknown setting {name!r}")
            values[name] = _parse(spec, raw, source)
    _require_repo(values, entries, only)
    settings = assemble(values)
    check(settings)
    return _with_entries(settings, entries, f"config file {file}") if entries else settings


def _require_repo(
    values: Mapping[str, Any], entries: list[Any], only: Collection[str] | None
) -> None:
    """Refuse a configuration that names no Env repo, or names one both ways."""
    if only is not None:
        if "repo" in only and not values.get("repo"):
            raise ConfigError("no Env repo: give --repo or RECONCILER_REPO")
        return
    if entries and values.get("repo"):
        raise ConfigError(
            f"both repo and {REPOS_KEY} are set: list the first repo in {REPOS_KEY} too, "
            "and drop --repo / RECONCILER_REPO / 'repo'"
        )
    if not (entries or values.get("repo") or values.get("discovery")):
        raise ConfigError(
            "no Env repo: give --repo or RECONCILER_REPO, 'repo' or a 'repos' list in the "
            "config file, or enable discovery (--discovery / discovery.enabled)"
        )


def _with_entries(settings: Settings, entries: list[Any], where: str) -> Settings:
    """``settings`` with the Env repos of the file's ``repos:`` list, each resolved."""
    repos = tuple(
        entry_settings(settings, entry, f"{where}: {REPOS_KEY}[{i}]")
        for i, entry in enumerate(entries)
    )
    refuse_duplicates(repos, where)
    if len(repos) > settings.fleet.max_repos:
        raise ConfigError(
            f"{where}: {len(repos)} repos listed, more than fleet_max_repos "
            f"({settings.fleet.max_repos}): raise it or split the fleet"
        )
    return dataclasses.replace(settings, repos=repos)


def entry_settings(base: Settings, entry: Mapping[str, Any], where: str) -> Settings:
    """The settings of one Env repo: ``entry`` (shaped like the config file) over ``base``.

    An entry may set every setting but the process's own (``PROCESS_WIDE``); it must name
    its ``repo``.

    Raises:
        ConfigError: an unknown or process-wide key, a value that does not parse, settings
            that cannot work together, or no ``repo``; the message starts with ``where``.
    """
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a mapping of settings with at least 'repo: URL'")
    known = {f.file_path: f.name for f in FIELDS if f.name not in PROCESS_WIDE}
    for spec in FIELDS:
        if spec.name in PROCESS_WIDE and _lookup(entry, spec.file_path) is not None:
            raise ConfigError(
                f"{where}: {spec.key} is a setting of the whole process, not of one repo: "
                "set it at the top of the config file"
            )
    found: dict[str, Any] = {}
    _collect(dict(entry), (), known, found, where)
    if not str(found.get("repo") or "").strip():
        raise ConfigError(f"{where}: no 'repo': name the Env repo's URL")
    values = {f.name: f.value(base) for f in FIELDS}
    for name, raw in found.items():
        if raw is not None:
            values[name] = _parse(BY_NAME[name], raw, where)
    try:
        settings = assemble(values)
        check(settings)
    except ConfigError as exc:
        raise ConfigError(f"{where} ({values['repo']}): {exc}") from None
    return settings


def _lookup(node: Mapping[str, Any], path: tuple[str, ...]) -> Any:  # noqa: ANN401
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def refuse_duplicates(repos: Collection[Settings], where: str) -> None:
    """Refuse two entries for one Env repo (each would race the other's pushes).

    Raises:
        ConfigError: naming the repo listed twice.
    """
    seen: set[str] = set()
    for repo in repos:
        key = repo_key(repo.repo.url)
        if key in seen:
            raise ConfigError(f"{where}: {repo.repo.url} is listed twice; keep one entry")
        seen.add(key)


def assemble(values: Mapping[str, Any]) -> Settings:
    """``Settings`` with ``values`` (by setting name, parsed) in their groups.

    Raises:
        ConfigError: a group refuses its values (a limit that is not a positive integer).
    """
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        spec = BY_NAME[name]
        holder = top if spec.group is None else groups.setdefault(spec.group, {})
        holder[spec.attr] = _freeze(value)
    factories: dict[str, Any] = {f.name: f.default_factory for f in dataclasses.fields(Settings)}
    for group, attrs in groups.items():
        try:
            top[group] = factories[group](**attrs)
        except ValueError as exc:
            raise ConfigError(f"{group}: {exc}") from None
    return Settings(**top)


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
            items = _split(raw) if isinstance(raw, str) else list(raw)
            return [str(item).strip() for item in items if str(item).strip()]
        if spec.kind == "map":
            return _parse_map(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}: unknown kind {spec.kind}")


def _split(text: str) -> list[str]:
    """Items of a list given as one string: one per line if there are lines, else by comma."""
    return text.splitlines() if "\n" in text.strip() else text.split(",")


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
    """``NAME=VALUE`` or ``NAME: VALUE`` items (a header name holds neither ``=`` nor ``:``)."""
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    items = _split(raw) if isinstance(raw, str) else list(raw)
    out = {}
    for item in items:
        text = str(item)
        if not text.strip():
            continue
        cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
        name, value = text[:cut].strip(), text[cut + 1 :].strip()
        if cut < 0 or not name:
            raise ValueError(f"{item!r} is not NAME=VALUE")
        out[name] = value
    return out


def _freeze(value: Any) -> Any:  # noqa: ANN401
    return tuple(value) if isinstance(value, list) else value


def check(settings: Settings) -> None:
    """Refuse settings that cannot work together, naming them.

    Raises:
        ConfigError: what is wrong and which setting to change.
    """
    lease = settings.leader_election
    timing = lease_timing_problem(lease.retry_period, lease.renew_deadline, lease.lease_duration)
    server = settings.server
    checks: list[tuple[bool, str]] = [
        (settings.repo.interval > 0, "interval must be above 0 seconds"),
        (settings.fleet.workers >= 1, "fleet_workers must be at least 1"),
        (settings.fleet.max_repos >= 1, "fleet_max_repos must be at least 1"),
        (settings.fleet.discovery_interval > 0, "discovery_interval must be above 0 seconds"),
        (settings.fleet.git_timeout > 0, "git_timeout must be above 0 seconds"),
        (settings.prometheus.timeout > 0, "prometheus_timeout must be above 0 seconds"),
        (timing is None, timing or ""),
        (
            settings.log.level in {"debug", "info", "warning", "error"},
            "log_level must be debug, info, warning or error",
        ),
        (_is_address(server.listen), f"listen {server.listen!r} is not HOST:PORT"),
        (server.read_timeout > 0, "http_read_timeout must be above 0 seconds"),
        (server.max_connections >= 1, "http_max_connections must be at least 1"),
    ]
    for name in ("argocd_application", "flux_kustomization", "flux_gitrepository"):
        value = BY_NAME[name].value(settings)
        checks.append((value is None or value.count("/") == 1, f"{name} must be namespace/name"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    kube = settings.kubernetes
    try:
        policy_from_settings(kube.weight_namespaces, kube.weight_fields)
    except RuleError as exc:
        raise ConfigError(f"weight_namespaces / weight_fields: {exc}") from None


def _is_address(text: str) -> bool:
    _, sep, port = text.rpartition(":")
    return bool(sep) and port.isdigit() and 0 <= int(port) <= 65535  # noqa: PLR2004
