"""Celery tasks of the registry: thin, idempotent, by id."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from registry.models import ImportBatch
from registry.models.imports import ENDED
from registry.services.imports import (
    batch_fail,
    batch_run,
    import_stale_batches,
    import_uploads_purge,
)
from registry.services.quality import quality_run_execute, quality_run_nightly
from registry.services.terminology import (
    site_term_frequencies_refresh,
    site_term_frequencies_refresh_all,
)

logger = logging.getLogger(__name__)


@shared_task(name="registry.site_term_frequencies_refresh")
def site_term_frequencies_refresh_task(site_id: int) -> int:
    return site_term_frequencies_refresh(site_id=site_id)


@shared_task(name="registry.site_term_frequencies_repair")
def site_term_frequencies_repair_task() -> int:
    """Recount every site's term frequencies: imports keep them up to date as they go, the
    nightly recount also counts the rows entered in forms."""
    return site_term_frequencies_refresh_all()


class _ImportTask(Task):
    """An import whose task fails outside the service (the batch could not even be read or
    saved there) still ends its batch failed, with the reason, never left running."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        batch_id = args[0] if args else kwargs.get("batch_id")
        try:
            batch = ImportBatch.objects.select_related("site", "uploaded_by").get(pk=batch_id)
            if batch.status not in ENDED:
                batch_fail(batch, message=f"The import task failed ({type(exc).__name__}); "
                                          "nothing was written.")
        except Exception:  # the database itself may be what failed: logged, the sweep retries
            logger.exception("import %s: could not record the task's failure", batch_id)


# acks_late + reject_on_worker_lost: a worker process killed mid-import (nothing of it is
# committed) gives the message back to the queue, and the next worker runs the batch again.
@shared_task(name="registry.extract_import", base=_ImportTask, acks_late=True,
             reject_on_worker_lost=True)
def extract_import_task(batch_id: int) -> str:
    """Run or resume an import batch; safe to run twice (a finished batch is left alone,
    one running in another worker too)."""
    batch = batch_run(batch_id=batch_id)
    if batch is None:
        return "running elsewhere"
    return batch.status


@shared_task(name="registry.import_uploads_purge")
def import_uploads_purge_task() -> int:
    return import_uploads_purge()


@shared_task(name="registry.import_stale_requeue")
def import_stale_requeue_task() -> list[int]:
    """Queue again the batches a dead worker left running or whose queued task was lost."""
    stale = import_stale_batches()
    for batch_id in stale:
        extract_import_task.delay(batch_id)
    return stale


@shared_task(name="registry.quality_run")
def quality_run_task(run_id: int) -> str:
    """Run a queued data-quality run; safe to run twice (a run taken elsewhere is left)."""
    run = quality_run_execute(run_id=run_id)
    return "taken elsewhere" if run is None else run.status


@shared_task(name="registry.quality_run_nightly")
def quality_run_nightly_task() -> int:
    return quality_run_nightly().pk
