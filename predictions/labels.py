"""Translated labels of the risk models' keys (predictions.ml keeps plain English and keys)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

RISK_MODEL_LABELS = {
    "cinv": _("Chemotherapy-induced nausea and vomiting"),
    "neutropenia": _("Severe neutropenia"),
}

TARGET_LABELS = {
    "cinv": _("Nausea or vomiting of CTCAE grade 2 or higher in the cycle"),
    "neutropenia": _("Neutrophil count decreased of CTCAE grade 3 or higher, or febrile "
                     "neutropenia, in the cycle"),
}

TIER_LABELS = {
    ("cinv", "low"): _("Low (< 10%)"),
    ("cinv", "moderate"): _("Moderate (10-90%)"),
    ("cinv", "high"): _("High (> 90%)"),
    ("neutropenia", "low"): _("Low (< 10%)"),
    ("neutropenia", "intermediate"): _("Intermediate (10-20%)"),
    ("neutropenia", "high"): _("High (>= 20%)"),
}

# The model card's intended and out-of-scope use (predictions.selectors.scoring.model_card).
INTENDED_USE = {
    "cinv": _("Before a chemotherapy cycle of an adult with a solid cancer, estimate the risk "
              "of nausea or vomiting of CTCAE grade 2 or higher during the cycle, so that the "
              "treating team can choose antiemetic prophylaxis by the guideline tier (fewer "
              "than 10%: none; 10-90%: one or two agents; above 90%: three). It supports, and "
              "does not replace, clinical judgement; research and partners may use it to "
              "describe or plan cohorts."),
    # xgettext:no-python-format
    "neutropenia": _("Before a chemotherapy cycle of an adult with a solid cancer, estimate the "
                     "risk of neutrophil count decreased of CTCAE grade 3 or higher, or febrile "
                     "neutropenia, during the cycle, so that the treating team can weigh "
                     "primary G-CSF prophylaxis by the guideline tier (20% or more: primary "
                     "G-CSF). It supports, and does not replace, clinical judgement; research "
                     "and partners may use it to describe or plan cohorts."),
}

OUT_OF_SCOPE_USE = {
    "cinv": _("Not for children, haematological cancers, radiotherapy-induced or "
              "anticipatory nausea, or regimens and hospitals unlike those it was trained on; "
              "not a diagnosis, not for deciding whether to treat, and not for judging a "
              "hospital or a clinician. A probability computed from inputs that were not known "
              "before the cycle started (later labs, the cycle's own adverse events) is "
              "meaningless."),
    "neutropenia": _("Not for children, haematological cancers, stem-cell transplantation, or "
                     "regimens and hospitals unlike those it was trained on; not a diagnosis, "
                     "not a substitute for a blood count before the cycle, not for deciding "
                     "whether to treat, and not for judging a hospital or a clinician. A "
                     "probability computed from inputs that were not known before the cycle "
                     "started (later labs, the cycle's own adverse events) is meaningless."),
}

ACTION_LABELS = {
    "no_antiemetic": _("No antiemetic prophylaxis"),
    "one_or_two_antiemetics": _("One or two antiemetic agents"),
    "three_antiemetics": _("Three antiemetic agents"),
    "no_gcsf": _("No routine G-CSF"),
    "consider_gcsf": _("Consider G-CSF with patient risk factors"),
    "primary_gcsf": _("Primary G-CSF prophylaxis"),
}

ALGORITHM_LABELS = {
    "naive_bayes": _("Naive Bayes"),
    "logistic_regression": _("Regularised logistic regression"),
    "gradient_boosting": _("Histogram gradient boosting"),
}

FEATURE_LABELS = {
    "female": _("Female"),
    "age": _("Age"),
    "age_under_50": _("Age under 50"),
    "age_65_plus": _("Age 65 or over"),
    "ecog": _("ECOG performance status"),
    "ecog_missing": _("ECOG not recorded"),
    "ecog_2_plus": _("ECOG 2 or worse"),
    "emetogenic_ordinal": _("Emetogenic level of the regimen"),
    "emetogenic_class": _("Emetogenic class of the regimen"),
    "fn_risk_ordinal": _("Febrile-neutropenia risk level of the regimen"),
    "fn_risk": _("Febrile-neutropenia risk class of the regimen"),
    "cycle_no": _("Cycle number"),
    "line_no": _("Treatment line"),
    "patient_cycle_index": _("Cycles so far"),
    "first_cycle": _("First cycle"),
    "days_since_last_cycle": _("Days since the last cycle"),
    "prev_cycle_cinv": _("Nausea or vomiting in the previous cycle"),
    "earlier_cinv": _("Nausea or vomiting in earlier cycles"),
    "antiemetic_agents": _("Antiemetic agents planned"),
    "antiemetic_shortfall": _("Antiemetic agents short of the guideline"),
    "antiemetic_inadequate": _("Antiemetic prophylaxis below the guideline"),
    "prev_cycle_neutropenia": _("Severe neutropenia in the previous cycle"),
    "earlier_neutropenia": _("Severe neutropenia in earlier cycles"),
    "gcsf_planned": _("G-CSF planned"),
    "log_anc": _("Neutrophil count before the cycle"),
    "anc_missing": _("No recent neutrophil count"),
    "anc_days_before": _("Days since the neutrophil count"),
    "log_wbc": _("White cell count before the cycle"),
    "platelets": _("Platelets before the cycle"),
    "hemoglobin": _("Haemoglobin before the cycle"),
    "log_alt": _("ALT before the cycle"),
    "cancer": _("Cancer"),
    "stage": _("Stage"),
    "regimen": _("Regimen"),
}


def label(mapping: dict, key, default: str = "") -> str:
    return str(mapping.get(key, default or key))
