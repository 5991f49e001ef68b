"""Celery tasks of the registry: thin, idempotent, by id."""

from celery import shared_task

from registry.models import ImportBatch
from registry.services.imports import extract_import
from registry.services.terminology import site_term_frequencies_refresh


@shared_task(name="registry.site_term_frequencies_refresh")
def site_term_frequencies_refresh_task(site_id: int) -> int:
    return site_term_frequencies_refresh(site_id=site_id)


@shared_task(name="registry.extract_import")
def extract_import_task(batch_id: int) -> str:
    """Run or resume an import batch; safe to run twice (a finished batch is left alone)."""
    batch = ImportBatch.objects.get(pk=batch_id)
    if batch.status in (ImportBatch.Status.IMPORTED, ImportBatch.Status.RUNNING):
        return batch.status
    batch = extract_import(batch)
    if batch.status == ImportBatch.Status.IMPORTED:
        site_term_frequencies_refresh(site_id=batch.site_id)
    return batch.status
