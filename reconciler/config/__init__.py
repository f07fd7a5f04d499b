"""One configuration object, built once from flags, environment and file.

Every setting is declared once, on its field in ``settings`` (its flat name, from which its
flag ``--NAME`` and environment variable ``RECONCILER_<NAME>`` come, its place in the YAML
config file, its kind, default and help), in groups by concern. ``sources.build`` merges
the three sources (flags > environment > file > defaults) and validates the result;
``options`` makes every command's flags from the same declarations; adapters take their
group (``PrometheusConfig.from_settings(settings.prometheus)``).
"""

from reconciler.config.declare import ENV_PREFIX, Field
from reconciler.config.options import click_options, given, with_settings
from reconciler.config.repourl import repo_key
from reconciler.config.settings import (
    BY_NAME,
    FIELDS,
    LIMIT_SETTINGS,
    PROCESS_WIDE,
    RESTART_ONLY,
    CredentialSettings,
    FleetSettings,
    GitOpsSettings,
    KubernetesSettings,
    LeaderElectionSettings,
    LoadSettings,
    LogSettings,
    NotifySettings,
    PrometheusSettings,
    RepoSettings,
    ServerSettings,
    Settings,
    describe,
    lease_timing_problem,
    restart_needed,
)
from reconciler.config.sources import (
    REPOS_KEY,
    ConfigError,
    build,
    entry_settings,
    from_environment,
    read_file,
)

__all__ = [
    "BY_NAME",
    "ENV_PREFIX",
    "FIELDS",
    "LIMIT_SETTINGS",
    "PROCESS_WIDE",
    "REPOS_KEY",
    "RESTART_ONLY",
    "ConfigError",
    "CredentialSettings",
    "Field",
    "FleetSettings",
    "GitOpsSettings",
    "KubernetesSettings",
    "LeaderElectionSettings",
    "LoadSettings",
    "LogSettings",
    "NotifySettings",
    "PrometheusSettings",
    "RepoSettings",
    "ServerSettings",
    "Settings",
    "build",
    "click_options",
    "describe",
    "entry_settings",
    "from_environment",
    "given",
    "lease_timing_problem",
    "read_file",
    "repo_key",
    "restart_needed",
    "with_settings",
]
