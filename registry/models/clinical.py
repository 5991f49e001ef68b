"""The clinical record: patients and what happened to them.

Every row carries its site (copied from the patient by the services) so that site scoping is
one indexed filter, and its workflow status and version. Coded values keep the site term they
came from; the concept is filled from the term's approved mapping and may be empty until the
term is mapped.
"""

import secrets

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from registry import limits as L
from registry.models.history import WORD_HISTORY_INDEXED, history_records
from registry.models.organisation import Department, Site
from registry.models.terminology import Concept, SiteTerm

# Crockford base32 without I, L, O, U: readable on paper and over the phone.
_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_registry_id() -> str:
    """A random, non-guessable pseudonym such as R7KD2M9QXH4TB (60 bits of randomness)."""
    return "R" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


class RecordStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SUBMITTED = "submitted", _("Submitted")
    VERIFIED = "verified", _("Verified")
    LOCKED = "locked", _("Locked")


class SiteOwned(models.Model):
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=RecordStatus.choices, default=RecordStatus.DRAFT
    )
    # Incremented by every service write: an edit made against an older version is refused.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Provenance: the import that last wrote this row (empty for rows entered in forms).
    import_batch = models.ForeignKey(
        "registry.ImportBatch", on_delete=models.PROTECT, null=True, blank=True,
        related_name="+", db_index=False,
    )

    class Meta:
        abstract = True


def _ecog_check(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(ecog__isnull=True) | Q(ecog__gte=0, ecog__lte=4), name=name
    )


class Patient(SiteOwned):
    class Sex(models.TextChoices):
        MALE = "M", _("Male")
        FEMALE = "F", _("Female")

    class ConsentScope(models.TextChoices):
        ACADEMIC = "academic", _("Academic research")
        COMMERCIAL = "commercial", _("Academic and commercial research")

    registry_id = models.CharField(
        max_length=L.REGISTRY_ID_MAX_LENGTH, unique=True, default=new_registry_id
    )
    department = models.ForeignKey(
        Department, on_delete=models.PROTECT, null=True, blank=True, related_name="patients"
    )
    # HMAC-SHA256 of the hospital's patient number under the registry pepper (never stored raw).
    hospital_number_hash = models.CharField(max_length=L.HASH_HEX_LENGTH)
    sex = models.CharField(max_length=L.SEX_MAX_LENGTH, choices=Sex.choices)
    birth_year = models.PositiveSmallIntegerField()
    consent_scope = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=ConsentScope.choices, default=ConsentScope.ACADEMIC
    )
    consent_date = models.DateField(null=True, blank=True)
    withdrawn_date = models.DateField(null=True, blank=True)
    # Derived from the patient's follow-ups by registry.services.clinical.followup_summary_refresh
    # (never edited, not audited: the follow-ups themselves are), so that "due for follow-up"
    # is one index range scan at any cohort size.
    last_followup_date = models.DateField(null=True, blank=True, editable=False)
    followup_closed = models.BooleanField(default=False, editable=False)

    history = history_records(excluded_fields=["last_followup_date", "followup_closed"])

    class Meta:
        ordering = ["registry_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "hospital_number_hash"], name="patient_unique_hospital_number"
            ),
            models.CheckConstraint(condition=Q(sex__in=["M", "F"]), name="patient_sex_valid"),
            models.CheckConstraint(
                condition=Q(birth_year__gte=1900, birth_year__lte=2100),
                name="patient_birth_year_plausible",
            ),
            models.CheckConstraint(
                condition=Q(consent_scope__in=["academic", "commercial"]),
                name="patient_consent_scope_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["site", "status"], name="patient_site_status_idx"),
            models.Index(fields=["site", "-updated_at", "-id"], name="patient_site_updated_idx"),
            models.Index(
                fields=["site", "last_followup_date"], name="patient_followup_due_idx",
                condition=Q(followup_closed=False, withdrawn_date__isnull=True,
                            last_followup_date__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.registry_id


class Diagnosis(SiteOwned):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="diagnoses")
    diagnosis_date = models.DateField()
    cancer_term = models.ForeignKey(SiteTerm, on_delete=models.PROTECT, related_name="+")
    cancer = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    morphology_term = models.ForeignKey(
        SiteTerm, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    morphology = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    stage_system = models.CharField(max_length=L.STAGE_MAX_LENGTH, blank=True)  # e.g. AJCC8, BCLC
    stage_group = models.CharField(max_length=L.STAGE_MAX_LENGTH, blank=True)
    t = models.CharField(max_length=L.TNM_MAX_LENGTH, blank=True)
    n = models.CharField(max_length=L.TNM_MAX_LENGTH, blank=True)
    m = models.CharField(max_length=L.TNM_MAX_LENGTH, blank=True)
    ecog = models.PositiveSmallIntegerField(null=True, blank=True)
    biomarkers = models.JSONField(default=dict, blank=True)

    history = history_records(indexed=WORD_HISTORY_INDEXED)

    class Meta:
        ordering = ["patient_id", "diagnosis_date"]
        verbose_name_plural = "diagnoses"
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "diagnosis_date", "cancer_term"], name="diagnosis_natural_key"
            ),
            _ecog_check("diagnosis_ecog_0_4"),
        ]
        indexes = [models.Index(fields=["site", "cancer"], name="diagnosis_site_cancer_idx")]

    def __str__(self) -> str:
        return f"{self.patient_id} {self.diagnosis_date} {self.cancer_term_id}"


class TreatmentLine(SiteOwned):
    class Intent(models.TextChoices):
        NEOADJUVANT = "neoadjuvant", _("Neoadjuvant")
        ADJUVANT = "adjuvant", _("Adjuvant")
        CURATIVE = "curative", _("Curative")
        PALLIATIVE = "palliative", _("Palliative")
        OTHER = "other", _("Other")

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="lines")
    line_no = models.PositiveSmallIntegerField()
    regimen_term = models.ForeignKey(
        SiteTerm, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    regimen = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    intent = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Intent.choices, blank=True)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)

    history = history_records(indexed=WORD_HISTORY_INDEXED)

    class Meta:
        ordering = ["patient_id", "line_no"]
        constraints = [
            models.UniqueConstraint(fields=["patient", "line_no"], name="line_natural_key"),
            models.CheckConstraint(condition=Q(line_no__gte=1), name="line_no_positive"),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gte=F("start_date")),
                name="line_end_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.patient_id} line {self.line_no}"


class Cycle(SiteOwned):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="cycles")
    line = models.ForeignKey(TreatmentLine, on_delete=models.CASCADE, related_name="cycles")
    cycle_no = models.PositiveSmallIntegerField()
    start_date = models.DateField()
    length_days = models.PositiveSmallIntegerField(null=True, blank=True)
    bsa_m2 = models.DecimalField(
        max_digits=L.BSA_MAX_DIGITS, decimal_places=L.BSA_DECIMAL_PLACES, null=True, blank=True
    )

    history = history_records()

    class Meta:
        ordering = ["line_id", "cycle_no"]
        constraints = [
            models.UniqueConstraint(fields=["line", "cycle_no"], name="cycle_natural_key"),
            models.CheckConstraint(condition=Q(cycle_no__gte=1), name="cycle_no_positive"),
            models.CheckConstraint(
                condition=Q(bsa_m2__isnull=True) | Q(bsa_m2__gt=0), name="cycle_bsa_positive"
            ),
        ]
        indexes = [models.Index(fields=["site", "start_date"], name="cycle_site_start_idx")]

    def __str__(self) -> str:
        return f"{self.line} cycle {self.cycle_no}"


class DrugAdministration(SiteOwned):
    class DoseUnit(models.TextChoices):
        MG = "mg", "mg"
        MG_M2 = "mg/m2", "mg/m²"
        MG_KG = "mg/kg", "mg/kg"
        AUC = "AUC", "AUC"
        G = "g", "g"
        UG = "ug", "µg"

    class Route(models.TextChoices):
        IV = "iv", _("Intravenous")
        PO = "po", _("Oral")
        SC = "sc", _("Subcutaneous")
        IM = "im", _("Intramuscular")
        OTHER = "other", _("Other")

    class Purpose(models.TextChoices):
        ANTINEOPLASTIC = "antineoplastic", _("Antineoplastic")
        ANTIEMETIC = "antiemetic", _("Antiemetic")
        GCSF = "gcsf", _("G-CSF")
        OTHER = "other", _("Other")

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="drugs")
    cycle = models.ForeignKey(Cycle, on_delete=models.CASCADE, related_name="drugs")
    day = models.PositiveSmallIntegerField(default=1)
    drug_term = models.ForeignKey(SiteTerm, on_delete=models.PROTECT, related_name="+")
    drug = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    dose = models.DecimalField(
        max_digits=L.DOSE_MAX_DIGITS, decimal_places=L.DOSE_DECIMAL_PLACES, null=True, blank=True
    )
    dose_unit = models.CharField(
        max_length=L.SHORT_CHOICE_MAX_LENGTH, choices=DoseUnit.choices, blank=True
    )
    route = models.CharField(
        max_length=L.SHORT_CHOICE_MAX_LENGTH, choices=Route.choices, blank=True
    )
    purpose = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=Purpose.choices, default=Purpose.ANTINEOPLASTIC
    )

    history = history_records(indexed=WORD_HISTORY_INDEXED)

    class Meta:
        ordering = ["cycle_id", "day", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["cycle", "day", "drug_term"], name="drug_natural_key"
            ),
            models.CheckConstraint(condition=Q(day__gte=1), name="drug_day_positive"),
            models.CheckConstraint(
                condition=Q(dose__isnull=True) | Q(dose__gt=0), name="drug_dose_positive"
            ),
        ]
        indexes = [models.Index(fields=["site", "drug"], name="drug_site_concept_idx")]

    def __str__(self) -> str:
        return f"{self.cycle} day {self.day} {self.drug_term_id}"


class AdverseEvent(SiteOwned):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="adverse_events")
    ae_term = models.ForeignKey(SiteTerm, on_delete=models.PROTECT, related_name="+")
    ae = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    ctcae_version = models.CharField(max_length=L.CTCAE_VERSION_MAX_LENGTH, default="5.0")
    grade = models.PositiveSmallIntegerField()
    onset_date = models.DateField()
    resolved_date = models.DateField(null=True, blank=True)
    serious = models.BooleanField(default=False)
    cycle = models.ForeignKey(
        Cycle, on_delete=models.SET_NULL, null=True, blank=True, related_name="adverse_events"
    )

    history = history_records(indexed=WORD_HISTORY_INDEXED)

    class Meta:
        ordering = ["patient_id", "onset_date"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "ae_term", "onset_date"], name="ae_natural_key"
            ),
            models.CheckConstraint(condition=Q(grade__gte=1, grade__lte=5), name="ae_grade_1_5"),
            models.CheckConstraint(
                condition=Q(resolved_date__isnull=True) | Q(resolved_date__gte=F("onset_date")),
                name="ae_resolved_after_onset",
            ),
        ]
        indexes = [models.Index(fields=["site", "ae", "grade"], name="ae_site_term_grade_idx")]

    def __str__(self) -> str:
        return f"{self.patient_id} {self.ae_term_id} G{self.grade}"


class LabResult(SiteOwned):
    class Comparator(models.TextChoices):
        EQ = "", "="
        LT = "<", "<"
        LE = "<=", "≤"
        GT = ">", ">"
        GE = ">=", "≥"

    class UnitFlag(models.TextChoices):
        OK = "", _("Converted")
        MISSING = "missing", _("No unit given")
        UNMAPPED = "unmapped", _("Unit not yet mapped")
        UNCONVERTIBLE = "unconvertible", _("Unit cannot be converted to the canonical unit")

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="labs")
    test_term = models.ForeignKey(SiteTerm, on_delete=models.PROTECT, related_name="+")
    lab = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    collected_date = models.DateField()
    value_text = models.CharField(max_length=L.LAB_VALUE_MAX_LENGTH)  # exactly as entered
    comparator = models.CharField(
        max_length=L.COMPARATOR_MAX_LENGTH, choices=Comparator.choices, blank=True
    )
    value = models.FloatField(null=True, blank=True)  # numeric part, in the unit as entered
    unit_term = models.ForeignKey(
        SiteTerm, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    unit = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    value_canonical = models.FloatField(null=True, blank=True)
    canonical_unit = models.ForeignKey(
        Concept, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    unit_flag = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=UnitFlag.choices, blank=True
    )
    cycle = models.ForeignKey(
        Cycle, on_delete=models.SET_NULL, null=True, blank=True, related_name="labs"
    )

    history = history_records(indexed=WORD_HISTORY_INDEXED)

    class Meta:
        ordering = ["patient_id", "collected_date"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "test_term", "collected_date"], name="lab_natural_key"
            ),
            models.CheckConstraint(
                condition=Q(comparator__in=["", "<", "<=", ">", ">="]), name="lab_comparator_valid"
            ),
            models.CheckConstraint(
                condition=Q(value_canonical__isnull=True) | Q(canonical_unit__isnull=False),
                name="lab_canonical_value_has_unit",
            ),
        ]
        indexes = [models.Index(fields=["site", "lab"], name="lab_site_concept_idx")]

    def __str__(self) -> str:
        return f"{self.patient_id} {self.test_term_id} {self.value_text}"


class FollowUp(SiteOwned):
    class VitalStatus(models.TextChoices):
        ALIVE = "alive", _("Alive")
        DEAD = "dead", _("Dead")
        LOST = "lost", _("Lost to follow-up")

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="followups")
    followup_date = models.DateField()
    vital_status = models.CharField(
        max_length=L.SHORT_CHOICE_MAX_LENGTH, choices=VitalStatus.choices
    )
    progression = models.BooleanField(null=True, blank=True)
    progression_date = models.DateField(null=True, blank=True)
    ecog = models.PositiveSmallIntegerField(null=True, blank=True)
    cause_of_death = models.CharField(max_length=L.CAUSE_OF_DEATH_MAX_LENGTH, blank=True)

    history = history_records()

    class Meta:
        ordering = ["patient_id", "followup_date"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "followup_date"], name="followup_natural_key"
            ),
            models.CheckConstraint(
                condition=Q(vital_status__in=["alive", "dead", "lost"]),
                name="followup_vital_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(progression_date__isnull=True)
                | Q(progression_date__lte=F("followup_date")),
                name="followup_progression_not_after_visit",
            ),
            _ecog_check("followup_ecog_0_4"),
        ]

    def __str__(self) -> str:
        return f"{self.patient_id} {self.followup_date} {self.vital_status}"
