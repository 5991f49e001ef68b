"""Rules the database itself enforces, whatever path writes the row."""

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction

from registry.models import AdverseEvent, FollowUp, TreatmentLine
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


def _refused(obj):
    with pytest.raises(IntegrityError), transaction.atomic():
        obj.save()


def test_database_refuses_bad_grades_and_disordered_dates(site_a, alice):
    p = factories.full_record(site_a, alice)
    ae = AdverseEvent.objects.get(patient=p)
    ae.grade = 6
    _refused(ae)
    ae.refresh_from_db()
    ae.resolved_date = ae.onset_date - dt.timedelta(days=1)
    _refused(ae)
    line = TreatmentLine.objects.get(patient=p)
    line.end_date = line.start_date - dt.timedelta(days=1)
    _refused(line)
    fu = FollowUp.objects.get(patient=p)
    fu.ecog = 7
    _refused(fu)


def test_natural_keys_are_unique_in_the_database(site_a, alice):
    p = factories.full_record(site_a, alice)
    ae = AdverseEvent.objects.get(patient=p)
    ae.pk = None
    _refused(ae)


@pytest.mark.postgres
def test_runs_on_postgresql_with_its_constraints():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conname IN "
            "('ae_grade_1_5', 'patient_unique_hospital_number')"
        )
        assert len(cursor.fetchall()) == 2
        # A partial unique constraint is a unique index with a predicate in PostgreSQL.
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = "
                       "'mapping_one_approved_per_term'")
        (definition,) = cursor.fetchone()
        assert "UNIQUE" in definition and "WHERE" in definition
