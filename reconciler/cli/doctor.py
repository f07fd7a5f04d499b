"""``reconciler doctor``: warn when Argo CD or Flux would undo the weights we set.

Reads the Argo CD Application (or the Flux Kustomization) that syncs an Env repo, finds
the traffic objects it applies (``status.resources`` / ``status.inventory``) plus any
``--weight-ref`` given, and checks each weight field against the operator's ignore
rules (``reconciler.cluster.drift``). Prints one line per problem, naming the object and
the field, and exits 1 when it found any, 0 when none, 2 when it could not check.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click

from reconciler import config
from reconciler.cli.settings import settings_from
from reconciler.cluster import drift
from reconciler.cluster.client import FIELD_MANAGER, Kube, KubeSettings, connect
from reconciler.cluster.handoff import ARGOCD_API, FLUX_KUSTOMIZE_API
from reconciler.cluster.patches import WeightFieldError, check_canary, is_ingress, weight_field
from reconciler.cluster.resources import ObjectRef, split_api_version
from reconciler.config.options import KUBERNETES
from reconciler.errors import ReconcilerError
from reconciler.spec.model import WeightObjRef

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
OPERATOR = ("argocd_application", "flux_kustomization")
"""The settings naming what doctor checks (exactly one of them)."""


def _namespaced(value: str, option: str) -> tuple[str, str]:
    namespace, _, name = value.rpartition("/")
    if not namespace or not name:
        raise click.BadParameter(f"expected NAMESPACE/NAME, got {value!r}", param_hint=option)
    return namespace, name


def _weight_ref(value: str) -> WeightObjRef:
    """``API_VERSION,KIND,NAMESPACE/NAME,FIELDPATH`` (as in an experiment's weightObjRef)."""
    parts = value.split(",")
    if len(parts) != 4:  # noqa: PLR2004
        raise click.BadParameter(
            f"expected API_VERSION,KIND,NAMESPACE/NAME,FIELDPATH, got {value!r}",
            param_hint="--weight-ref",
        )
    api_version, kind, where, path = parts
    namespace, name = _namespaced(where, "--weight-ref")
    return WeightObjRef(api_version, kind, name, path, namespace)


def managed_from_ref(ref: WeightObjRef) -> drift.Managed:
    """The field a ``weightObjRef`` makes the reconciler set."""
    group, _ = split_api_version(ref.api_version)
    field = weight_field(ref)
    return drift.Managed(group, ref.kind, ref.namespace, ref.name, field.steps)


def _managed_kind(
    kube: Kube, namespace: str, name: str, group: str, kind: str
) -> list[drift.Managed]:
    weighted = drift.weighted_kind(group, kind)
    if weighted is None:
        return []
    if kind == "Ingress":
        ingress = kube.get(ObjectRef(f"{group}/v1", kind, name, namespace))
        try:
            check_canary(ingress or {}, name)
        except WeightFieldError:
            return []  # not a canary: the reconciler never weights it
    return [drift.Managed(group, kind, namespace or None, name, p) for p in weighted.paths]


def diagnose_argocd(
    kube: Kube, app_ref: ObjectRef, refs: list[WeightObjRef], field_manager: str
) -> tuple[list[drift.Managed], list[drift.Finding]]:
    """Fields to protect and the problems of the Application ``app_ref``."""
    app = kube.get(app_ref)
    if app is None:
        raise click.ClickException(f"{app_ref} does not exist")
    managed = [m for r in drift.argocd_resources(app) for m in _managed_kind(kube, *r)]
    managed += [managed_from_ref(r) for r in refs]
    return managed, drift.argocd_findings(app, managed, field_manager)


def diagnose_flux(
    kube: Kube, kustomization_ref: ObjectRef, refs: list[WeightObjRef]
) -> tuple[list[drift.Managed], list[drift.Finding]]:
    """Fields to protect and the problems of the objects a Kustomization applies."""
    kustomization = kube.get(kustomization_ref)
    if kustomization is None:
        raise click.ClickException(f"{kustomization_ref} does not exist")
    by_object: dict[ObjectRef, list[drift.Managed]] = {}
    for namespace, name, group, kind in drift.flux_inventory(kustomization):
        found = _managed_kind(kube, namespace, name, group, kind)
        if found:
            version = _served_version(kube, group, kind)
            by_object.setdefault(ObjectRef(version, kind, name, namespace or None), []).extend(
                found
            )
    for ref in refs:
        target = ObjectRef(ref.api_version, ref.kind, ref.name, ref.namespace)
        by_object.setdefault(target, []).append(managed_from_ref(ref))
    managed: list[drift.Managed] = []
    findings: list[drift.Finding] = []
    for target, fields in by_object.items():
        managed += fields
        obj = kube.get(target)
        if obj is None:
            continue  # nothing to undo yet; Flux creates it as Git says
        findings += drift.flux_findings(obj, fields)
    return managed, findings


def _served_version(kube: Kube, group: str, kind: str) -> str:
    """An apiVersion that serves ``kind`` (Flux's inventory names the group only)."""
    candidates = {
        "networking.istio.io": ("v1", "v1beta1"),
        "gateway.networking.k8s.io": ("v1", "v1beta1"),
        "serving.knative.dev": ("v1",),
        "split.smi-spec.io": ("v1alpha4", "v1alpha3", "v1alpha2"),
        "networking.k8s.io": ("v1",),
    }
    last: ReconcilerError | None = None
    for version in candidates.get(group, ("v1",)):
        try:
            kube.resource(f"{group}/{version}", kind)
        except ReconcilerError as exc:
            last = exc
            continue
        return f"{group}/{version}"
    raise last or click.ClickException(f"no served version of {kind}.{group}")


@click.command()
@config.with_settings(OPERATOR, KUBERNETES)
@click.option(
    "--weight-ref",
    "weight_refs",
    multiple=True,
    metavar="API_VERSION,KIND,NAMESPACE/NAME,FIELDPATH",
    help="A weight the reconciler sets, as an experiment's weightObjRef says (repeatable).",
)
@click.option("--field-manager", default=FIELD_MANAGER, show_default=True)
def doctor(**options: Any) -> None:  # noqa: ANN401 - click passes options
    """Warn when Argo CD or Flux would undo the weights the reconciler sets.

    Exit status: 0 no problem found, 1 problems found, 2 could not check.
    """
    settings = settings_from(options, OPERATOR, KUBERNETES)
    app, kustomization = settings.gitops.argocd_application, settings.gitops.flux_kustomization
    if bool(app) == bool(kustomization):
        raise click.UsageError("give exactly one of --argocd-application, --flux-kustomization")
    refs = [_weight_ref(v) for v in options["weight_refs"]]
    try:
        for ref in refs:
            if is_ingress(ref):
                weight_field(ref)
        kube = connect(
            replace(
                KubeSettings.from_settings(settings.kubernetes),
                field_manager=options["field_manager"],
            )
        )
        if app:
            namespace, name = _namespaced(app, "--argocd-application")
            subject = ObjectRef(ARGOCD_API, "Application", name, namespace)
            managed, findings = diagnose_argocd(kube, subject, refs, options["field_manager"])
        else:
            namespace, name = _namespaced(kustomization or "", "--flux-kustomization")
            subject = ObjectRef(FLUX_KUSTOMIZE_API, "Kustomization", name, namespace)
            managed, findings = diagnose_flux(kube, subject, refs)
    except (ReconcilerError, WeightFieldError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"doctor: cannot check: {message}", err=True)
        sys.exit(EXIT_ERROR)
    if not managed:
        click.echo(
            f"doctor: {subject} applies no traffic object the reconciler weights "
            "(nothing to check; name weights with --weight-ref)"
        )
        sys.exit(EXIT_OK)
    for finding in findings:
        click.echo(f"problem: {finding}")
    if findings:
        click.echo(f"doctor: {len(findings)} problem(s) found for {subject}")
        sys.exit(EXIT_PROBLEMS)
    fields = ", ".join(f"{m} {m.field}" for m in managed)
    click.echo(f"doctor: ok: {subject} leaves the reconciler's fields alone ({fields})")
    sys.exit(EXIT_OK)
