"""Celery tasks of the risk models: thin, by id, safe to run twice, acknowledged late.

acks_late + reject_on_worker_lost: a worker process killed mid-task gives the message back and
the next worker runs it again (training records nothing before its final commit; scoring
upserts the same rows).
"""

from __future__ import annotations

from celery import shared_task

from predictions.models import TrainingRun
from predictions.services.scoring import cycles_score, version_score_all
from predictions.services.training import (
    cohort_growth_check,
    training_run_execute,
    training_run_request,
)


@shared_task(name="predictions.retrain", acks_late=True, reject_on_worker_lost=True)
def retrain_task(run_id: int) -> str:
    """Run a queued training run; a finished run is left as it is."""
    run = training_run_execute(run_id=run_id)
    return "running elsewhere" if run is None else run.status


@shared_task(name="predictions.retrain_nightly")
def retrain_nightly_task() -> int:
    return training_run_request(trigger=TrainingRun.Trigger.NIGHTLY).pk


@shared_task(name="predictions.cohort_growth_check")
def cohort_growth_check_task() -> int | None:
    run = cohort_growth_check()
    return None if run is None else run.pk


@shared_task(name="predictions.score_cycles", acks_late=True, reject_on_worker_lost=True)
def score_cycles_task(cycle_ids: list[int]) -> int:
    """Score these cycles with every champion (upserts: twice leaves the same rows)."""
    return cycles_score(cycle_ids=cycle_ids)


@shared_task(name="predictions.score_all", acks_late=True, reject_on_worker_lost=True)
def score_all_task(version_id: int) -> int:
    """Rescore every cycle with this version while it is its risk model's champion."""
    return version_score_all(version_id=version_id)
