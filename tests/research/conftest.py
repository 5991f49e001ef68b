"""Personas of the committee's work beside the registry's (tests/conftest.py): carol votes,
cleo is a second member, chad chairs, priya is site PI of site A, sam site PI of site B, ivan
requests (and works at Westlake University, like carol)."""

from __future__ import annotations

import datetime as dt

import pytest

from registry.models import Role
from registry.services import clinical, workflow
from research.models import Organisation
from research.services.requests import affiliation_set, organisation_upsert
from tests.conftest import _person
from tests.registry.factories import patient


@pytest.fixture(autouse=True)
def release_dir(settings, tmp_path):
    """Release files of this test in a folder of their own."""
    settings.RELEASE_DIR = tmp_path / "releases"
    return settings.RELEASE_DIR


@pytest.fixture
def committee_rules(settings):
    settings.COMMITTEE_QUORUM = 2
    settings.COMMITTEE_MAJORITY_PCT = 50
    settings.RELEASE_K_ANONYMITY = 2
    return settings


@pytest.fixture
def cleo(db):
    return _person("cleo", Role.COMMITTEE)


@pytest.fixture
def chad(db):
    return _person("chad", Role.CHAIR)


@pytest.fixture
def priya(site_a):
    return _person("priya", Role.SITE_PI, [site_a])


@pytest.fixture
def sam(site_b):
    return _person("sam", Role.SITE_PI, [site_b])


@pytest.fixture
def westlake(db):
    return organisation_upsert(name="Westlake University", kind=Organisation.Kind.ACADEMIC,
                               acting_user=None)


def submitted_patient(site, user, *, cancer="C34", diagnosed=dt.date(2021, 3, 5),
                      stage="IV", birth_year=1960, sex="F", consent="academic",
                      treated=True):
    """A patient with a diagnosis (and a line and cycle when `treated`), all submitted."""
    p = patient(site, user, birth_year=birth_year, sex=sex, consent_scope=consent)
    clinical.diagnosis_record(patient=p, diagnosis_date=diagnosed, cancer=cancer,
                              stage_group=stage, ecog=1, acting_user=user)
    if treated:
        line = clinical.treatment_line_record(patient=p, line_no=1, regimen="PP",
                                              start_date=diagnosed + dt.timedelta(days=10),
                                              acting_user=user)
        clinical.cycle_record(line=line, cycle_no=1, start_date=line.start_date,
                              acting_user=user)
    workflow.patient_submit(p, acting_user=user)
    p.refresh_from_db()
    return p


@pytest.fixture
def affiliated(ivan, carol, westlake):
    affiliation_set(user=ivan, organisation=westlake, acting_user=None)
    affiliation_set(user=carol, organisation=westlake, acting_user=None)
