"""Celery behaviour on a real worker consuming from Redis."""

import pytest

from registry.models import SiteTerm
from registry.tasks import site_term_frequencies_refresh_task
from tests.registry import factories


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
