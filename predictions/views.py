"""The risk-model pages: the models, their versions (ROC and calibration plots, per-site
table, candidates, the promotion verdict), the model card, the champion's moves, training
runs; and the registry admin's forms to move the champion and to train now.

Registry admins, monitors and investigators read them (others get 403); a per-site row shows
only to those who see the site; moving the champion and training are the admin's.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from predictions import labels, plots
from predictions.forms import ChampionMoveForm
from predictions.ml.definitions import DEFINITIONS
from predictions.models import TrainingRun
from predictions.selectors.models import (
    alias_moves,
    champion_number,
    models_page_access,
    per_site_visible,
    risk_model_access,
    risk_models_overview,
    run_access,
    runs_recent,
    version_access,
    versions_of,
)
from predictions.services.training import training_run_request
from predictions.services.versions import champion_move
from registry import access
from registry.errors import RegistryError


@login_required
def model_list(request: HttpRequest) -> HttpResponse:
    models_page_access(request.user)
    rows = [(row, labels.label(labels.RISK_MODEL_LABELS, row.definition.name))
            for row in risk_models_overview()]
    return render(request, "predictions/model_list.html", {
        "rows": rows, "runs": runs_recent(),
        "is_admin": access.is_registry_admin(request.user)})


@login_required
def model_detail(request: HttpRequest, risk_model: str, form: ChampionMoveForm | None = None
                 ) -> HttpResponse:
    definition = risk_model_access(request.user, risk_model)
    return render(request, "predictions/model_detail.html", {
        "definition": definition, "label": labels.label(labels.RISK_MODEL_LABELS, risk_model),
        "target": labels.label(labels.TARGET_LABELS, risk_model),
        "versions": versions_of(risk_model), "moves": alias_moves(risk_model),
        "champion": champion_number(risk_model),
        "is_admin": access.is_registry_admin(request.user),
        "form": form or ChampionMoveForm()}, status=400 if form is not None else 200)


def _version_context(request: HttpRequest, risk_model: str, number: int) -> dict:
    version = version_access(request.user, risk_model, number)
    metrics = version.metrics
    return {
        "version": version, "metrics": metrics,
        "label": labels.label(labels.RISK_MODEL_LABELS, risk_model),
        "target": labels.label(labels.TARGET_LABELS, risk_model),
        "algorithm": labels.label(labels.ALGORITHM_LABELS, version.algorithm),
        "candidates": [{**c, "label": labels.label(labels.ALGORITHM_LABELS, c["algorithm"])}
                       for c in version.candidates],
        "per_site": per_site_visible(request.user, version),
        "sites_total": len(version.per_site),
        "champion": champion_number(risk_model),
        "check": getattr(version, "promotion_check", None),
        "features": [labels.label(labels.FEATURE_LABELS, f)
                     for f in DEFINITIONS[risk_model].features],
    }


@login_required
def version_detail(request: HttpRequest, risk_model: str, number: int) -> HttpResponse:
    context = _version_context(request, risk_model, number)
    version = context["version"]
    context["roc_svg"] = plots.roc_svg(version.roc_curve, context["metrics"].get("loso_auroc"))
    context["calibration_svg"] = plots.calibration_svg(version.calibration_curve)
    return render(request, "predictions/version_detail.html", context)


@login_required
def model_card(request: HttpRequest, risk_model: str, number: int) -> HttpResponse:
    context = _version_context(request, risk_model, number)
    context["tiers"] = [(labels.label(labels.TIER_LABELS, (risk_model, t.key)),
                         labels.label(labels.ACTION_LABELS, t.action))
                        for t in DEFINITIONS[risk_model].tiers]
    return render(request, "predictions/model_card.html", context)


@login_required
@require_POST
def champion_move_view(request: HttpRequest, risk_model: str) -> HttpResponse:
    risk_model_access(request.user, risk_model)
    if not access.is_registry_admin(request.user):
        raise PermissionDenied("Only a registry admin moves the champion.")
    form = ChampionMoveForm(request.POST)
    if form.is_valid():
        try:
            move = champion_move(risk_model=risk_model,
                                 version_number=form.cleaned_data["version"],
                                 acting_user=request.user, reason=form.cleaned_data["reason"])
        except RegistryError as error:
            for field, problems in error.errors.items():
                for problem in problems:
                    form.add_error(None if field not in form.fields else field, problem)
        else:
            messages.success(request, _("Version %(n)d is now the champion; every cycle is "
                                        "being rescored.") % {"n": move.to_version.number})
            return redirect("predictions:model_detail", risk_model=risk_model)
    return model_detail(request, risk_model, form=form)


@login_required
@require_POST
def training_start(request: HttpRequest) -> HttpResponse:
    models_page_access(request.user)
    if not access.is_registry_admin(request.user):
        raise PermissionDenied("Only a registry admin starts a training run.")
    run = training_run_request(trigger=TrainingRun.Trigger.MANUAL, acting_user=request.user)
    messages.success(request, _("Training run %(n)d is queued; its progress is shown on its "
                                "page.") % {"n": run.pk})
    return redirect("predictions:run_detail", run_id=run.pk)


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_access(request.user, run_id)
    return render(request, "predictions/run_detail.html", {
        "run": run, "versions": run.versions.all()})
