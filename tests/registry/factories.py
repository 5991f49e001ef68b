"""Builders of registry rows through the services (so every row passes the registry's checks)."""

from __future__ import annotations

import datetime as dt
import itertools

from registry.audit import audited_save
from registry.models import Concept, ImportBatch, Patient, Site
from registry.services import clinical, workflow
from registry.services.mapping import mapping_approve
from registry.services.terminology import site_term_get_or_create

_numbers = itertools.count(1)

DIAGNOSED = dt.date(2024, 3, 5)


def patient(site: Site, user, **overrides) -> Patient:
    values = {"patient_no": f"H{next(_numbers):06d}", "sex": "F", "birth_year": 1960}
    values.update(overrides)
    return clinical.patient_register(site=site, acting_user=user, **values)


def full_record(site: Site, user) -> Patient:
    """A patient with one row of every clinical kind, plus a mapping of the site's own."""
    p = patient(site, user)
    clinical.diagnosis_record(patient=p, diagnosis_date=DIAGNOSED, cancer="C34",
                              stage_group="IV", ecog=1, acting_user=user)
    line = clinical.treatment_line_record(patient=p, line_no=1, start_date=DIAGNOSED
                                          + dt.timedelta(days=10), regimen="PP",
                                          acting_user=user)
    cycle = clinical.cycle_record(line=line, cycle_no=1, start_date=line.start_date,
                                  acting_user=user)
    clinical.drug_administration_record(cycle=cycle, drug="DDP", dose="75", dose_unit="mg/m2",
                                        acting_user=user)
    clinical.adverse_event_record(patient=p, term="Nausea", grade=2,
                                  onset_date=cycle.start_date + dt.timedelta(days=1),
                                  cycle=cycle, acting_user=user)
    clinical.lab_result_record(patient=p, test="ANC", value="1.2", unit="10^9/L",
                               collected_date=cycle.start_date + dt.timedelta(days=10),
                               cycle=cycle, acting_user=user)
    followup = clinical.followup_record(
        patient=p, followup_date=cycle.start_date + dt.timedelta(days=60),
        vital_status="alive", acting_user=user)
    workflow.query_open(followup, field="ecog", text="ECOG missing?", acting_user=user,
                        automatic=True)
    # An unmapped local word, then mapped from the site's mapping file (an unattended job: a
    # clerk may not decide a word's meaning): a TermMapping row of this site.
    term = site_term_get_or_create(site=site, domain="drug", text="力比泰注射液", acting_user=user)
    mapping_approve(site_term=term, concept=Concept.objects.get(code="L01BA04"),
                    acting_user=None, method="file", reason="site mapping file")
    audited_save(ImportBatch(site=site, uploaded_by=user, source_name="extract.zip"),
                 acting_user=user, reason="extract received")
    return p
