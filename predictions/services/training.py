"""Training runs: every risk model retrained over the cohort, judged on hospitals it never saw,
and recorded as new versions; the champion moves when the promotion rule says so.

A run is queued (`training_run_request`: nightly, when the cohort grew, or by hand) and run by
the worker (`training_run_execute`, the Celery task's one call). It extracts the cohort once
(as of a snapshot time), trains each risk model (predictions.ml.training.train), stores each
artifact and its held-out predictions as files named by their SHA-256, and only then, in one
transaction, records the versions, their promotion verdicts and any move of the champion. A
worker killed at any point before that commit leaves no version: at most files no version
names, which the next run deletes (`orphan_files_purge`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone
from sklearn.metrics import roc_curve

from predictions.extract import feature_set_extract, training_data_extract
from predictions.ml.definitions import DEFINITIONS
from predictions.ml.training import DEFAULT_CANDIDATES, TrainingResult, artifact_dumps, train
from predictions.models import ModelVersion, TrainingRun
from predictions.services.versions import (
    champion_of,
    file_store,
    holdout_dumps,
    promotion_apply,
    version_record,
)
from predictions.storage import model_storage
from registry.locks import process_lock
from registry.models import Cycle

logger = logging.getLogger(__name__)

# pg_try_advisory_lock(TRAINING_LOCK, run id) is held by the process running a run: a run
# found "running" whose lock is free was left by a dead worker.
TRAINING_LOCK = 0x50524544
MAX_RESTARTS = 2
# The cohort grew enough for a retrain when it has this many times the champion's cycles.
GROWTH_FACTOR = 1.10
# A file no version names, older than this, was left by a run that died before its commit.
ORPHAN_AGE = dt.timedelta(hours=1)
ROC_POINTS = 101
ACTIVE = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)


def training_run_request(*, trigger: str, acting_user: User | None = None,
                         queue: bool = True) -> TrainingRun:
    """Queue a training run (the task is sent after the commit; `queue=False`: the caller runs
    it in process); a run already queued or running is returned instead of a second one."""
    with transaction.atomic():
        active = (TrainingRun.objects.select_for_update()
                  .filter(status__in=ACTIVE).order_by("created_at").first())
        if active is not None:
            return active
        run = TrainingRun.objects.create(trigger=trigger, requested_by=acting_user,
                                         log=_line(f"queued ({trigger})"))
        if queue:
            transaction.on_commit(lambda: _queue(run.pk))
    return run


def _queue(run_id: int) -> None:
    from predictions.tasks import retrain_task

    retrain_task.delay(run_id)


def cohort_growth_check() -> TrainingRun | None:
    """Queue a run when the cohort has grown by GROWTH_FACTOR since a champion's training
    snapshot (without a champion: since the latest version; without any version: when there
    are cycles at all)."""
    cycles = Cycle.objects.count()
    for name in DEFINITIONS:
        reference = champion_of(name) or ModelVersion.objects.filter(risk_model=name).first()
        baseline = reference.cycles if reference else 0
        if cycles and cycles >= GROWTH_FACTOR * baseline:
            return training_run_request(trigger=TrainingRun.Trigger.GROWTH)
    return None


def _line(message: str) -> str:
    return f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}\n"


def _report(run_id: int, *, progress: int | None = None, message: str = "") -> None:
    changes = {}
    if progress is not None:
        changes["progress"] = max(0, min(100, progress))
    if message:
        changes["log"] = Concat(F("log"), Value(_line(message)))
    if changes:
        TrainingRun.objects.filter(pk=run_id).update(**changes)


def _run_lock(run_id: int):
    """Whether this process holds the run's lock (see registry.locks)."""
    return process_lock(TRAINING_LOCK, run_id)


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run a queued training run; safe to run twice (a finished run is left as it is, one
    running in another process too: None). A run found "running" with its lock free was left
    by a dead worker: nothing of it was recorded, so it runs again (at most MAX_RESTARTS)."""
    with _run_lock(run_id) as held:
        if not held:
            return None
        run = TrainingRun.objects.get(pk=run_id)
        if run.status not in ACTIVE:
            return run
        if run.status == TrainingRun.Status.RUNNING:
            if run.restarts >= MAX_RESTARTS:
                return _fail(run, f"The worker running this training stopped {run.restarts + 1} "
                                  "times (killed, or out of memory); no version was recorded.")
            run.restarts += 1
            logger.warning("training run %s: its worker died; running it again", run.pk)
        run.status, run.started_at, run.progress = TrainingRun.Status.RUNNING, timezone.now(), 0
        run.save(update_fields=["status", "started_at", "progress", "restarts"])
        _report(run.pk, message="started" if not run.restarts
                else f"started again (restart {run.restarts}) after its worker died")
        try:
            _train_all(run)
        except Exception as error:  # the run ends failed with the reason; nothing recorded
            logger.exception("training run %s failed", run.pk)
            return _fail(run, f"{type(error).__name__}: {error}")
        run.refresh_from_db()
        return run


def _fail(run: TrainingRun, message: str) -> TrainingRun:
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, error=message, finished_at=timezone.now(),
        log=Concat(F("log"), Value(_line(f"failed: {message}"))))
    run.refresh_from_db()
    return run


def orphan_files_purge(*, older_than: dt.timedelta = ORPHAN_AGE) -> int:
    """Delete stored files no version names that are older than `older_than` (left by a run
    whose worker died before its commit); returns how many."""
    storage = model_storage()
    if not os.path.isdir(storage.location):
        return 0
    named = set(ModelVersion.objects.values_list("artifact", flat=True)) | set(
        ModelVersion.objects.values_list("holdout", flat=True))
    cutoff = time.time() - older_than.total_seconds()
    removed = 0
    for path in Path(storage.location).rglob("*"):
        name = path.relative_to(storage.location).as_posix()
        if path.is_file() and name not in named and path.stat().st_mtime <= cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def roc_points(y, p, *, n: int = ROC_POINTS) -> list[dict]:
    """The ROC curve of held-out predictions at `n` false-positive rates (for the plot)."""
    fpr, tpr, _ = roc_curve(np.asarray(y, dtype=int), np.asarray(p, dtype=float))
    grid = np.linspace(0.0, 1.0, n)
    return [{"fpr": float(f), "tpr": float(t)}
            for f, t in zip(grid, np.interp(grid, fpr, tpr), strict=True)]


def _pause_for_tests() -> None:
    """The killed-worker test's hook (PREDICTIONS_TEST_PAUSE_FILE, empty in deployments): wait
    here once, files stored and nothing recorded, having told the test which process to kill."""
    marker = settings.PREDICTIONS_TEST_PAUSE_FILE
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        time.sleep(120)


def _train_all(run: TrainingRun) -> None:
    orphan_files_purge()
    as_of = timezone.now()
    _report(run.pk, progress=2, message=f"reading the cohort as of {as_of:%Y-%m-%d %H:%M:%S}")
    features = feature_set_extract(as_of=as_of)
    names = list(DEFINITIONS)
    share = 90 / len(names)
    trained: list[tuple[TrainingResult, dict]] = []
    for i, name in enumerate(names):
        X, y, groups, meta = training_data_extract(name, features=features)
        _report(run.pk, progress=round(10 + i * share),
                message=f"{name}: {len(y)} cycles, {int(y.sum())} events")
        last = {"percent": -1}

        def progress(fraction: float, message: str, i=i, last=last) -> None:
            percent = round(10 + (i + fraction) * share)
            if percent != last["percent"]:
                last["percent"] = percent
                _report(run.pk, progress=percent, message=message)

        result = train(name, X, y, groups, meta=meta, n_boot=settings.RISK_MODEL_BOOTSTRAP,
                       candidates=settings.RISK_MODEL_CANDIDATES or DEFAULT_CANDIDATES,
                       progress=progress)
        data, sha = artifact_dumps(result.model)
        holdout_bytes, holdout_sha = holdout_dumps(X.index.to_numpy(), y.to_numpy(),
                                                   result.champion.oof)
        files = {
            "artifact": file_store(name, data, sha, ".joblib"), "artifact_sha256": sha,
            "holdout": file_store(f"{name}/holdout", holdout_bytes, holdout_sha, ".npy"),
            "holdout_sha256": holdout_sha,
            "roc_curve": roc_points(y, result.champion.oof),
            "holdout_frame": pd.DataFrame({"cycle": X.index.to_numpy(),
                                           "y": y.to_numpy().astype(int),
                                           "p": result.champion.oof}),
            "as_of": as_of,
        }
        trained.append((result, files))
    _pause_for_tests()
    with transaction.atomic():
        verdicts = []
        for result, files in trained:
            version = _version_from(result, files, run)
            check = promotion_apply(version, holdout=files["holdout_frame"])
            verdicts.append(f"{version}: " + ("champion" if check.promoted else
                                              "challenger (" + " ".join(check.reasons) + ")"))
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.DONE, progress=100, finished_at=timezone.now(),
            log=Concat(F("log"), Value("".join(_line(v) for v in verdicts) + _line("done"))))


def json_safe(value):
    """Floats JSON (and PostgreSQL's jsonb) can hold: NaN and infinities become null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


JSON_KEYS = ("algorithm", "version", "loso_auroc", "loso_auroc_ci", "brier",
             "calibration_slope", "calibration_intercept", "e_avg")
PER_SITE_KEYS = ("site", "events", "auroc", "ci")


def version_summary(version: ModelVersion) -> dict:
    """The version as `train_models --json` prints it: exactly the documented keys (each
    candidate with the same keys as the champion; "version" is this version's number for the
    chosen candidate and null for the others)."""
    def keyed(figures: dict, number: int | None) -> dict:
        return {k: number if k == "version" else figures.get(k) for k in JSON_KEYS}

    return {
        "risk_model": version.risk_model, "cycles": version.cycles, "events": version.events,
        "champion": keyed(version.metrics, version.number),
        "candidates": [keyed(c, version.number if c.get("chosen") else None)
                       for c in version.candidates],
        "per_site": [{k: row.get(k) for k in PER_SITE_KEYS} for row in version.per_site],
    }


def _version_from(result: TrainingResult, files: dict, run: TrainingRun) -> ModelVersion:
    champion = result.champion
    metrics = json_safe(champion.summary())
    candidates = json_safe([{**c.summary(), "chosen": c is champion}
                            for c in result.candidates])
    snapshot = json_safe({**result.snapshot, "as_of": files["as_of"].isoformat(),
                          "fingerprint": result.fingerprint})
    return version_record(
        risk_model=result.risk_model, algorithm=champion.algorithm,
        params=json_safe(champion.params), recalibration=champion.recalibration or "",
        snapshot=snapshot, fingerprint=result.fingerprint, cycles=result.cycles,
        events=result.events, metrics=metrics, candidates=candidates,
        per_site=json_safe(result.per_site),
        calibration_curve=json_safe(result.calibration_curve), roc_curve=files["roc_curve"],
        folds=json_safe(result.folds), artifact=files["artifact"],
        artifact_sha256=files["artifact_sha256"], holdout=files["holdout"],
        holdout_sha256=files["holdout_sha256"], training_run=run)
