"""Versions, artifacts and the champion: immutability, refusal of a changed file, the automatic
promotion rule (paired on shared cycles, calibrated), promotion and rollback by hand, and every
move kept."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from django.db import IntegrityError, transaction

from predictions.ml.training import ArtifactIntegrityError
from predictions.models import Alias, AliasMove, ModelVersion, PromotionCheck, VersionImmutable
from predictions.services import versions as v
from predictions.services.training import orphan_files_purge
from predictions.storage import model_storage
from registry.errors import NotPermitted, ValidationFailed
from tests.predictions import factories

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("model_dir")]


@pytest.fixture
def world(db):
    y, risk, rng = factories.outcomes(400)
    return y, risk, rng


def _promote(version):
    return v.promotion_apply(version)


def test_a_version_never_changes(world):
    y, risk, rng = world
    version = factories.version(y=y, p=risk)
    version.algorithm = "naive_bayes"
    with pytest.raises(VersionImmutable):
        version.save()
    with pytest.raises(IntegrityError), transaction.atomic():  # the database refuses too
        ModelVersion.objects.filter(pk=version.pk).update(algorithm="naive_bayes")
    assert ModelVersion.objects.get(pk=version.pk).algorithm == "logistic_regression"


def test_versions_are_numbered_per_risk_model(world):
    y, risk, rng = world
    first = factories.version(y=y, p=risk)
    second = factories.version(y=y, p=risk)
    other = factories.version("neutropenia", y=y, p=risk)
    assert (first.number, second.number, other.number) == (1, 2, 1)


def test_loading_refuses_an_artifact_whose_bytes_changed(world):
    y, risk, rng = world
    version = factories.version(y=y, p=risk)
    model = v.version_load(version)
    assert model.risk_model == "cinv"
    path = model_storage().path(version.artifact)
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="refused"):
        v.version_load(version)
    with open(model_storage().path(version.holdout), "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01")
    with pytest.raises(ArtifactIntegrityError):
        v.version_holdout(version)


def test_the_first_calibrated_version_becomes_champion(world):
    y, risk, rng = world
    version = factories.version(y=y, p=risk)
    check = _promote(version)
    assert check.promoted and check.reasons == []
    assert v.champion_of("cinv") == version
    move = AliasMove.objects.get()
    assert (move.kind, move.from_version, move.to_version, move.moved_by) == (
        AliasMove.Kind.AUTOMATIC, None, version, None)
    assert move.metrics["loso_auroc"] == factories.GOOD["loso_auroc"]


def test_a_badly_calibrated_first_version_waits_for_an_admin(world):
    y, risk, rng = world
    version = factories.version(y=y, p=risk, metrics={"calibration_slope": 0.6, "e_avg": 0.08})
    check = _promote(version)
    assert not check.promoted
    assert len(check.reasons) == 2
    assert "slope" in check.reasons[0] and "E-avg" in check.reasons[1]
    assert not Alias.objects.exists() and not AliasMove.objects.exists()


def test_a_challenger_is_promoted_only_if_not_worse_on_the_shared_cycles(world):
    y, risk, rng = world
    p_champion = factories.predictions(y, risk, rng, signal=0.6)
    champion = factories.version(y=y, p=p_champion)
    _promote(champion)

    worse = factories.version(y=y, p=factories.predictions(y, risk, rng, signal=0.2))
    check = _promote(worse)
    assert not check.promoted
    assert "below the champion" in check.reasons[0]
    assert check.figures["shared_cycles"] == 400
    assert check.figures["challenger_auroc"] < check.figures["champion_auroc"]
    assert v.champion_of("cinv") == champion

    # Better on the shared cycles, and it saw 100 more (their outcomes are not compared).
    ids = np.arange(1, 501)
    y_more = np.concatenate([y, np.ones(50, int), np.zeros(50, int)])
    better_p = np.concatenate([risk, np.full(100, 0.5)])
    better = factories.version(y=y_more, p=better_p, cycle_ids=ids)
    check = _promote(better)
    assert check.promoted, check.reasons
    assert check.figures["shared_cycles"] == 400
    assert check.figures["challenger_auroc"] > check.figures["champion_auroc"]
    assert v.champion_of("cinv") == better
    last = AliasMove.objects.first()
    assert (last.from_version, last.to_version, last.kind) == (champion, better, "automatic")
    assert last.metrics["champion_auroc"] == check.figures["champion_auroc"]


def test_a_well_discriminating_but_miscalibrated_challenger_stays(world):
    y, risk, rng = world
    champion = factories.version(y=y, p=factories.predictions(y, risk, rng, signal=0.5))
    _promote(champion)
    challenger = factories.version(y=y, p=risk, metrics={"e_avg": 0.09})
    check = _promote(challenger)
    assert not check.promoted and "E-avg" in check.reasons[0]
    assert v.champion_of("cinv") == champion


def test_too_few_shared_cycles_is_not_a_comparison(world):
    y, risk, rng = world
    champion = factories.version(y=y, p=risk)
    _promote(champion)
    elsewhere = factories.version(y=y, p=risk, cycle_ids=np.arange(10_001, 10_401))
    check = _promote(elsewhere)
    assert not check.promoted and "too few" in check.reasons[0]
    assert PromotionCheck.objects.count() == 2


def test_an_admin_promotes_and_rolls_back_by_hand_with_a_reason(world, ada, mona):
    y, risk, rng = world
    first = factories.version(y=y, p=risk)
    _promote(first)
    second = factories.version(y=y, p=risk, metrics={"calibration_slope": 1.3})
    assert not _promote(second).promoted

    with pytest.raises(NotPermitted):
        v.champion_move(risk_model="cinv", version_number=2, acting_user=mona,
                        reason="looks better")
    with pytest.raises(ValidationFailed, match="reason"):
        v.champion_move(risk_model="cinv", version_number=2, acting_user=ada, reason="  ")
    with pytest.raises(ValidationFailed, match="already the champion"):
        v.champion_move(risk_model="cinv", version_number=1, acting_user=ada, reason="again")
    with pytest.raises(ValidationFailed, match="no version 9"):
        v.champion_move(risk_model="cinv", version_number=9, acting_user=ada, reason="x")
    assert v.champion_of("cinv") == first

    promoted = v.champion_move(risk_model="cinv", version_number=2, acting_user=ada,
                               reason="slope 1.3 accepted after review of site C")
    assert (promoted.kind, promoted.from_version, promoted.to_version, promoted.moved_by) == (
        AliasMove.Kind.PROMOTE, first, second, ada)
    assert v.champion_of("cinv") == second
    rolled = v.champion_move(risk_model="cinv", version_number=1, acting_user=ada,
                             reason="site C complained")
    assert (rolled.kind, rolled.from_version, rolled.to_version) == (
        AliasMove.Kind.ROLLBACK, second, first)
    assert v.champion_of("cinv") == first
    # Every move kept, and the alias's own history names who and why.
    assert [m.kind for m in AliasMove.objects.order_by("moved_at", "id")] == [
        "automatic", "promote", "rollback"]
    history = Alias.history.order_by("history_date", "history_id")
    assert [(h.version_id, h.history_user.username, h.history_change_reason)
            for h in history] == [
        (first.pk, "system", "First calibrated version."),
        (second.pk, "ada", "slope 1.3 accepted after review of site C"),
        (first.pk, "ada", "site C complained")]


def test_files_no_version_names_are_purged_once_old(world):
    y, risk, rng = world
    kept = factories.version(y=y, p=risk)
    storage = model_storage()
    orphan = storage.save("cinv/orphan.joblib", v.ContentFile(b"half"))
    assert orphan_files_purge() == 0  # young: a run may be about to record it
    old = time.time() - 7200
    os.utime(storage.path(orphan), (old, old))
    os.utime(storage.path(kept.artifact), (old, old))
    assert orphan_files_purge() == 1
    assert not storage.exists(orphan)
    assert storage.exists(kept.artifact) and storage.exists(kept.holdout)


def test_a_grown_cohort_queues_one_run(vocabulary, site_a, alice):
    from predictions.models import TrainingRun
    from predictions.services.training import cohort_growth_check
    from tests.registry import factories as registry_factories

    assert cohort_growth_check() is None  # no cycle at all: nothing to train on
    for _ in range(10):
        registry_factories.full_record(site_a, alice)  # one cycle each
    y, risk, rng = factories.outcomes(10)
    trained = factories.version(y=y, p=risk)  # trained on 10 cycles: not grown
    v.promotion_apply(trained)
    factories.version("neutropenia", y=y, p=risk)  # no champion: its latest version counts
    assert cohort_growth_check() is None
    registry_factories.full_record(site_a, alice)  # 11 cycles: grown by 10%
    run = cohort_growth_check()
    assert (run.trigger, run.status) == ("growth", "queued")
    assert cohort_growth_check() == run  # already queued: not a second run
    assert TrainingRun.objects.count() == 1
