"""An edit through a form changes what the clerk changed and nothing else: a stored value the
form does not show is never cleared."""

from __future__ import annotations

import pytest

from registry.models import Diagnosis
from registry.services import clinical
from registry.views.kinds import KINDS
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


def _posted(form) -> dict[str, str]:
    """What the browser sends back for the form as it was rendered."""
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else str(value)
    return data


def _changed_fields(record) -> set[str]:
    newest, previous = record.history.all()[:2]
    return {change.field for change in newest.diff_against(previous).changes}


@pytest.mark.django_db(transaction=True)
def test_editing_the_stage_keeps_the_morphology(client, site_a, alice):
    patient = factories.patient(site_a, alice)
    diagnosis = clinical.diagnosis_record(
        patient=patient, diagnosis_date=factories.DIAGNOSED, cancer="C34", morphology="腺癌",
        stage_group="III", ecog=1, acting_user=alice)
    morphology_term_id = diagnosis.morphology_term_id
    assert morphology_term_id is not None
    client.force_login(alice)
    url = f"/patients/{patient.registry_id}/diagnosis/{diagnosis.pk}/edit/"
    page = client.get(url)
    assert page.status_code == 200
    assert 'data-suggest="morphology"' in page.text
    data = _posted(page.context["form"])
    assert data["morphology"] == "腺癌"
    data["stage_group"] = "IV"

    response = client.post(url, data)

    assert response.status_code == 302, response.context["form"].errors
    stored = Diagnosis.objects.get(pk=diagnosis.pk)
    assert stored.stage_group == "IV"
    assert stored.morphology_term_id == morphology_term_id
    assert stored.version == diagnosis.version + 1
    assert _changed_fields(stored) == {"stage_group", "version"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_posting_a_form_back_unchanged_changes_no_stored_value(client, site_a, alice, kind):
    patient = factories.full_record(site_a, alice)
    record = KINDS[kind].model.objects.filter(patient=patient).order_by("pk").first()
    client.force_login(alice)
    url = f"/patients/{patient.registry_id}/{kind}/{record.pk}/edit/"
    data = _posted(client.get(url).context["form"])

    response = client.post(url, data)

    assert response.status_code == 302, response.context["form"].errors
    stored = type(record).objects.get(pk=record.pk)
    assert stored.version == record.version + 1
    assert _changed_fields(stored) == {"version"}
