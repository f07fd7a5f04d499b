"""The settings of ``reconciler run``, grouped by concern, each declared once on its field.

A group is what one part of the process is built from: the Env repo (``repo``), the Git
credentials, Prometheus, Kubernetes, the HTTP server, leader election, the GitOps operator,
logging, notifications and the loaders' limits. Each adapter takes its group (``PrometheusConfig.
from_settings(settings.prometheus)``), so a setting's name, file key, default and help live
here only. The file keys and flat names (flags, environment variables) are the ones the
product has always read; the groups only organise them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.config.declare import ENTRIES, Field, declared, setting
from reconciler.ports import DEFAULT_STATE_BRANCH
from reconciler.spec.limits import Limits


@dataclass(frozen=True)
class RepoSettings:
    """The Env repo, how often it is fetched, and who the reconciler's commits are by."""

    url: str = setting(
        "repo", "repo", "str", "The Env repo: a URL libgit2 speaks or a local path.", default=""
    )
    main_branch: str = setting(
        "main_branch", "mainBranch", "str", "Branch the GitOps operator syncs.", default="main"
    )
    state_branch: str = setting(
        "state_branch", "stateBranch", "str", "Orphan state branch.", default=DEFAULT_STATE_BRANCH
    )
    experiment_paths: tuple[str, ...] = setting(
        "experiment_paths",
        "experimentPaths",
        "list",
        "Directories of main searched for experiment and metric files (repeatable).",
        default=(".",),
    )
    cache_dir: Path = setting(
        "cache_dir",
        "cacheDir",
        "path",
        "Where the bare cache of the Env repo lives (an emptyDir in a pod).",
        default=Path("/tmp/reconciler-cache"),  # noqa: S108 - an emptyDir in the pod
    )
    interval: float = setting(
        "interval", "interval", "float", "Seconds between fetches of the Env repo.", default=30.0
    )
    author_name: str = setting(
        "author_name", "author.name", "str", "Commit author name.", default="gitops-reconciler"
    )
    author_email: str = setting(
        "author_email",
        "author.email",
        "str",
        "Commit author e-mail.",
        default="gitops-reconciler@localhost",
    )

    allowed_signers_file: Path | None = setting(
        "allowed_signers_file",
        "approval.allowedSignersFile",
        "path",
        "SSH allowed-signers file (ssh-keygen's format, as git's gpg.ssh.allowedSignersFile) "
        "whose keys may sign approvals of experiments with spec.approval.requireSigned.",
        default=None,
    )

    @property
    def author(self) -> tuple[str, str]:
        """(name, e-mail) of the reconciler's commits."""
        return self.author_name, self.author_email

    @property
    def paths(self) -> tuple[str, ...]:
        """``experiment_paths`` as tree paths (``.`` and ``/`` are the root, ``""``)."""
        return tuple("" if p in {".", "/"} else p for p in self.experiment_paths)


@dataclass(frozen=True)
class CredentialSettings:
    """Where the Git secrets and trust anchors are (files, never content)."""

    token_file: Path | None = setting(
        "token_file",
        "credentials.tokenFile",
        "path",
        "File holding the HTTPS token (a mounted Secret).",
        default=None,
    )
    username: str = setting(
        "username",
        "credentials.username",
        "str",
        "HTTPS user name sent with the token.",
        default="x-access-token",
    )
    ssh_key_file: Path | None = setting(
        "ssh_key_file", "credentials.sshKeyFile", "path", "SSH private key file.", default=None
    )
    known_hosts_file: Path | None = setting(
        "known_hosts_file",
        "credentials.knownHostsFile",
        "path",
        "known_hosts file with the SSH server's host key.",
        default=None,
    )
    ca_file: Path | None = setting(
        "ca_file", "credentials.caFile", "path", "Extra CA bundle for HTTPS to Git.", default=None
    )

    @property
    def configured(self) -> bool:
        """Whether any secret or trust anchor is named (a username alone is not)."""
        return any((self.token_file, self.ssh_key_file, self.known_hosts_file, self.ca_file))


@dataclass(frozen=True)
class PrometheusSettings:
    """Where Prometheus is and how to ask it."""

    url: str | None = setting(
        "prometheus_url", "prometheus.url", "str", "Prometheus base URL.", default=None
    )
    token_file: Path | None = setting(
        "prometheus_token_file",
        "prometheus.tokenFile",
        "path",
        "File holding a bearer token for Prometheus (read before every query).",
        default=None,
        aliases=("--prometheus-bearer-token-file",),
    )
    ca_file: Path | None = setting(
        "prometheus_ca_file", "prometheus.caFile", "path", "CA bundle for Prometheus.", default=None
    )
    timeout: float = setting(
        "prometheus_timeout",
        "prometheus.timeout",
        "float",
        "Seconds before a Prometheus query counts as failed.",
        default=10.0,
    )
    headers: Mapping[str, str] = setting(
        "prometheus_headers",
        "prometheus.headers",
        "map",
        "Extra HTTP header for Prometheus, NAME=VALUE or 'NAME: VALUE' (repeatable; in the "
        "environment: comma- or newline-separated).",
        default_factory=dict,
        aliases=("--prometheus-header",),
    )


@dataclass(frozen=True)
class KubernetesSettings:
    """The API server, and what the reconciler may write there."""

    kubeconfig: Path | None = setting(
        "kubeconfig",
        "kubernetes.kubeconfig",
        "path",
        "kubeconfig file (default: in-cluster configuration).",
        default=None,
    )
    context: str | None = setting(
        "kube_context",
        "kubernetes.context",
        "str",
        "kubeconfig context.",
        default=None,
        aliases=("--context",),
    )
    namespace: str | None = setting(
        "namespace",
        "kubernetes.namespace",
        "str",
        "Namespace of the reconciler's own objects (Leases).",
        default=None,
    )
    events: bool = setting(
        "events",
        "kubernetes.events",
        "bool",
        "Record a Kubernetes Event on the target for each transition.",
        default=True,
    )
    weight_namespaces: tuple[str, ...] = setting(
        "weight_namespaces",
        "kubernetes.weightNamespaces",
        "list",
        "Namespaces whose traffic objects experiments may weight ('*': any); unset: the "
        "Argo CD Application's destination namespace or the Flux Kustomization's "
        "targetNamespace, else the reconciler's own namespace (repeatable).",
        default=(),
    )
    weight_fields: tuple[str, ...] = setting(
        "weight_fields",
        "kubernetes.weightFields",
        "list",
        "Extra weight fields beside the known traffic kinds', as GROUP/VERSION/KIND:FIELDPATH "
        "('*' for any version, '[*]' for any index; core group: VERSION/KIND:FIELDPATH) "
        "(repeatable).",
        default=(),
    )


@dataclass(frozen=True)
class ServerSettings:
    """The HTTP server of /metrics, /healthz, /readyz and /webhook."""

    listen: str = setting(
        "listen",
        "listen",
        "str",
        "HOST:PORT of /metrics, /healthz, /readyz and /webhook.",
        default="0.0.0.0:8080",
    )
    webhook_secret_file: Path | None = setting(
        "webhook_secret_file",
        "webhook.secretFile",
        "path",
        "Shared secret for GitHub/GitLab push webhooks (none: /webhook is off).",
        default=None,
    )
    read_timeout: float = setting(
        "http_read_timeout",
        "http.readTimeout",
        "float",
        "Seconds an HTTP client has to send a whole request (and to take each write of the "
        "answer); a slower one is answered 408 and closed.",
        default=10.0,
    )
    max_connections: int = setting(
        "http_max_connections",
        "http.maxConnections",
        "int",
        "HTTP connections served at once, a thread each; more wait in the listen queue.",
        default=32,
    )

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port)."""
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)  # noqa: S104 - a pod listens on all addresses


@dataclass(frozen=True)
class LeaderElectionSettings:
    """One Lease per Env repo, so only one replica acts on it (client-go's timings)."""

    enabled: bool = setting(
        "leader_election",
        "leaderElection.enabled",
        "bool",
        "Hold a Lease per Env repo so only one replica acts on it.",
        default=False,
    )
    lease_duration: float = setting(
        "lease_duration",
        "leaderElection.leaseDuration",
        "float",
        "Seconds a Lease is valid without renewal.",
        default=15.0,
    )
    renew_deadline: float = setting(
        "renew_deadline",
        "leaderElection.renewDeadline",
        "float",
        "Seconds within which the holder must renew, or stop acting.",
        default=10.0,
    )
    retry_period: float = setting(
        "retry_period",
        "leaderElection.retryPeriod",
        "float",
        "Seconds between Lease attempts.",
        default=2.0,
    )


@dataclass(frozen=True)
class GitOpsSettings:
    """The operator that applies main (at most one of Argo CD and Flux)."""

    argocd_application: str | None = setting(
        "argocd_application",
        "gitops.argocdApplication",
        "str",
        "namespace/name of the Argo CD Application syncing the Env repo.",
        default=None,
    )
    flux_kustomization: str | None = setting(
        "flux_kustomization",
        "gitops.fluxKustomization",
        "str",
        "namespace/name of the Flux Kustomization applying the Env repo.",
        default=None,
    )
    flux_gitrepository: str | None = setting(
        "flux_gitrepository",
        "gitops.fluxGitRepository",
        "str",
        "namespace/name of the Flux GitRepository fetching the Env repo.",
        default=None,
    )
    sync_timeout: float = setting(
        "sync_timeout",
        "gitops.syncTimeout",
        "float",
        "Seconds to wait for the GitOps operator to sync an outcome commit.",
        default=120.0,
    )


@dataclass(frozen=True)
class LogSettings:
    """How the process logs."""

    json: bool = setting(
        "log_json",
        "log.json",
        "bool",
        "Log JSON lines (false: readable console output).",
        default=True,
    )
    level: str = setting(
        "log_level", "log.level", "str", "debug, info, warning or error.", default="info"
    )


@dataclass(frozen=True)
class NotifySettings:
    """Who hears of each transition (``reconciler.notify``): secrets in files, never here."""

    apprise_urls_file: Path | None = setting(
        "notify_apprise_urls_file",
        "notify.appriseUrlsFile",
        "path",
        "File of Apprise URLs, one a line (# comments): Slack, Microsoft Teams, Discord, Google "
        "Chat, e-mail, json:// ... each a notification target. The URLs carry tokens: mount the "
        "file from a Secret.",
        default=None,
    )
    webhook_url: str | None = setting(
        "notify_webhook_url",
        "notify.webhookUrl",
        "str",
        "URL that each event is POSTed to as JSON, with X-Rollout-Event-Id (the state commit).",
        default=None,
    )
    webhook_secret_file: Path | None = setting(
        "notify_webhook_secret_file",
        "notify.webhookSecretFile",
        "path",
        "File holding the key of the webhook's X-Rollout-Signature header (sha256=<hex>, "
        "HMAC-SHA256 of the body, as GitHub signs); read at each send.",
        default=None,
    )
    events: tuple[str, ...] = setting(
        "notify_events",
        "notify.events",
        "list",
        "Events sent (repeatable; none given: all): started, step, awaiting-approval, paused, "
        "resumed, aborted, promoted, rolled-back, drift-corrected, outcome-push-failed.",
        default=(),
    )
    timeout: float = setting(
        "notify_timeout",
        "notify.timeout",
        "float",
        "Seconds one delivery attempt may wait to connect, and for each read of the answer.",
        default=10.0,
    )
    git_web_url: str | None = setting(
        "git_web_url",
        "gitWebURL",
        "str",
        "Web page of an Env repo commit, {commit} standing for its id "
        "(https://github.com/org/env/commit/{commit}): notifications link the state commit.",
        default=None,
    )


@dataclass(frozen=True)
class LoadSettings:
    """Where the built-in load (``reconciler.load``) may send, and how much at most."""

    allowed_namespaces: tuple[str, ...] = setting(
        "load_allowed_namespaces",
        "load.allowedNamespaces",
        "list",
        "Namespaces whose Services an experiment's built-in load may target besides its own "
        "('*': any; unset: only the experiment's own namespace) (repeatable).",
        default=(),
    )
    max_qps_per_experiment: float = setting(
        "load_max_qps_per_experiment",
        "load.maxQpsPerExperiment",
        "float",
        "Requests a second one experiment's built-in load may send, summed over its versions.",
        default=100.0,
    )
    max_qps_total: float = setting(
        "load_max_qps_total",
        "load.maxQpsTotal",
        "float",
        "Requests a second the built-in load of all experiments together may send.",
        default=1000.0,
    )
    max_payload_bytes: int = setting(
        "load_max_payload_bytes",
        "load.maxPayloadBytes",
        "int",
        "Largest request body (inline or a file of the Env repo) the built-in load sends.",
        default=1 << 20,
    )
    max_connections: int = setting(
        "load_max_connections",
        "load.maxConnections",
        "int",
        "Most parallel connections the built-in load opens to one version.",
        default=16,
    )
    resolve: tuple[str, ...] = setting(
        "load_resolve",
        "load.resolve",
        "list",
        "NAME=HOST:PORT: send the built-in load for Service host NAME to the IP address HOST "
        "at PORT instead of resolving it, and trust that address (for tests and air-gapped "
        "set-ups only: the loopback and link-local checks do not apply to it) (repeatable).",
        default=(),
    )


@dataclass(frozen=True)
class FleetSettings:
    """Many Env repos in one process: its workers, its bound, and discovery from the cluster."""

    workers: int = setting(
        "fleet_workers",
        "fleet.workers",
        "int",
        "Threads that tick Env repos at once; a repo whose Git server hangs holds one. "
        "Enough keep every repo on its interval: repos x tick seconds / interval.",
        default=8,
    )
    max_repos: int = setting(
        "fleet_max_repos",
        "fleet.maxRepos",
        "int",
        "At most this many Env repos (listed and discovered); the rest are refused and named.",
        default=500,
    )
    git_timeout: float = setting(
        "git_timeout",
        "gitTimeout",
        "float",
        "Seconds a Git server may stay silent (connecting, or in a fetch or push) before the "
        "operation fails and is retried at the repo's next tick: a hanging server holds a "
        "worker no longer than this.",
        default=30.0,
    )
    discovery: bool = setting(
        "discovery",
        "discovery.enabled",
        "bool",
        "Serve every Argo CD Application and Flux GitRepository annotated "
        "reconciler.gitops.io/enabled=true as an Env repo.",
        default=False,
    )
    discovery_interval: float = setting(
        "discovery_interval",
        "discovery.interval",
        "float",
        "Seconds between two listings of the annotated Applications and GitRepositories.",
        default=60.0,
    )


@dataclass(frozen=True)
class Settings:
    """The validated configuration: one group per concern (see each group's fields)."""

    repo: RepoSettings = field(default_factory=RepoSettings)
    credentials: CredentialSettings = field(default_factory=CredentialSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    gitops: GitOpsSettings = field(default_factory=GitOpsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    load: LoadSettings = field(default_factory=LoadSettings)
    limits: Limits = field(default_factory=Limits)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    failpoints: tuple[str, ...] = setting(
        "failpoints",
        "failpoints",
        "list",
        "Step boundaries where the process exits hard (crash tests only): after-fetch, "
        "after-state-push, after-weights, after-main-push, after-outcome-record, "
        "after-cleanup-push.",
        default=(),
    )
    repos: tuple[Settings, ...] = field(default=(), metadata={ENTRIES: True})
    """The Env repos of the config file's ``repos:`` list, each with every setting resolved
    (its entry over the global ones); empty when the process serves ``repo`` alone."""

    def served(self) -> tuple[Settings, ...]:
        """The settings of each Env repo this configuration names (discovery aside)."""
        if self.repos:
            return self.repos
        return (self,) if self.repo.url else ()


FIELDS: tuple[Field, ...] = declared(Settings)
"""Every setting, in declaration order (the CLI's options and ``--help`` follow it)."""
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
LIMIT_SETTINGS = tuple(f.name for f in FIELDS if f.group == "limits")


def describe(name: str) -> str:
    """How messages name a setting: its flag and file key (``--ca-file / credentials.caFile``)."""
    spec = BY_NAME[name]
    return f"{spec.flag} / {spec.key}"


RESTART_ONLY = (
    "leader_election",
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "namespace",
    "listen",
    "http_read_timeout",
    "http_max_connections",
    "webhook_secret_file",
    "fleet_workers",
    "cache_dir",
)
"""Settings a running process cannot change: the Leases, the worker pool, the caches and the
HTTP server are made from them once. A reload that changes one is refused as a whole (the
Env repos themselves, ``repo`` and ``repos:``, change without a restart)."""

PROCESS_WIDE = frozenset(
    {"kubeconfig", "kube_context", "namespace", "cache_dir", "failpoints"}
    | {f.name for f in FIELDS if f.group in {"server", "leader_election", "log", "load", "fleet"}}
)
"""Settings of the process, not of one Env repo: an entry of ``repos:`` cannot set them."""


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The ``RESTART_ONLY`` settings that differ between ``old`` and ``new`` (flag / file key)."""
    return [
        describe(name)
        for name in RESTART_ONLY
        if BY_NAME[name].value(old) != BY_NAME[name].value(new)
    ]


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
