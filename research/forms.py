"""Forms of the research pages. They check shapes (lengths, numbers, choices); the services
check the rules, and their errors are shown at the fields they name."""

from __future__ import annotations

import json
import re

from django import forms
from django.conf import settings
from django.contrib.auth.models import User
from django.utils.translation import gettext_lazy as _

from registry import limits as registry_limits
from research import catalog
from research import limits as L
from research.models import Purpose, SiteParticipation, VoteChoice

TEXTAREA = {"rows": 4, "cols": 70}
# User names typed into one box: separated by commas, semicolons or spaces (Chinese commas
# included). Codes and stages are split by research.criteria itself.
NAME_SEPARATORS = re.compile(r"[,\s;，；]+")
# The longest list text a box takes: the most items the services accept, each at its longest,
# with a separator.
CODES_TEXT_MAX_LENGTH = L.CRITERIA_LIST_MAX * (L.CRITERIA_CODE_MAX_LENGTH + 2)
TEAM_TEXT_MAX_LENGTH = L.TEAM_MAX * (User._meta.get_field("username").max_length + 2)
# Criteria given as one JSON object (the feasibility endpoint): every key at its longest.
CRITERIA_JSON_MAX_LENGTH = 2 * CODES_TEXT_MAX_LENGTH + 200

CLASS_LABELS = {
    catalog.DIRECT: _("Direct identifier: never released"),
    catalog.QUASI: _("Quasi-identifier: needs explicit approval"),
    catalog.CLINICAL: _("Clinical"),
}


def split_names(text: str) -> list[str]:
    return [item for item in NAME_SEPARATORS.split(text or "") if item]


class CriteriaFields(forms.Form):
    """The cohort criteria, as typed (research.criteria checks and normalises them)."""

    cancer = forms.CharField(
        label=_("Cancer codes (ICD-10, e.g. C34, C50.9)"), required=False,
        max_length=CODES_TEXT_MAX_LENGTH)
    diagnosis_year_from = forms.IntegerField(
        label=_("Diagnosed from year"), required=False, min_value=L.DIAGNOSIS_YEAR_MIN,
        max_value=L.DIAGNOSIS_YEAR_MAX)
    diagnosis_year_to = forms.IntegerField(
        label=_("Diagnosed up to year"), required=False, min_value=L.DIAGNOSIS_YEAR_MIN,
        max_value=L.DIAGNOSIS_YEAR_MAX)
    stage_groups = forms.CharField(
        label=_("Stage groups (e.g. III, IV)"), required=False,
        max_length=CODES_TEXT_MAX_LENGTH)
    chemotherapy = forms.BooleanField(
        label=_("Only patients treated with chemotherapy"), required=False)

    def criteria_given(self) -> object:
        """The criteria for research.criteria.criteria_clean (valid forms only)."""
        d = self.cleaned_data
        return {"cancer": d["cancer"], "stage_groups": d["stage_groups"],
                "diagnosis_year_from": d["diagnosis_year_from"],
                "diagnosis_year_to": d["diagnosis_year_to"],
                "chemotherapy": d["chemotherapy"]}


class RequestForm(CriteriaFields):
    """Every field of a data request. Sites and variables are offered from the active sites
    and the requestable catalog (direct identifiers are never offered)."""

    field_order = ["title", "question", "protocol_summary", "purpose", "access_days"]

    title = forms.CharField(label=_("Title"), max_length=L.TITLE_MAX_LENGTH)
    question = forms.CharField(label=_("Research question"), max_length=L.QUESTION_MAX_LENGTH,
                               widget=forms.Textarea(attrs=TEXTAREA))
    protocol_summary = forms.CharField(label=_("Protocol summary"), required=False,
                                       max_length=L.PROTOCOL_MAX_LENGTH,
                                       widget=forms.Textarea(attrs=TEXTAREA))
    purpose = forms.ChoiceField(label=_("Purpose"), choices=Purpose.choices)
    access_days = forms.IntegerField(
        label=_("Access period (days)"), min_value=L.ACCESS_DAYS_MIN,
        max_value=L.ACCESS_DAYS_MAX, initial=365)
    sites = forms.MultipleChoiceField(label=_("Sites asked"), required=False,
                                      widget=forms.CheckboxSelectMultiple)
    variables = forms.MultipleChoiceField(label=_("Variables"), required=False,
                                          widget=forms.CheckboxSelectMultiple)
    team = forms.CharField(label=_("Team (user names, separated by commas)"), required=False,
                           max_length=TEAM_TEXT_MAX_LENGTH)

    def __init__(self, *args, site_choices, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sites"].choices = site_choices
        self.fields["variables"].choices = [(v.name, v.name) for v in catalog.requestable()]

    def request_fields(self) -> dict:
        """The fields for research.services.requests (valid forms only)."""
        d = self.cleaned_data
        return {"title": d["title"], "question": d["question"],
                "protocol_summary": d["protocol_summary"], "purpose": d["purpose"],
                "access_days": d["access_days"], "criteria": self.criteria_given(),
                "variables": list(d["variables"]), "site_codes": list(d["sites"]),
                "team": split_names(d["team"])}

    @staticmethod
    def initial_of(request) -> dict:
        criteria = request.criteria or {}
        return {"title": request.title, "question": request.question,
                "protocol_summary": request.protocol_summary, "purpose": request.purpose,
                "access_days": request.access_days,
                "cancer": ", ".join(criteria.get("cancer", [])),
                "stage_groups": ", ".join(criteria.get("stage_groups", [])),
                "diagnosis_year_from": criteria.get("diagnosis_year_from"),
                "diagnosis_year_to": criteria.get("diagnosis_year_to"),
                "chemotherapy": bool(criteria.get("chemotherapy")),
                "sites": list(request.sites.values_list("code", flat=True)),
                "variables": list(request.variables),
                "team": ", ".join(request.team.order_by("username")
                                  .values_list("username", flat=True))}


class FeasibilityForm(CriteriaFields):
    """The feasibility endpoint's query: the request form's criteria, purpose and sites, or the
    criteria as one JSON object."""

    purpose = forms.ChoiceField(choices=Purpose.choices, required=False)
    sites = forms.MultipleChoiceField(required=False)
    # A query string is not a checkbox: only these words (research.criteria reads them).
    chemotherapy = forms.ChoiceField(required=False, choices=[
        (v, v) for v in ("", "on", "true", "false")])
    criteria = forms.CharField(required=False, max_length=CRITERIA_JSON_MAX_LENGTH)

    def __init__(self, *args, site_choices, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sites"].choices = site_choices

    def clean_criteria(self) -> object:
        text = self.cleaned_data["criteria"]
        if not text:
            return None
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise forms.ValidationError(_("The criteria are not valid JSON.")) from None

    def criteria_given(self) -> object:
        given = self.cleaned_data.get("criteria")
        return super().criteria_given() if given is None else given


def _comment(label, *, required: bool = False) -> forms.CharField:
    return forms.CharField(label=label, required=required, max_length=L.COMMENT_MAX_LENGTH,
                           widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class VoteForm(forms.Form):
    choice = forms.ChoiceField(label=_("Your vote"), choices=VoteChoice.choices,
                               widget=forms.RadioSelect)
    comment = _comment(_("Comment (required unless you approve)"))


class RecusalForm(forms.Form):
    statement = _comment(_("Conflict of interest (what it is)"))


class DecisionForm(forms.Form):
    conditions = _comment(_("Conditions of the approval"))
    approved_quasi_identifiers = forms.MultipleChoiceField(
        label=_("Quasi-identifiers the release may contain"), required=False,
        widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, quasi_identifiers, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["approved_quasi_identifiers"].choices = quasi_identifiers
        # The committee's floor is a setting (read per form, never at import).
        floor = max(L.K_MIN, settings.RELEASE_K_ANONYMITY)
        self.fields["k_anonymity"] = forms.IntegerField(
            label=_("k of k-anonymity"), min_value=floor, max_value=L.K_MAX, initial=floor)


class AnswerForm(forms.Form):
    answer = forms.ChoiceField(
        label=_("Answer"), widget=forms.RadioSelect,
        choices=[(SiteParticipation.Answer.OPTED_IN, _("Opt in")),
                 (SiteParticipation.Answer.DECLINED, _("Decline"))])
    comment = _comment(_("Comment"))


class CatalogFilterForm(forms.Form):
    q = forms.CharField(label=_("Search"), required=False,
                        max_length=registry_limits.SEARCH_MAX_LENGTH)
    table = forms.ChoiceField(label=_("Table"), required=False)
    klass = forms.ChoiceField(label=_("Class"), required=False,
                              choices=[("", _("All classes")), *CLASS_LABELS.items()])

    def __init__(self, *args, tables, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["table"].choices = [("", _("All tables")), *tables]
