"""How much of the Env repo the loaders agree to read: the limits on hostile or careless input.

A file on main is data anyone with commit rights wrote; without bounds, one file can cost a
tick minutes and gigabytes (a 50 MB file, 100,000 empty documents, a 1.7 KB alias bomb that
renders as 2 GB). ``Limits`` holds every bound the experiment and Metric loaders and
discovery apply; its defaults are the documented ones, and each field's ``help`` makes it a
setting of ``reconciler.config`` of the same name (``--max-file-bytes``,
``RECONCILER_MAX_FILE_BYTES``, ``limits.maxFileBytes``). ``exceeded`` words the error every
limit gives: what was found, the limit, and the setting that raises it. Pure: no I/O, no
configuration read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["Limits", "exceeded", "setting"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one file (and one repository) may hold before it is refused unread."""

    max_file_bytes: int = field(
        default=1024 * 1024, metadata={"help": "Bytes in one experiment or Metric file."}
    )
    """Bytes in one experiment or Metric file (1 MiB); a larger file is not parsed."""
    max_documents_per_file: int = field(
        default=100, metadata={"help": "YAML documents in one experiment or Metric file."}
    )
    """YAML documents (``---``) in one experiment or Metric file."""
    max_experiment_files: int = field(
        default=10_000,
        metadata={
            "help": "Experiment files read from the Env repo (those of live experiments first)."
        },
    )
    """Files with a ``kind: Experiment`` line in the watched paths of one Env repo (the scale
    the reconciler is benchmarked at); the files past it, in path order with the files of
    live experiments first, are reported and not read."""
    max_aliases: int = field(default=200, metadata={"help": "YAML alias uses in one file."})
    """Alias uses (``*name``) in one file."""
    max_alias_nodes: int = field(
        default=10_000,
        metadata={"help": "Nodes YAML aliases may add to one document once expanded."},
    )
    """Nodes aliases add to one document once expanded (what an alias bomb multiplies)."""
    max_nesting_depth: int = field(
        default=64, metadata={"help": "Nesting of mappings and lists in one YAML document."}
    )
    """Nesting of mappings and lists in one document."""

    def __post_init__(self) -> None:
        """Every limit is a positive integer."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                message = f"{spec.name} must be a positive integer, got {value!r}"
                raise ValueError(message)


def setting(name: str) -> str:
    """How a user sets limit ``name``: flag, environment variable and config file key.

    Follows ``reconciler.config``'s rule for every setting (a test keeps the two equal).
    """
    head, *rest = name.split("_")
    key = head + "".join(part.capitalize() for part in rest)
    return f"--{name.replace('_', '-')}, RECONCILER_{name.upper()} or limits.{key}"


def exceeded(name: str, found: str, limits: Limits) -> str:
    """The message for limit ``name`` broken: ``found`` says what the input holds."""
    value = getattr(limits, name)
    return f"{found}, over the limit of {value:,} ({name}; raise it with {setting(name)})"
