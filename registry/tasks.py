"""Celery tasks of the registry: thin, idempotent, by id."""

from celery import shared_task

from registry.services.terminology import site_term_frequencies_refresh


@shared_task(name="registry.site_term_frequencies_refresh")
def site_term_frequencies_refresh_task(site_id: int) -> int:
    return site_term_frequencies_refresh(site_id=site_id)
