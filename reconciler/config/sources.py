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
from reconciler.config.settings import BY_NAME, FIELDS, Settings, lease_timing_problem
from reconciler.errors import PermanentError
from reconciler.spec.weightpolicy import RuleError, policy_from_settings


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
    for source, layer in layers:
        for name, raw in layer.items():
            if raw is None or (only is not None and name not in only):
                continue
            spec = BY_NAME.get(name)
            if spec is None:
                raise ConfigError(f"{source}: unknown setting {name!r}")
            values[name] = _parse(spec, raw, source)
    if (only is None or "repo" in only) and not values.get("repo"):
        where = " or 'repo' in the config file" if only is None else ""
        raise ConfigError(f"no Env repo: give --repo or RECONCILER_REPO{where}")
    settings = assemble(values)
    check(settings)
    return settings


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
