"""A record's version moves in one place, by one per change, on every path."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from registry.audit import version_bump
from registry.models import Patient, RecordStatus
from registry.services import clinical, workflow
from tests.registry import factories

REGISTRY = Path(__file__).resolve().parents[2] / "registry"
BUMP = re.compile(r"version\s*\+=|version\s*=\s*[\w.\"()]*version[\w\"()]*\s*\+\s*1")


def test_only_the_helper_bumps_a_version():
    found = [f"{path.relative_to(REGISTRY)}:{number}"
             for path in sorted(REGISTRY.rglob("*.py")) if "migrations" not in path.parts
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if BUMP.search(line)]
    assert found == ["audit.py:46", "audit.py:52"]  # version_bump and its SQL form


def test_version_bump_counts_one_change():
    patient = Patient(version=3)
    assert version_bump(patient) == 4
    assert patient.version == 4


@pytest.mark.usefixtures("vocabulary")
@pytest.mark.django_db(transaction=True)
def test_every_change_of_a_record_counts_one(site_a, alice, mona):
    patient = factories.patient(site_a, alice)
    assert patient.version == 1
    patient = clinical.patient_withdraw(patient=patient, withdrawn_date=dt.date(2025, 1, 2),
                                        acting_user=mona, reason="consent withdrawn")
    assert Patient.objects.get(pk=patient.pk).version == 2
    workflow.record_submit(patient, acting_user=alice)
    stored = Patient.objects.get(pk=patient.pk)
    assert (stored.version, stored.status) == (3, RecordStatus.SUBMITTED)
    assert stored.history.count() == 3
