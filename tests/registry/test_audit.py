"""Every service write leaves a history row naming the user and the reason."""

import pytest
from django.apps import apps

from registry.audit import bulk_create_audited, bulk_update_audited
from registry.errors import ValidationFailed
from registry.models import Site
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


def _history_models():
    return [m for m in apps.get_app_config("registry").get_models()
            if m.__name__.startswith("Historical")]


def test_every_audited_model_has_history():
    audited = {m.__name__.removeprefix("Historical") for m in _history_models()}
    models = {m.__name__ for m in apps.get_app_config("registry").get_models()
              if not m.__name__.startswith("Historical")}
    assert models <= audited


def test_every_service_write_is_attributed(site_a, alice):
    mark = {m: m.objects.count() for m in _history_models()}
    factories.full_record(site_a, alice)
    written = 0
    for model, before in mark.items():
        for row in model.objects.order_by("history_id")[before:]:
            written += 1
            assert row.history_user_id == alice.pk, (model.__name__, row)
            assert row.history_change_reason, (model.__name__, row)
    # patient, diagnosis, line, cycle, drug, AE, lab, follow-up, site terms and mappings
    assert written >= 15


def test_bulk_paths_write_history_too(alice):
    sites = bulk_create_audited(
        Site, [Site(code=f"BULK{i}", name=f"Bulk {i}") for i in range(3)],
        acting_user=alice, reason="bulk test",
    )
    assert Site.history.filter(code__startswith="BULK", history_type="+").count() == 3
    for site in sites:
        site.province = "Hubei"
    bulk_update_audited(Site, sites, ["province"], acting_user=alice, reason="province fix")
    changed = Site.history.filter(code__startswith="BULK", history_type="~")
    assert changed.count() == 3
    assert {(h.history_user_id, h.history_change_reason) for h in changed} == {
        (alice.pk, "province fix")}


def test_a_write_without_reason_is_refused(alice):
    with pytest.raises(ValidationFailed, match="reason"):
        bulk_create_audited(Site, [Site(code="NOREASON", name="x")], acting_user=alice,
                            reason=" ")
    assert not Site.objects.filter(code="NOREASON").exists()
