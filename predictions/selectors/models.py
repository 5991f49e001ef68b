"""Reads of the risk-model pages and the chart.

Who sees the pages: registry admins, monitors and investigators (MODEL_PAGE_ROLES); anyone else
is refused. Pooled figures are registry-wide; a per-site row names a hospital, so it is shown
only to those who see that site's rows (admins all, a monitor their sites, an investigator
none): another site's row does not exist for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from predictions.ml.definitions import DEFINITIONS, RiskModelDefinition
from predictions.models import Alias, AliasMove, ModelVersion, RiskScore, TrainingRun
from registry import access, limits
from registry.models import Cycle, Patient, Role, Site
from registry.views.common import MAX_ID

MODEL_PAGE_ROLES = frozenset({Role.ADMIN, Role.MONITOR, Role.INVESTIGATOR})
RECENT_RUNS = 10


def models_page_access(user: User | AnonymousUser) -> None:
    """Refuse (403) a user without a role that reads the risk-model pages."""
    if not access.user_roles(user) & MODEL_PAGE_ROLES:
        raise PermissionDenied("The risk-model pages are for registry admins, monitors and "
                               "investigators.")


def risk_model_access(user, name: str) -> RiskModelDefinition:
    models_page_access(user)
    if name not in DEFINITIONS:
        raise Http404("No such risk model.")
    return DEFINITIONS[name]


def version_access(user, name: str, number: int) -> ModelVersion:
    risk_model_access(user, name)
    if number > limits.VERSION_MAX:
        raise Http404("No such model version.")
    version = (ModelVersion.objects.select_related("training_run")
               .filter(risk_model=name, number=number).first())
    if version is None:
        raise Http404("No such model version.")
    return version


def run_access(user, run_id: int) -> TrainingRun:
    models_page_access(user)
    run = TrainingRun.objects.filter(pk=run_id).first() if run_id <= MAX_ID else None
    if run is None:
        raise Http404("No such training run.")
    return run


@dataclass
class RiskModelRow:
    definition: RiskModelDefinition
    champion: ModelVersion | None
    latest: ModelVersion | None
    versions: int


def risk_models_overview() -> list[RiskModelRow]:
    champions = {a.risk_model: a.version for a in Alias.objects.select_related("version")}
    rows = []
    for name, definition in DEFINITIONS.items():
        versions = ModelVersion.objects.filter(risk_model=name)
        rows.append(RiskModelRow(definition, champions.get(name), versions.first(),
                                 versions.count()))
    return rows


def runs_recent() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.all()[:RECENT_RUNS]


def versions_of(name: str) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(risk_model=name).select_related("promotion_check")


def alias_moves(name: str) -> QuerySet[AliasMove]:
    return AliasMove.objects.filter(risk_model=name).select_related(
        "from_version", "to_version", "moved_by")


def champion_number(name: str) -> int | None:
    alias = Alias.objects.filter(risk_model=name).select_related("version").first()
    return alias.version.number if alias else None


def per_site_visible(user, version: ModelVersion) -> list[dict]:
    """The version's per-site rows for the sites the user sees."""
    ids = access.site_ids_for(user)
    if ids is None:
        return list(version.per_site)
    codes = set(Site.objects.filter(pk__in=ids).values_list("code", flat=True))
    return [row for row in version.per_site if row.get("site") in codes]


# --- The chart ---------------------------------------------------------------------------------

@dataclass
class ChartScore:
    score: RiskScore
    stale: bool


def upcoming_cycle(patient: Patient) -> Cycle | None:
    """The cycle the chart scores: the patient's latest (by start date, then line and cycle)."""
    return (Cycle.objects.filter(patient=patient).select_related("line")
            .order_by("-start_date", "-line__line_no", "-cycle_no", "-pk").first())


# The record kinds a cycle's features read (follow-ups are not read).
_INPUT_MODELS = ("Patient", "Diagnosis", "TreatmentLine", "Cycle", "DrugAdministration",
                 "AdverseEvent", "LabResult")


def inputs_changed_after(patient: Patient, moment) -> bool:
    """Whether any record the features read was written, changed or deleted after `moment`
    (from the audit trail, which records deletions too)."""
    from django.apps import apps

    for name in _INPUT_MODELS:
        history = apps.get_model("registry", name).history.model.objects
        rows = history.filter(id=patient.pk) if name == "Patient" else history.filter(
            patient_id=patient.pk)
        if rows.filter(history_date__gt=moment).exists():
            return True
    return False


def chart_scores(patient: Patient) -> tuple[Cycle | None, list[ChartScore]]:
    """The upcoming cycle and its scores (one per risk model scored), each marked stale when
    the patient's records changed after its inputs were read."""
    cycle = upcoming_cycle(patient)
    if cycle is None:
        return None, []
    scores = list(RiskScore.objects.filter(cycle=cycle).select_related("version")
                  .order_by("risk_model"))
    return cycle, [ChartScore(s, inputs_changed_after(patient, s.inputs_as_of)) for s in scores]
