"""Forms of the clerk pages. They check shapes (dates, numbers, choices); the services check
the rules, and their errors are shown at the fields they name."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from registry import limits as L
from registry.models import Domain, DrugAdministration, FollowUp, Patient, TreatmentLine

DATE = forms.DateInput(attrs={"type": "date"})


def _term_input(domain: str) -> forms.TextInput:
    return forms.TextInput(attrs={"data-suggest": domain, "autocomplete": "off",
                                  "list": f"suggest-{domain}"})


VERSION_MISSING = _("The version of the record being edited is missing or not a number; "
                    "reload the record and enter your change again.")


def _term(label, *, domain: str, required: bool = True) -> forms.CharField:
    return forms.CharField(label=label, required=required, max_length=L.TERM_TEXT_MAX_LENGTH,
                           widget=_term_input(domain))


def _year() -> forms.IntegerField:
    return forms.IntegerField(label=_("Birth year"), min_value=L.BIRTH_YEAR_MIN,
                              max_value=L.BIRTH_YEAR_MAX)


def _ecog() -> forms.IntegerField:
    return forms.IntegerField(label="ECOG", required=False, min_value=L.ECOG_MIN,
                              max_value=L.ECOG_MAX)


class EditMixin(forms.Form):
    """Hidden version (no lost updates) and the reason asked for after submission."""

    version = forms.IntegerField(
        widget=forms.HiddenInput, required=False, min_value=1, max_value=L.VERSION_MAX,
        error_messages={"required": VERSION_MISSING, "invalid": VERSION_MISSING,
                        "min_value": VERSION_MISSING, "max_value": VERSION_MISSING})
    change_reason = forms.CharField(label=_("Reason for change"), required=False,
                                    max_length=L.REASON_MAX_LENGTH)


class PatientForm(forms.Form):
    site = forms.ChoiceField(label=_("Site"))
    patient_no = forms.CharField(label=_("Hospital patient number"),
                                 max_length=L.HOSPITAL_NUMBER_MAX_LENGTH)
    sex = forms.ChoiceField(label=_("Sex"), choices=Patient.Sex.choices)
    birth_year = _year()
    department = forms.ChoiceField(label=_("Department"), required=False)
    consent_scope = forms.ChoiceField(label=_("Consent scope"),
                                      choices=Patient.ConsentScope.choices)
    consent_date = forms.DateField(label=_("Consent date"), required=False, widget=DATE)


class PatientEditForm(EditMixin):
    sex = forms.ChoiceField(label=_("Sex"), choices=Patient.Sex.choices)
    birth_year = _year()
    department = forms.ChoiceField(label=_("Department"), required=False)
    consent_scope = forms.ChoiceField(label=_("Consent scope"),
                                      choices=Patient.ConsentScope.choices)
    consent_date = forms.DateField(label=_("Consent date"), required=False, widget=DATE)


class DiagnosisForm(EditMixin):
    diagnosis_date = forms.DateField(label=_("Diagnosis date"), widget=DATE)
    cancer = _term(_("Cancer (local word or ICD-10)"), domain="condition")
    morphology = _term(_("Morphology (local word or ICD-O-3)"), domain=Domain.MORPHOLOGY,
                       required=False)
    stage_system = forms.CharField(label=_("Stage system"), required=False,
                                   max_length=L.STAGE_MAX_LENGTH)
    stage_group = forms.CharField(label=_("Stage group"), required=False,
                                  max_length=L.STAGE_MAX_LENGTH)
    t = forms.CharField(label="T", required=False, max_length=L.TNM_MAX_LENGTH)
    n = forms.CharField(label="N", required=False, max_length=L.TNM_MAX_LENGTH)
    m = forms.CharField(label="M", required=False, max_length=L.TNM_MAX_LENGTH)
    ecog = _ecog()
    biomarkers = forms.CharField(label=_("Biomarkers (EGFR+; ALK-)"), required=False,
                                 max_length=L.BIOMARKERS_MAX_LENGTH)


class TreatmentLineForm(EditMixin):
    line_no = forms.IntegerField(label=_("Line"), min_value=1, max_value=L.LINE_NO_MAX)
    regimen = _term(_("Regimen"), domain="regimen", required=False)
    intent = forms.ChoiceField(label=_("Intent"), required=False,
                               choices=[("", "—"), *TreatmentLine.Intent.choices])
    start_date = forms.DateField(label=_("Start date"), widget=DATE)
    end_date = forms.DateField(label=_("End date"), required=False, widget=DATE)


class CycleForm(EditMixin):
    line = forms.ChoiceField(label=_("Line"))
    cycle_no = forms.IntegerField(label=_("Cycle"), min_value=1, max_value=L.CYCLE_NO_MAX)
    start_date = forms.DateField(label=_("Start date"), widget=DATE)
    length_days = forms.IntegerField(label=_("Cycle length (days)"), required=False,
                                     min_value=1, max_value=L.CYCLE_LENGTH_DAYS_MAX)
    bsa_m2 = forms.DecimalField(label=_("Body surface area (m²)"), required=False,
                                max_digits=L.BSA_MAX_DIGITS, decimal_places=L.BSA_DECIMAL_PLACES)


class DrugForm(EditMixin):
    cycle = forms.ChoiceField(label=_("Cycle"))
    day = forms.IntegerField(label=_("Day"), min_value=1, max_value=L.CYCLE_DAY_MAX, initial=1)
    drug = _term(_("Drug"), domain="drug")
    # Finite and within the column's digits (NaN, Infinity and 1e10 are refused here); the
    # service refuses a dose that is not positive.
    dose = forms.DecimalField(label=_("Dose"), required=False, max_digits=L.DOSE_MAX_DIGITS,
                              decimal_places=L.DOSE_DECIMAL_PLACES)
    dose_unit = forms.ChoiceField(label=_("Dose unit"), required=False,
                                  choices=[("", "—"), *DrugAdministration.DoseUnit.choices])
    route = forms.ChoiceField(label=_("Route"), required=False,
                              choices=[("", "—"), *DrugAdministration.Route.choices])
    purpose = forms.ChoiceField(label=_("Purpose"), choices=DrugAdministration.Purpose.choices)


class AdverseEventForm(EditMixin):
    term = _term(_("Adverse event (CTCAE term or local word)"), domain="adverse_event")
    grade = forms.TypedChoiceField(label=_("CTCAE grade"), coerce=int,
                                   choices=[(g, str(g)) for g in range(1, 6)])
    onset_date = forms.DateField(label=_("Onset"), widget=DATE)
    resolved_date = forms.DateField(label=_("Resolved"), required=False, widget=DATE)
    serious = forms.BooleanField(label=_("Serious (hospitalisation)"), required=False)
    cycle = forms.ChoiceField(label=_("Cycle"), required=False)


class LabForm(EditMixin):
    test = _term(_("Test"), domain="lab")
    collected_date = forms.DateField(label=_("Collected"), widget=DATE)
    value = forms.CharField(label=_("Value (as written, e.g. 1.2 or <0.5)"),
                            max_length=L.LAB_VALUE_MAX_LENGTH)
    unit = _term(_("Unit (as written)"), domain="unit", required=False)
    cycle = forms.ChoiceField(label=_("Cycle"), required=False)


class FollowUpForm(EditMixin):
    followup_date = forms.DateField(label=_("Follow-up date"), widget=DATE)
    vital_status = forms.ChoiceField(label=_("Vital status"),
                                     choices=FollowUp.VitalStatus.choices)
    progression = forms.NullBooleanField(label=_("Progression"), required=False)
    progression_date = forms.DateField(label=_("Progression date"), required=False, widget=DATE)
    ecog = _ecog()
    cause_of_death = forms.CharField(label=_("Cause of death"), required=False,
                                     max_length=L.CAUSE_OF_DEATH_MAX_LENGTH)


class SignatureForm(forms.Form):
    password = forms.CharField(label=_("Your password (e-signature)"),
                               widget=forms.PasswordInput)


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=L.REASON_MAX_LENGTH)


class QueryForm(forms.Form):
    field = forms.CharField(label=_("Field"), required=False, max_length=L.QUERY_FIELD_MAX_LENGTH)
    text = forms.CharField(label=_("Question"), max_length=L.QUERY_TEXT_MAX_LENGTH,
                           widget=forms.Textarea(attrs={"rows": 2}))


class AnswerForm(forms.Form):
    answer = forms.CharField(label=_("Answer"), max_length=L.QUERY_TEXT_MAX_LENGTH,
                             widget=forms.Textarea(attrs={"rows": 2}))


# The cancers the patient list filters by (ICD-10 categories, subcodes included).
CANCER_FILTERS = ["C15", "C16", "C18", "C19", "C20", "C22", "C25", "C34", "C50"]


class PatientFilterForm(forms.Form):
    """The patient list's query string. A value that is not one of the choices (an id that is
    not a number, a site the user cannot see) is dropped with a message, never a server error."""

    q = forms.CharField(label=_("Search"), required=False, max_length=L.SEARCH_MAX_LENGTH,
                        strip=True)
    cancer = forms.ChoiceField(label=_("Cancer"), required=False,
                               choices=[("", "—"), *((c, c) for c in CANCER_FILTERS)])
    status = forms.ChoiceField(label=_("Status"), required=False)
    department = forms.ChoiceField(label=_("Department"), required=False)
    site = forms.ChoiceField(label=_("Site"), required=False)

    def __init__(self, data, *, statuses, departments, sites) -> None:
        super().__init__(data)
        self.fields["status"].choices = [("", "—"), *statuses]
        self.fields["department"].choices = [("", "—"), *((str(d.pk), d.name)
                                                           for d in departments)]
        self.fields["site"].choices = [("", "—"), *((s.code, s.code) for s in sites)]

    def filters(self) -> tuple[dict[str, str], list[str]]:
        """The valid filters, and the labels of those dropped as invalid."""
        self.is_valid()
        values = {name: self.cleaned_data.get(name) or "" for name in self.fields
                  if name not in self.errors}
        dropped = [str(self.fields[name].label) for name in self.errors]
        return values, dropped
