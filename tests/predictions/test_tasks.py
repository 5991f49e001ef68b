"""The risk models' tasks on real Celery workers consuming from Redis: retraining and scoring
end to end, each task safe to run twice, and a worker killed mid-training leaving no version."""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.db import connection

from predictions.models import ModelVersion, RiskScore, TrainingRun
from predictions.services import versions as v
from predictions.services.training import orphan_files_purge, training_run_request
from predictions.storage import model_storage
from predictions.tasks import retrain_task, score_cycles_task
from registry.celery import app
from registry.models import Cycle, Patient
from registry.services.clinical import patient_update
from tests.registry.test_tasks import _database_url, _wait

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("vocabulary", "model_dir")]


@pytest.fixture
def seeded(settings):
    settings.RISK_MODEL_CANDIDATES = ["logistic_regression"]
    settings.RISK_MODEL_BOOTSTRAP = 20
    call_command("seed_demo", "--patients", "250", "--sites", "3", "--seed", "8",
                 stdout=io.StringIO())
    return Cycle.objects.count()


def _run_ended(run: TrainingRun, timeout: float = 180) -> TrainingRun:
    def ended():
        run.refresh_from_db()
        return run.status in (TrainingRun.Status.DONE, TrainingRun.Status.FAILED)

    _wait(ended, timeout, "the training run to end")
    assert run.status == TrainingRun.Status.DONE, run.error
    return run


def test_retrain_and_score_end_to_end_on_a_worker(seeded, redis_worker, ada):
    run = training_run_request(trigger=TrainingRun.Trigger.MANUAL)  # queued on commit
    run = _run_ended(run)
    assert sorted(run.versions.values_list("risk_model", "number")) == [
        ("cinv", 1), ("neutropenia", 1)]
    for name in ("cinv", "neutropenia"):
        if v.champion_of(name) is None:  # a small cohort may miss the automatic rule
            v.champion_move(risk_model=name, version_number=1, acting_user=ada,
                            reason="test cohort: promoted by hand")
    # Each champion's move queued a full rescore on the worker.
    _wait(lambda: RiskScore.objects.count() == 2 * seeded, 120, "every cycle to be scored")

    # Safe twice: the finished run records nothing more.
    assert retrain_task.delay(run.pk).get(timeout=60) == "done"
    assert ModelVersion.objects.count() == 2

    # A save reaches the patient's scores through the worker.
    patient = Patient.objects.filter(cycles__isnull=False).order_by("pk").first()
    Patient.objects.filter(pk=patient.pk).update(status="submitted")
    patient.refresh_from_db()
    cycle_ids = list(patient.cycles.values_list("pk", flat=True))
    saved_at = time.monotonic()
    before = max(RiskScore.objects.filter(cycle_id__in=cycle_ids)
                 .values_list("scored_at", flat=True))
    patient_update(patient=patient, sex="F" if patient.sex == "M" else "M",
                   birth_year=patient.birth_year, consent_scope=patient.consent_scope,
                   expected_version=patient.version, change_reason="sex entered wrongly",
                   acting_user=ada)

    def rescored():
        return RiskScore.objects.filter(cycle_id__in=cycle_ids,
                                        scored_at__gt=before).count() == 2 * len(cycle_ids)

    _wait(rescored, 60, "the saved patient's cycles to be scored")
    print(f"save -> score on the worker: {time.monotonic() - saved_at:.2f} s")
    # Scoring the same cycles twice leaves one score per cycle and model.
    assert score_cycles_task.delay(cycle_ids).get(timeout=60) == 2 * len(cycle_ids)
    assert score_cycles_task.delay(cycle_ids).get(timeout=60) == 2 * len(cycle_ids)
    assert RiskScore.objects.count() == 2 * seeded


@pytest.fixture
def training_worker(settings, tmp_path):
    """A worker in a process of its own (so SIGKILL spares the test), on the test database,
    pausing once after storing its files and before recording its versions."""
    broker = settings.CELERY_BROKER_URL
    redis.Redis.from_url(broker).flushdb()
    app.conf.task_always_eager = False
    env = dict(os.environ, DATABASE_URL=_database_url(), CELERY_BROKER_URL=broker,
               CELERY_RESULT_BACKEND=broker, CELERY_TASK_ALWAYS_EAGER="false",
               MODEL_ARTIFACT_DIR=str(settings.MODEL_ARTIFACT_DIR),
               RISK_MODEL_CANDIDATES="logistic_regression", RISK_MODEL_BOOTSTRAP="20",
               PREDICTIONS_TEST_PAUSE_FILE=str(tmp_path / "paused"))
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "registry", "worker", "--pool=prefork",
         "--concurrency=1", "--loglevel=INFO", "--without-mingle", "--without-gossip",
         "-n", "trainer@%h"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        log.close()
        app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER
        redis.Redis.from_url(broker).flushdb()
        connection.close()


def test_a_worker_killed_mid_training_leaves_no_version(seeded, training_worker, tmp_path):
    run = training_run_request(trigger=TrainingRun.Trigger.MANUAL)
    marker = tmp_path / "paused"
    _wait(lambda: marker.exists() and marker.read_text(), 180, "the training to pause")
    pid = int(marker.read_text())
    # Trained, files stored, nothing recorded.
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING
    assert not ModelVersion.objects.exists()
    stored = [p for p in Path(model_storage().location).rglob("*") if p.is_file()]
    assert len(stored) == 4  # an artifact and held-out predictions per risk model

    os.kill(pid, signal.SIGKILL)  # the pool process: the message goes back to the queue
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 30, "the process to die")
    assert not ModelVersion.objects.exists()

    run = _run_ended(run)  # redelivered, run again by the new pool process
    assert run.restarts == 1
    assert ModelVersion.objects.count() == 2
    assert "started again (restart 1)" in run.log
    for version in ModelVersion.objects.all():
        assert v.version_load(version).risk_model == version.risk_model
    orphan_files_purge(older_than=dt.timedelta(0))
    named = {p for ver in ModelVersion.objects.all() for p in (ver.artifact, ver.holdout)}
    left = {p.relative_to(model_storage().location).as_posix()
            for p in Path(model_storage().location).rglob("*") if p.is_file()}
    assert left == named
