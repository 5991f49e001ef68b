"""Celery behaviour on a real worker consuming from Redis: in a thread of the test process,
or, where a worker must be killed, in a process of its own."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from registry.celery import app
from registry.models import ImportBatch, Patient, SiteTerm
from registry.services import imports
from registry.services.imports import batch_is_orphaned, batch_upload
from registry.tasks import (
    extract_import_task,
    import_stale_requeue_task,
    site_term_frequencies_refresh_task,
)
from tests.registry import factories
from tests.registry.test_imports import GOOD, clinical_counts
from tests.registry.test_uploads import zipped


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_term_frequencies_are_refreshed_by_a_worker(vocabulary, site_a, alice, redis_worker):
    factories.full_record(site_a, alice)
    factories.full_record(site_a, alice)
    SiteTerm.objects.update(frequency=0)
    result = site_term_frequencies_refresh_task.delay(site_a.pk)
    assert result.get(timeout=30) > 0
    ddp = SiteTerm.objects.get(site=site_a, domain="drug", text="DDP")
    assert ddp.frequency == 2
    assert SiteTerm.objects.get(site=site_a, domain="drug", text="力比泰注射液").frequency == 0
    # Safe to run twice: the same counts again.
    site_term_frequencies_refresh_task.delay(site_a.pk).get(timeout=30)
    ddp.refresh_from_db()
    assert ddp.frequency == 2


# -- imports on a real worker: every failure ends the batch, a killed worker loses nothing ----

IMPORTED_COUNTS = [1, 1, 1, 2, 2, 2, 2, 1]


def _upload(site, user) -> ImportBatch:
    return batch_upload(site=site, upload=SimpleUploadedFile("extract.zip", zipped(GOOD)),
                        acting_user=user)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_in_an_import_ends_the_batch_failed(
        vocabulary, site_a, alice, redis_worker, settings, tmp_path, monkeypatch):
    settings.IMPORT_UPLOAD_DIR = tmp_path

    def broken(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imports._Writer, "write", broken)
    batch = _upload(site_a, alice)
    assert extract_import_task.delay(batch.pk).get(timeout=60) == "failed"
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED
    assert "unexpected error (RuntimeError); nothing was written" in batch.errors[0]["message"]
    assert clinical_counts() == [0] * 8
    assert batch.upload.name == "" and list(tmp_path.iterdir()) == []


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_task_failing_outside_the_service_still_ends_its_batch(
        vocabulary, site_a, alice, redis_worker, settings, tmp_path, monkeypatch):
    settings.IMPORT_UPLOAD_DIR = tmp_path

    def broken(*, batch_id):
        raise ConnectionError("lost the database")

    monkeypatch.setattr("registry.tasks.batch_run", broken)
    batch = _upload(site_a, alice)
    with pytest.raises(ConnectionError):
        extract_import_task.delay(batch.pk).get(timeout=60)

    def ended():  # on_failure runs just after the result is stored
        batch.refresh_from_db()
        return batch.status != ImportBatch.Status.RECEIVED

    _wait(ended, 30, "the batch to end")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.errors[0]["message"] == ("The import task failed (ConnectionError); nothing "
                                          "was written.")
    last = batch.history.first()
    assert (last.history_user, last.history_change_reason) == (alice, f"import {batch.pk}: failed")


# A worker in a process of its own (SIGKILL must not take the test with it), on the test
# database, pausing once inside the import's write transaction (IMPORT_TEST_PAUSE_FILE).

def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker_process(settings, tmp_path):
    settings.IMPORT_UPLOAD_DIR = tmp_path / "uploads"
    broker = settings.CELERY_BROKER_URL
    redis.Redis.from_url(broker).flushdb()  # this test's Redis db: no message of another run
    app.conf.task_always_eager = False
    started: list[subprocess.Popen] = []
    env = dict(os.environ, DATABASE_URL=_database_url(), CELERY_BROKER_URL=broker,
               CELERY_RESULT_BACKEND=broker, CELERY_TASK_ALWAYS_EAGER="false",
               IMPORT_UPLOAD_DIR=str(settings.IMPORT_UPLOAD_DIR),
               IMPORT_TEST_PAUSE_FILE=str(tmp_path / "paused"))

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "registry", "worker", "--pool=prefork",
             "--concurrency=1", "--loglevel=INFO", "--without-mingle", "--without-gossip",
             "-n", f"{name}@%h"],
            cwd=Path(__file__).resolve().parents[2], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        app.conf.task_always_eager = settings.CELERY_TASK_ALWAYS_EAGER
        redis.Redis.from_url(broker).flushdb()
        connection.close()


def _paused_import(tmp_path) -> int:
    """The pid of the worker process paused in the write transaction, once it is there."""
    marker = tmp_path / "paused"
    _wait(lambda: marker.exists() and marker.read_text(), 90, "the import to pause")
    return int(marker.read_text())


def _nothing_written(batch: ImportBatch) -> None:
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.RUNNING and batch.stage == "writing"
    assert clinical_counts() == [0] * 8  # the patients COPY'd so far are not committed


def _imported(batch: ImportBatch) -> ImportBatch:
    def done():
        batch.refresh_from_db()
        return batch.status not in (ImportBatch.Status.RECEIVED, ImportBatch.Status.RUNNING)

    _wait(done, 120, "the import to end")
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert clinical_counts() == IMPORTED_COUNTS  # once, not twice
    assert Patient.objects.get().import_batch == batch
    return batch


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_killed_mid_import_is_replaced_and_the_import_completes(
        vocabulary, site_a, alice, worker_process, tmp_path):
    worker_process("first")
    batch = _upload(site_a, alice)
    extract_import_task.delay(batch.pk)
    pid = _paused_import(tmp_path)
    _nothing_written(batch)
    os.kill(pid, signal.SIGKILL)  # the pool process; the worker gives the message back
    batch = _imported(batch)
    assert batch.restarts == 1
    started = batch.history.filter(history_change_reason=f"import {batch.pk}: started")
    assert started.count() == 2 and {h.history_user for h in started} == {alice}
    assert batch.upload.name == "" and list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_whole_worker_killed_mid_import_leaves_a_batch_the_sweep_runs_again(
        vocabulary, site_a, alice, worker_process, tmp_path):
    first = worker_process("first")
    batch = _upload(site_a, alice)
    extract_import_task.delay(batch.pk)
    _paused_import(tmp_path)
    _nothing_written(batch)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool: no one gives it back
    first.wait(30)
    # Still marked running, but no process holds it (its connection died with it).
    _wait(lambda: batch_is_orphaned(batch), 30, "the dead worker's lock to be freed")
    _nothing_written(batch)
    worker_process("second")
    assert import_stale_requeue_task.delay().get(timeout=90) == [batch.pk]
    batch = _imported(batch)
    assert batch.restarts == 1


def test_beat_schedules_the_upload_purge_and_the_stale_sweep(settings):
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"registry.import_uploads_purge", "registry.import_stale_requeue",
            "registry.site_term_frequencies_repair"} <= schedule
    assert schedule <= set(app.tasks)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_purge_task_deletes_an_expired_upload_on_a_worker(
        vocabulary, site_a, alice, redis_worker, settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from registry.tasks import import_uploads_purge_task

    settings.IMPORT_UPLOAD_DIR = tmp_path
    site_a.keep_uploads_days = 1
    site_a.save()
    batch = _upload(site_a, alice)
    assert extract_import_task.delay(batch.pk).get(timeout=60) == "imported"
    batch.refresh_from_db()
    assert batch.upload.name and len(list(tmp_path.iterdir())) == 1  # kept for a day
    ImportBatch.objects.filter(pk=batch.pk).update(
        finished_at=timezone.now() - timedelta(days=1, seconds=1))
    assert import_uploads_purge_task.delay().get(timeout=60) == 1
    batch.refresh_from_db()
    assert batch.upload.name == "" and list(tmp_path.iterdir()) == []
