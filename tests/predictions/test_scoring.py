"""Training on a small seeded cohort in process (train_models --sync --json), scores of every
cycle under the champion, on the chart with their tier, action and factors; stale after an
edit until the cycle is scored again; a save through the services rescored on commit."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.http import HttpRequest

from predictions.models import ModelVersion, RiskScore, TrainingRun
from predictions.receivers import rescore_changed_records
from predictions.services import versions as v
from predictions.tasks import score_cycles_task
from registry.audit import audited_save
from registry.models import Cycle, Patient
from registry.services.clinical import patient_update
from registry.signals import records_changed
from tests.conftest import persona_password

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary", "model_dir"),
              pytest.mark.django_db(transaction=True)]

CHAMPION_KEYS = {"algorithm", "version", "loso_auroc", "loso_auroc_ci", "brier",
                 "calibration_slope", "calibration_intercept", "e_avg"}


@pytest.fixture
def fast_training(settings):
    settings.RISK_MODEL_CANDIDATES = ["logistic_regression"]
    settings.RISK_MODEL_BOOTSTRAP = 20


@pytest.fixture
def seeded(fast_training):
    call_command("seed_demo", "--patients", "250", "--sites", "3", "--seed", "8",
                 stdout=io.StringIO())
    return Cycle.objects.count()


def _train() -> list[dict]:
    out = io.StringIO()
    call_command("train_models", "--sync", "--json", stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _both_champions(ada) -> None:
    """Champions for both risk models (a small cohort's version may miss the automatic rule:
    the admin promotes it, as the pages do)."""
    for name in ("cinv", "neutropenia"):
        if v.champion_of(name) is None:
            v.champion_move(risk_model=name, version_number=1, acting_user=ada,
                            reason="test cohort: promoted by hand")


def test_train_models_json_prints_the_documented_keys(seeded):
    lines = _train()
    assert [line["risk_model"] for line in lines] == ["cinv", "neutropenia"]
    for line in lines:
        assert set(line) == {"risk_model", "cycles", "events", "champion", "candidates",
                             "per_site"}
        assert line["cycles"] == seeded and 0 < line["events"] < seeded
        assert set(line["champion"]) == CHAMPION_KEYS
        assert line["champion"]["version"] == 1
        assert line["champion"]["algorithm"] == "logistic_regression"
        assert len(line["champion"]["loso_auroc_ci"]) == 2
        assert [set(c) for c in line["candidates"]] == [CHAMPION_KEYS]
        assert {tuple(sorted(s)) for s in line["per_site"]} == {("auroc", "ci", "events",
                                                                 "site")}
        assert len(line["per_site"]) == 3
    run = TrainingRun.objects.get()
    assert (run.status, run.progress, run.trigger) == ("done", 100, "manual")
    assert f"cinv: {seeded} cycles" in run.log and run.log.endswith("done\n")
    assert ModelVersion.objects.count() == 2
    assert all(ver.promotion_check for ver in ModelVersion.objects.all())


def test_scores_on_the_chart_go_stale_after_an_edit_until_rescored(client, seeded, ada):
    _train()
    _both_champions(ada)
    # The champion's moves rescored every cycle (the task ran eagerly after the commit).
    assert RiskScore.objects.filter(risk_model="cinv").count() == seeded
    assert RiskScore.objects.filter(risk_model="neutropenia").count() == seeded
    score = RiskScore.objects.filter(risk_model="cinv").first()
    assert 0 <= score.probability <= 1 and score.tier and score.action

    patient = Patient.objects.filter(cycles__isnull=False).order_by("pk").first()
    assert client.login(request=HttpRequest(), username="ada", password=persona_password("ada"))
    chart = client.get(f"/patients/{patient.registry_id}/")
    assert chart.status_code == 200
    assert "Risk for the upcoming cycle" in chart.text
    assert chart.text.count('class="risk-score"') == 2 and "stale:" not in chart.text
    upcoming = (Cycle.objects.filter(patient=patient)
                .order_by("-start_date", "-line__line_no", "-cycle_no").first())
    shown = RiskScore.objects.get(cycle=upcoming, risk_model="cinv")
    assert f"{100 * shown.probability:.1f}%" in chart.text
    assert shown.factors, "the upcoming cycle carries its main factors"

    # An edit the scoring has not seen yet (its task not run): the chart says stale.
    records_changed.disconnect(dispatch_uid="predictions.rescore_changed_records")
    try:
        upcoming.length_days = 28
        audited_save(upcoming, acting_user=ada, reason="planned as a 28-day cycle")
    finally:
        records_changed.connect(rescore_changed_records,
                                dispatch_uid="predictions.rescore_changed_records")
    chart = client.get(f"/patients/{patient.registry_id}/")
    assert chart.text.count("stale: the records changed after scoring") == 2
    assert client.get(f"/patients/{patient.registry_id}/",
                      HTTP_ACCEPT_LANGUAGE="zh-hans").status_code == 200

    assert score_cycles_task.delay([upcoming.pk]).get() == 2
    chart = client.get(f"/patients/{patient.registry_id}/")
    assert "stale:" not in chart.text and chart.text.count('class="risk-score"') == 2


def test_a_save_through_the_services_rescores_the_patients_cycles(seeded, ada):
    _train()
    _both_champions(ada)
    patient = Patient.objects.filter(cycles__isnull=False).order_by("pk").first()
    Patient.objects.filter(pk=patient.pk).update(status="submitted")  # seeded records are locked
    patient.refresh_from_db()
    cycle_ids = list(patient.cycles.values_list("pk", flat=True))
    before = dict(RiskScore.objects.filter(cycle_id__in=cycle_ids, risk_model="cinv")
                  .values_list("cycle_id", "scored_at"))
    total = RiskScore.objects.count()
    patient_update(patient=patient, sex="F" if patient.sex == "M" else "M",
                   birth_year=patient.birth_year, consent_scope=patient.consent_scope,
                   expected_version=patient.version, change_reason="sex entered wrongly",
                   acting_user=ada)
    after = dict(RiskScore.objects.filter(cycle_id__in=cycle_ids, risk_model="cinv")
                 .values_list("cycle_id", "scored_at"))
    assert after.keys() == before.keys()
    assert all(after[c] > before[c] for c in cycle_ids)
    assert RiskScore.objects.count() == total  # one score per cycle and model, still
    others = RiskScore.objects.exclude(cycle_id__in=cycle_ids).order_by("-scored_at").first()
    assert others.scored_at < min(after.values())  # only this patient's cycles were rescored


def test_factors_of_a_frame_are_each_rows_own_explanation(seeded, ada, monkeypatch):
    from django.utils import timezone

    from predictions.ml.training import explain
    from predictions.selectors.features import feature_set_for_sites
    from predictions.services import scoring

    _train()
    _both_champions(ada)
    X = feature_set_for_sites(None, as_of=timezone.now()).features.iloc[:7]
    for version in scoring.champions().values():
        model = v.version_load(version)
        frame = scoring.factors_frame(model, X)
        monkeypatch.setattr(scoring, "PROBE_ROWS", 2 * len(model.features))  # 2 rows a call
        assert scoring.factors_frame(model, X) == frame
        monkeypatch.undo()
        for (_, row), factors in zip(X.iterrows(), frame, strict=True):
            alone = {f["feature"]: f["contribution"] for f in
                     explain(model, X.loc[[row.name]], top=len(model.features))}
            assert len(factors) == min(scoring.TOP_FACTORS, len(alone))
            for factor in factors:  # each as explained alone, and among the largest
                assert factor["contribution"] == pytest.approx(alone[factor["feature"]],
                                                               abs=1e-4)
            largest = sorted(map(abs, alone.values()), reverse=True)[:len(factors)]
            assert sorted((abs(f["contribution"]) for f in factors), reverse=True) == \
                pytest.approx(largest, abs=1e-4)


def test_a_patients_features_read_alone_equal_those_read_with_the_site(seeded):
    import pandas as pd
    from django.utils import timezone

    from predictions.selectors.features import feature_set_for_sites

    patient = Patient.objects.filter(cycles__isnull=False).order_by("-pk").first()
    as_of = timezone.now()
    site = feature_set_for_sites([patient.site_id], as_of=as_of)
    alone = feature_set_for_sites([patient.site_id], as_of=as_of, patient_ids=[patient.pk])
    cycles = sorted(patient.cycles.values_list("pk", flat=True))
    assert list(alone.features.index) == cycles
    pd.testing.assert_frame_equal(alone.features, site.features.loc[cycles])
    pd.testing.assert_frame_equal(alone.targets, site.targets.loc[cycles])
