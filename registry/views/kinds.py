"""How each kind of clinical record maps between its form and its service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.db import models

from registry import forms as f
from registry import kinds as catalogue
from registry.biomarkers import format_biomarkers, parse_biomarkers
from registry.models import (
    Cycle,
    Patient,
    TreatmentLine,
)
from registry.services import clinical


def _cycle_choices(patient: Patient, required: bool) -> list[tuple[str, str]]:
    cycles = Cycle.objects.filter(patient=patient).select_related("line").order_by(
        "line__line_no", "cycle_no")
    choices = [(str(c.pk), f"L{c.line.line_no} C{c.cycle_no} ({c.start_date})") for c in cycles]
    return choices if required else [("", "—"), *choices]


def _cycle(patient: Patient, value: str) -> Cycle | None:
    return Cycle.objects.filter(patient=patient, pk=value).first() if value else None


@dataclass
class Kind:
    """A record kind of the catalogue (registry.kinds) with its form and how the form saves."""

    name: str
    form: type[forms.Form]
    save: Callable  # (patient, data, instance, version, reason, user) -> record
    initial: Callable[[models.Model], dict]
    prepare: Callable[[forms.Form, Patient], None] = lambda form, patient: None

    @property
    def record(self) -> catalogue.RecordKind:
        return catalogue.KINDS[self.name]

    @property
    def label(self) -> Any:
        return self.record.label

    @property
    def model(self) -> type[models.Model]:
        return self.record.model


def _save_diagnosis(patient, d, instance, version, reason, user):
    return clinical.diagnosis_record(
        patient=patient, diagnosis_date=d["diagnosis_date"], cancer=d["cancer"],
        morphology=d["morphology"], stage_system=d["stage_system"],
        stage_group=d["stage_group"], t=d["t"], n=d["n"], m=d["m"], ecog=d["ecog"],
        biomarkers=parse_biomarkers(d["biomarkers"]),
        instance=instance, expected_version=version, change_reason=reason, acting_user=user)


def _save_line(patient, d, instance, version, reason, user):
    return clinical.treatment_line_record(
        patient=patient, line_no=d["line_no"], regimen=d["regimen"], intent=d["intent"],
        start_date=d["start_date"], end_date=d["end_date"], instance=instance,
        expected_version=version, change_reason=reason, acting_user=user)


def _save_cycle(patient, d, instance, version, reason, user):
    line = TreatmentLine.objects.get(patient=patient, pk=d["line"])
    return clinical.cycle_record(
        line=line, cycle_no=d["cycle_no"], start_date=d["start_date"],
        length_days=d["length_days"], bsa_m2=d["bsa_m2"], instance=instance,
        expected_version=version, change_reason=reason, acting_user=user)


def _save_drug(patient, d, instance, version, reason, user):
    return clinical.drug_administration_record(
        cycle=_cycle(patient, d["cycle"]), drug=d["drug"], day=d["day"], dose=d["dose"],
        dose_unit=d["dose_unit"], route=d["route"], purpose=d["purpose"], instance=instance,
        expected_version=version, change_reason=reason, acting_user=user)


def _save_ae(patient, d, instance, version, reason, user):
    return clinical.adverse_event_record(
        patient=patient, term=d["term"], grade=d["grade"], onset_date=d["onset_date"],
        resolved_date=d["resolved_date"], serious=d["serious"],
        cycle=_cycle(patient, d["cycle"]), instance=instance, expected_version=version,
        change_reason=reason, acting_user=user)


def _save_lab(patient, d, instance, version, reason, user):
    return clinical.lab_result_record(
        patient=patient, test=d["test"], collected_date=d["collected_date"], value=d["value"],
        unit=d["unit"], cycle=_cycle(patient, d["cycle"]), instance=instance,
        expected_version=version, change_reason=reason, acting_user=user)


def _save_followup(patient, d, instance, version, reason, user):
    return clinical.followup_record(
        patient=patient, followup_date=d["followup_date"], vital_status=d["vital_status"],
        progression=d["progression"], progression_date=d["progression_date"], ecog=d["ecog"],
        cause_of_death=d["cause_of_death"], instance=instance, expected_version=version,
        change_reason=reason, acting_user=user)


def _prepare_cycle(form, patient):
    lines = TreatmentLine.objects.filter(patient=patient).order_by("line_no")
    form.fields["line"].choices = [(str(x.pk), f"L{x.line_no} {x.start_date}") for x in lines]


def _prepare_required_cycle(form, patient):
    form.fields["cycle"].choices = _cycle_choices(patient, required=True)


def _prepare_optional_cycle(form, patient):
    form.fields["cycle"].choices = _cycle_choices(patient, required=False)


# Every record kind of the catalogue recorded about a patient has its form (a test checks).
KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("diagnosis", f.DiagnosisForm, _save_diagnosis,
         lambda r: {"diagnosis_date": r.diagnosis_date, "cancer": r.cancer_term.text,
                    "morphology": r.morphology_term.text if r.morphology_term else "",
                    "stage_system": r.stage_system, "stage_group": r.stage_group, "t": r.t,
                    "n": r.n, "m": r.m, "ecog": r.ecog,
                    "biomarkers": format_biomarkers(r.biomarkers)}),
    Kind("treatmentline", f.TreatmentLineForm, _save_line,
         lambda r: {"line_no": r.line_no, "regimen": r.regimen_term.text if r.regimen_term
                    else "", "intent": r.intent, "start_date": r.start_date,
                    "end_date": r.end_date}),
    Kind("cycle", f.CycleForm, _save_cycle,
         lambda r: {"line": str(r.line_id), "cycle_no": r.cycle_no, "start_date": r.start_date,
                    "length_days": r.length_days, "bsa_m2": r.bsa_m2}, _prepare_cycle),
    Kind("drugadministration", f.DrugForm, _save_drug,
         lambda r: {"cycle": str(r.cycle_id), "day": r.day, "drug": r.drug_term.text,
                    "dose": "" if r.dose is None else f"{r.dose.normalize():f}",
                    "dose_unit": r.dose_unit, "route": r.route, "purpose": r.purpose},
         _prepare_required_cycle),
    Kind("adverseevent", f.AdverseEventForm, _save_ae,
         lambda r: {"term": r.ae_term.text, "grade": r.grade, "onset_date": r.onset_date,
                    "resolved_date": r.resolved_date, "serious": r.serious,
                    "cycle": str(r.cycle_id or "")}, _prepare_optional_cycle),
    Kind("labresult", f.LabForm, _save_lab,
         lambda r: {"test": r.test_term.text, "collected_date": r.collected_date,
                    "value": r.value_text, "unit": r.unit_term.text if r.unit_term else "",
                    "cycle": str(r.cycle_id or "")}, _prepare_optional_cycle),
    Kind("followup", f.FollowUpForm, _save_followup,
         lambda r: {"followup_date": r.followup_date, "vital_status": r.vital_status,
                    "progression": r.progression, "progression_date": r.progression_date,
                    "ecog": r.ecog, "cause_of_death": r.cause_of_death}),
]}
