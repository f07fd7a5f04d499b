"""How a setting is declared: once, on the dataclass field that holds it.

``setting(...)`` is ``dataclasses.field`` with the setting's flat name (its flag
``--prometheus-url`` and environment variable ``RECONCILER_PROMETHEUS_URL`` come from it),
its key in the YAML config file, how its text is parsed, and its help. ``declared(Settings)``
walks the groups of ``Settings`` and returns one ``Field`` per setting, the table that the
sources, the CLI's options and the error messages all read. ``Limits`` (pure, in
``reconciler.spec``) declares only its help; its settings follow one rule: the field's name,
under ``limits.`` in the file with the name in camelCase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

ENV_PREFIX = "RECONCILER_"
KINDS = frozenset({"str", "path", "int", "float", "bool", "list", "map"})
_META = "setting"
ENTRIES = "entries"
"""Metadata marking a field of ``Settings`` that holds whole entries, not one setting."""


@dataclass(frozen=True)
class Field:
    """One setting: where it lives in the file and in ``Settings``, how it is parsed."""

    name: str
    """Flat name: the flag and the environment variable are made from it."""
    file_path: tuple[str, ...]
    kind: str
    """``str``, ``path``, ``int``, ``float``, ``bool``, ``list`` of str, ``map`` str to str."""
    help: str
    group: str | None = None
    """The attribute of ``Settings`` holding it (None: ``Settings`` itself)."""
    attr: str = ""
    """Its attribute in that group."""
    aliases: tuple[str, ...] = ()
    """Further flags accepted for it (names other commands used before they shared it)."""
    default: Any = None

    @property
    def env(self) -> str:
        """Its environment variable."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """Its command-line flag."""
        return "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """Its key in the config file, dotted (``prometheus.url``)."""
        return ".".join(self.file_path)

    def value(self, settings: object) -> Any:  # noqa: ANN401 - any setting's type
        """Its value in ``settings``."""
        holder = settings if self.group is None else getattr(settings, self.group)
        return getattr(holder, self.attr)


def setting(
    name: str,
    key: str,
    kind: str,
    help: str,  # noqa: A002 - click's word for it
    *,
    default: Any = MISSING,  # noqa: ANN401
    default_factory: Callable[[], Any] | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:  # noqa: ANN401 - a dataclass field, typed by its annotation
    """A dataclass field that is a setting (``key`` dotted: ``leaderElection.enabled``)."""
    if kind not in KINDS:
        raise ValueError(f"setting {name}: unknown kind {kind}")
    meta = {_META: (name, tuple(key.split(".")), kind, help, aliases)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def declared(settings_type: type) -> tuple[Field, ...]:
    """Every setting of ``settings_type``, in declaration order, groups walked."""
    found: list[Field] = []
    for top in fields(settings_type):
        if top.metadata.get(ENTRIES):
            continue
        if _META in top.metadata:
            found.append(_field(top, None))
            continue
        group = top.default_factory
        if group is MISSING:
            raise TypeError(f"{top.name}: a group of settings needs default_factory")
        found.extend(
            _field(inner, top.name) if _META in inner.metadata else _rule(inner, top)
            for inner in fields(group)  # type: ignore[arg-type]
        )
    names = [f.name for f in found]
    if len(set(names)) != len(names):
        raise TypeError(
            f"settings declared twice: {sorted({n for n in names if names.count(n) > 1})}"
        )
    return tuple(found)


def _field(spec: Any, group: str | None) -> Field:  # noqa: ANN401 - dataclasses.Field
    name, path, kind, help_text, aliases = spec.metadata[_META]
    return Field(name, path, kind, help_text, group, spec.name, aliases, _default(spec))


def _rule(spec: Any, group: Any) -> Field:  # noqa: ANN401 - dataclasses.Field
    """A field of a pure group (``Limits``): named as the field, ``int``, help from metadata."""
    if "help" not in spec.metadata:
        raise TypeError(f"{group.name}.{spec.name}: declare it with setting() or a help text")
    head, *rest = spec.name.split("_")
    key = head + "".join(part.capitalize() for part in rest)
    return Field(
        spec.name,
        (group.name, key),
        "int",
        spec.metadata["help"],
        group.name,
        spec.name,
        (),
        _default(spec),
    )


def _default(spec: Any) -> Any:  # noqa: ANN401 - dataclasses.Field
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    return None
