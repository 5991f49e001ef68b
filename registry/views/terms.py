"""Small JSON endpoints behind the forms: suggestions for local words, CTCAE grade definitions,
and a lab value's canonical form with the CTCAE grade it proposes."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _

from registry import access, limits
from registry.errors import ValidationFailed
from registry.models import Concept, Domain, MappingStatus
from registry.services.clinical import lab_value_parse
from registry.services.mapping import exact_concept
from registry.services.terminology import approved_concept, convert_to_canonical
from registry.views.common import search_too_long

LIMIT = 15


def _concept_for(user, domain: str, text: str) -> Concept | None:
    if len(text) > limits.TERM_TEXT_MAX_LENGTH:
        return None  # longer than any word the registry holds
    term = access.site_terms_visible(user).filter(domain=domain, text=text).first()
    return approved_concept(term) if term else exact_concept(domain, text)


@login_required
def suggest(request: HttpRequest) -> JsonResponse:
    """The user's sites' own words first (with what they mean), then standard concepts by code,
    name or synonym, Chinese or English: typing DDP or 顺铂 offers cisplatin."""
    domain = request.GET.get("domain", "")
    q = request.GET.get("q", "").strip()
    if len(q) > limits.SEARCH_MAX_LENGTH:
        return search_too_long()
    if domain not in Domain.values or not q:
        return JsonResponse({"results": []})
    results, seen = [], set()
    terms = (access.site_terms_visible(request.user)
             .filter(domain=domain, text__icontains=q).order_by("-frequency")[:LIMIT])
    for term in terms.prefetch_related("mappings__concept"):
        mapped = next((m.concept for m in term.mappings.all()
                       if m.status == MappingStatus.APPROVED), None)
        results.append({"value": term.text, "label": term.text + (
            f" → {mapped.name_en} {mapped.name_zh}" if mapped else " (awaiting mapping)")})
        seen.add(term.text)
    concepts = (Concept.objects.filter(domain=domain, is_active=True)
                .filter(Q(code__iexact=q) | Q(name_en__icontains=q) | Q(name_zh__icontains=q)
                        | Q(synonyms__name__icontains=q))
                .distinct().order_by("code")[:LIMIT])
    for concept in concepts:
        value = concept.name_en if domain != Domain.UNIT else concept.code
        if value not in seen:
            results.append({"value": value,
                            "label": f"{concept.name_en} {concept.name_zh} ({concept.code})"})
            seen.add(value)
    return JsonResponse({"results": results[:LIMIT]})


@login_required
def grades(request: HttpRequest) -> JsonResponse:
    concept = _concept_for(request.user, Domain.ADVERSE_EVENT, request.GET.get("term", ""))
    if concept is None:
        return JsonResponse({"term": None, "grades": {}})
    return JsonResponse({"term": concept.name_en, "name_zh": concept.name_zh,
                         "grades": concept.attributes.get("grades", {})})


def propose_grade(lab: Concept, value: float, comparator: str = "") -> tuple[str, int] | None:
    """The CTCAE term and grade a lab value in the canonical unit suggests, if any.

    A censored value is graded by what it says of the true value: "<0.5" is below 0.5, so
    neutrophils "<0.5 x 10^9/L" are grade 4 (CTCAE: <0.5), not the grade 3 of 0.5 itself;
    ">1000" is above 1000. A band the bound does not settle ("<=0.5", ">0.3" for a fall)
    takes the grade the bound itself has."""
    def below(threshold: float) -> bool:
        return value <= threshold if comparator == "<" else value < threshold

    def above(bound: float) -> bool:
        return value >= bound if comparator == ">" else value > bound

    for term in Concept.objects.filter(vocabulary__code="CTCAE",
                                       attributes__lab=lab.code):
        rule = term.attributes.get("lab_grading", {})
        if rule.get("direction") == "below":
            grade = 0
            low = lab.attributes.get("reference_low")
            if low is not None and below(low):
                grade = 1
            for g, threshold in sorted(rule["thresholds"].items()):
                if below(threshold):
                    grade = max(grade, int(g))
            return (term.name_en, grade) if grade else None
        if rule.get("direction") == "above_uln":
            uln = lab.attributes.get("reference_high")
            if not uln or not above(uln):
                return None
            grade = 1
            for g, multiple in sorted(rule["uln_multiples"].items()):
                if above(multiple * uln):
                    grade = max(grade, int(g))
            return term.name_en, grade
    return None


@login_required
def lab_preview(request: HttpRequest) -> JsonResponse:
    lab = _concept_for(request.user, Domain.LAB, request.GET.get("test", ""))
    unit = _concept_for(request.user, Domain.UNIT, request.GET.get("unit", ""))
    value = request.GET.get("value", "")
    if len(value) > limits.LAB_VALUE_MAX_LENGTH:
        return JsonResponse({"error": _("A lab value is at most %(n)d characters.")
                             % {"n": limits.LAB_VALUE_MAX_LENGTH}}, status=400)
    try:
        comparator, number = lab_value_parse(value)
    except ValidationFailed as error:
        return JsonResponse({"error": error.summary()})
    if lab is None or unit is None:
        return JsonResponse({"error": None, "canonical": None,
                             "note": "test or unit not mapped yet"})
    value, canonical = convert_to_canonical(lab=lab, unit=unit, value=number)
    if value is None:
        return JsonResponse({"canonical": None, "note": f"{unit.code} does not convert to "
                             f"{lab.attributes.get('canonical_unit')}"})
    proposal = propose_grade(lab, value, comparator)
    return JsonResponse({
        "canonical": f"{comparator}{value:g} {canonical.code}",
        "proposed": {"term": proposal[0], "grade": proposal[1]} if proposal else None})

