"""Standard vocabularies, each site's local words, and the mappings between them."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from registry import limits as L
from registry.models.history import history_records
from registry.models.organisation import Site


class Domain(models.TextChoices):
    CONDITION = "condition", _("Diagnosis")
    MORPHOLOGY = "morphology", _("Morphology")
    DRUG = "drug", _("Drug")
    ADVERSE_EVENT = "adverse_event", _("Adverse event")
    LAB = "lab", _("Lab test")
    UNIT = "unit", _("Unit")
    REGIMEN = "regimen", _("Regimen")


class Vocabulary(models.Model):
    """ATC, LOINC, ICD10, ICDO3, CTCAE, UCUM, or the registry's own (REGISTRY)."""

    code = models.CharField(max_length=L.VOCABULARY_CODE_MAX_LENGTH, unique=True)
    name = models.CharField(max_length=L.VOCABULARY_NAME_MAX_LENGTH)
    version = models.CharField(max_length=L.VOCABULARY_VERSION_MAX_LENGTH, blank=True)

    history = history_records()

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "vocabularies"

    def __str__(self) -> str:
        return self.code


class Concept(models.Model):
    """A standard concept.

    `attributes` holds what the clinical rules need, by domain: a drug's `emetogenic_class`
    and `fn_risk`; a lab's `canonical_unit` (a UCUM code) and reference range; a CTCAE term's
    `grades` (grade -> definition; a grade absent from it does not exist for the term).
    """

    vocabulary = models.ForeignKey(Vocabulary, on_delete=models.PROTECT, related_name="concepts")
    code = models.CharField(max_length=L.CONCEPT_CODE_MAX_LENGTH)
    domain = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Domain.choices)
    name_en = models.CharField(max_length=L.CONCEPT_NAME_MAX_LENGTH)
    name_zh = models.CharField(max_length=L.CONCEPT_NAME_MAX_LENGTH, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    omop_concept_id = models.BigIntegerField(null=True, blank=True, unique=True)
    is_active = models.BooleanField(default=True)

    history = history_records()

    class Meta:
        ordering = ["vocabulary", "code"]
        constraints = [
            models.UniqueConstraint(fields=["vocabulary", "code"], name="concept_unique_code"),
        ]
        indexes = [models.Index(fields=["domain", "is_active"], name="concept_domain_idx")]

    def __str__(self) -> str:
        return f"{self.vocabulary.code} {self.code} {self.name_en}"

    def allowed_grades(self) -> set[int]:
        return {int(g) for g in self.attributes.get("grades", {})}


class ConceptSynonym(models.Model):
    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="synonyms")
    name = models.CharField(max_length=L.CONCEPT_NAME_MAX_LENGTH)
    language = models.CharField(max_length=L.LANGUAGE_CODE_MAX_LENGTH, default="en")

    history = history_records()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["concept", "name"], name="synonym_unique_per_concept"),
        ]

    def __str__(self) -> str:
        return self.name


class UnitConversion(models.Model):
    """value_in_to_unit = value_in_from_unit * factor; `lab` empty means any lab."""

    lab = models.ForeignKey(
        Concept, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    from_unit = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+")
    to_unit = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="+")
    factor = models.FloatField()

    history = history_records()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lab", "from_unit", "to_unit"], name="conversion_unique_per_lab"
            ),
            models.UniqueConstraint(
                fields=["from_unit", "to_unit"],
                condition=Q(lab__isnull=True),
                name="conversion_unique_generic",
            ),
            models.CheckConstraint(condition=Q(factor__gt=0), name="conversion_factor_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.from_unit.code} -> {self.to_unit.code} x{self.factor}"


class SiteTerm(models.Model):
    """A local word as one site writes it, in one domain; every coded value points at one."""

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="terms")
    domain = models.CharField(max_length=L.CHOICE_MAX_LENGTH, choices=Domain.choices)
    text = models.CharField(max_length=L.TERM_TEXT_MAX_LENGTH)
    normalised = models.CharField(max_length=L.TERM_TEXT_MAX_LENGTH, db_index=True)
    frequency = models.PositiveIntegerField(default=0)
    # A reviewer's judgement that no concept fits this word (it leaves the review queue).
    unmappable = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    history = history_records()

    class Meta:
        ordering = ["site", "domain", "text"]
        constraints = [
            models.UniqueConstraint(fields=["site", "domain", "text"], name="siteterm_unique"),
        ]
        indexes = [models.Index(fields=["site", "domain"], name="siteterm_site_domain_idx")]

    def __str__(self) -> str:
        return f"{self.site.code}:{self.domain}:{self.text}"


class MappingStatus(models.TextChoices):
    SUGGESTED = "suggested", _("Suggested")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")


class TermMapping(models.Model):
    """A site term's link to a concept; at most one approved mapping per term."""

    class Method(models.TextChoices):
        EXACT = "exact", _("Exact code or name")
        SYNONYM = "synonym", _("Synonym")
        FUZZY = "fuzzy", _("Fuzzy similarity")
        LEARNED = "learned", _("Approved at another site")
        MANUAL = "manual", _("Chosen by a person")
        FILE = "file", _("Mapping file")

    site_term = models.ForeignKey(SiteTerm, on_delete=models.CASCADE, related_name="mappings")
    concept = models.ForeignKey(Concept, on_delete=models.PROTECT, related_name="mappings")
    status = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=MappingStatus.choices,
        default=MappingStatus.SUGGESTED
    )
    score = models.FloatField(default=0.0)
    method = models.CharField(
        max_length=L.CHOICE_MAX_LENGTH, choices=Method.choices, default=Method.MANUAL
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = history_records()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site_term", "concept"], name="mapping_unique_pair"),
            models.UniqueConstraint(
                fields=["site_term"],
                condition=Q(status="approved"),
                name="mapping_one_approved_per_term",
            ),
            models.CheckConstraint(
                condition=Q(score__gte=0) & Q(score__lte=1), name="mapping_score_0_1"
            ),
        ]
        indexes = [models.Index(fields=["status"], name="mapping_status_idx")]

    def __str__(self) -> str:
        return f"{self.site_term} -> {self.concept.code} ({self.status})"
