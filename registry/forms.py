"""Forms of the clerk pages. They check shapes (dates, numbers, choices); the services check
the rules, and their errors are shown at the fields they name."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from registry.models import DrugAdministration, FollowUp, Patient, TreatmentLine

DATE = forms.DateInput(attrs={"type": "date"})


def _term_input(domain: str) -> forms.TextInput:
    return forms.TextInput(attrs={"data-suggest": domain, "autocomplete": "off",
                                  "list": f"suggest-{domain}"})


class EditMixin(forms.Form):
    """Hidden version (no lost updates) and the reason asked for after submission."""

    version = forms.IntegerField(widget=forms.HiddenInput, required=False)
    change_reason = forms.CharField(label=_("Reason for change"), required=False,
                                    max_length=500)


class PatientForm(forms.Form):
    site = forms.ChoiceField(label=_("Site"))
    patient_no = forms.CharField(label=_("Hospital patient number"), max_length=64)
    sex = forms.ChoiceField(label=_("Sex"), choices=Patient.Sex.choices)
    birth_year = forms.IntegerField(label=_("Birth year"), min_value=1900, max_value=2100)
    department = forms.ChoiceField(label=_("Department"), required=False)
    consent_scope = forms.ChoiceField(label=_("Consent scope"),
                                      choices=Patient.ConsentScope.choices)
    consent_date = forms.DateField(label=_("Consent date"), required=False, widget=DATE)


class PatientEditForm(EditMixin):
    sex = forms.ChoiceField(label=_("Sex"), choices=Patient.Sex.choices)
    birth_year = forms.IntegerField(label=_("Birth year"), min_value=1900, max_value=2100)
    department = forms.ChoiceField(label=_("Department"), required=False)
    consent_scope = forms.ChoiceField(label=_("Consent scope"),
                                      choices=Patient.ConsentScope.choices)
    consent_date = forms.DateField(label=_("Consent date"), required=False, widget=DATE)


class DiagnosisForm(EditMixin):
    diagnosis_date = forms.DateField(label=_("Diagnosis date"), widget=DATE)
    cancer = forms.CharField(label=_("Cancer (local word or ICD-10)"), max_length=500,
                             widget=_term_input("condition"))
    stage_system = forms.CharField(label=_("Stage system"), required=False, max_length=16)
    stage_group = forms.CharField(label=_("Stage group"), required=False, max_length=16)
    t = forms.CharField(label="T", required=False, max_length=8)
    n = forms.CharField(label="N", required=False, max_length=8)
    m = forms.CharField(label="M", required=False, max_length=8)
    ecog = forms.IntegerField(label="ECOG", required=False, min_value=0, max_value=4)
    biomarkers = forms.CharField(label=_("Biomarkers (EGFR+; ALK-)"), required=False,
                                 max_length=500)


class TreatmentLineForm(EditMixin):
    line_no = forms.IntegerField(label=_("Line"), min_value=1, max_value=20)
    regimen = forms.CharField(label=_("Regimen"), required=False, max_length=500,
                              widget=_term_input("regimen"))
    intent = forms.ChoiceField(label=_("Intent"), required=False,
                               choices=[("", "—"), *TreatmentLine.Intent.choices])
    start_date = forms.DateField(label=_("Start date"), widget=DATE)
    end_date = forms.DateField(label=_("End date"), required=False, widget=DATE)


class CycleForm(EditMixin):
    line = forms.ChoiceField(label=_("Line"))
    cycle_no = forms.IntegerField(label=_("Cycle"), min_value=1, max_value=100)
    start_date = forms.DateField(label=_("Start date"), widget=DATE)
    length_days = forms.IntegerField(label=_("Cycle length (days)"), required=False,
                                     min_value=1, max_value=90)
    bsa_m2 = forms.DecimalField(label=_("Body surface area (m²)"), required=False,
                                max_digits=4, decimal_places=2)


class DrugForm(EditMixin):
    cycle = forms.ChoiceField(label=_("Cycle"))
    day = forms.IntegerField(label=_("Day"), min_value=1, max_value=60, initial=1)
    drug = forms.CharField(label=_("Drug"), max_length=500, widget=_term_input("drug"))
    dose = forms.CharField(label=_("Dose"), required=False, max_length=20)
    dose_unit = forms.ChoiceField(label=_("Dose unit"), required=False,
                                  choices=[("", "—"), *DrugAdministration.DoseUnit.choices])
    route = forms.ChoiceField(label=_("Route"), required=False,
                              choices=[("", "—"), *DrugAdministration.Route.choices])
    purpose = forms.ChoiceField(label=_("Purpose"), choices=DrugAdministration.Purpose.choices)


class AdverseEventForm(EditMixin):
    term = forms.CharField(label=_("Adverse event (CTCAE term or local word)"), max_length=500,
                           widget=_term_input("adverse_event"))
    grade = forms.TypedChoiceField(label=_("CTCAE grade"), coerce=int,
                                   choices=[(g, str(g)) for g in range(1, 6)])
    onset_date = forms.DateField(label=_("Onset"), widget=DATE)
    resolved_date = forms.DateField(label=_("Resolved"), required=False, widget=DATE)
    serious = forms.BooleanField(label=_("Serious (hospitalisation)"), required=False)
    cycle = forms.ChoiceField(label=_("Cycle"), required=False)


class LabForm(EditMixin):
    test = forms.CharField(label=_("Test"), max_length=500, widget=_term_input("lab"))
    collected_date = forms.DateField(label=_("Collected"), widget=DATE)
    value = forms.CharField(label=_("Value (as written, e.g. 1.2 or <0.5)"), max_length=64)
    unit = forms.CharField(label=_("Unit (as written)"), required=False, max_length=64,
                           widget=_term_input("unit"))
    cycle = forms.ChoiceField(label=_("Cycle"), required=False)


class FollowUpForm(EditMixin):
    followup_date = forms.DateField(label=_("Follow-up date"), widget=DATE)
    vital_status = forms.ChoiceField(label=_("Vital status"),
                                     choices=FollowUp.VitalStatus.choices)
    progression = forms.NullBooleanField(label=_("Progression"), required=False)
    progression_date = forms.DateField(label=_("Progression date"), required=False, widget=DATE)
    ecog = forms.IntegerField(label="ECOG", required=False, min_value=0, max_value=4)
    cause_of_death = forms.CharField(label=_("Cause of death"), required=False, max_length=500)


class SignatureForm(forms.Form):
    password = forms.CharField(label=_("Your password (e-signature)"),
                               widget=forms.PasswordInput)


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500)


class QueryForm(forms.Form):
    field = forms.CharField(label=_("Field"), required=False, max_length=64)
    text = forms.CharField(label=_("Question"), widget=forms.Textarea(attrs={"rows": 2}))


class AnswerForm(forms.Form):
    answer = forms.CharField(label=_("Answer"), widget=forms.Textarea(attrs={"rows": 2}))
