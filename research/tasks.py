"""Celery tasks of the committee's releases: thin, by id, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task

from research.models import Release
from research.services.releases import release_build, releases_expire

log = logging.getLogger(__name__)


@shared_task(name="research.release_build", acks_late=True, reject_on_worker_lost=True)
def release_build_task(release_id: int) -> str:
    """Build a queued release (a rebuild of a ready one writes the same files again). A
    failure is recorded on the release (status failed, with its error, shown to the team, who
    may ask again); the task ends without raising, so the request that queued it never fails
    with it when tasks run eagerly."""
    release = Release.objects.filter(pk=release_id).first()
    if release is None or release.status == Release.Status.EXPIRED:
        return "gone"
    try:
        return release_build(release_id=release_id).status
    except Exception:
        log.exception("Release %s failed to build", release_id)
        return Release.Status.FAILED


@shared_task(name="research.releases_expire")
def releases_expire_task() -> int:
    return releases_expire()
