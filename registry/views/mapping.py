"""The mapping review queue: a site's words awaiting a concept, most frequent first."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from registry import access, limits
from registry.errors import RegistryError
from registry.models import (
    Concept,
    Domain,
    ImportBatch,
    MappingStatus,
    SiteTerm,
    TermMapping,
)
from registry.services.mapping import (
    REVIEW_ROLES,
    USES,
    has_clear_margin,
    mapping_reject,
    mapping_review_approve,
    recode_pending,
    suggest,
    term_mark_unmappable,
)
from registry.services.organisation import require_site_role
from registry.suggestion_scoring import MIN_MARGIN, suggestion_margin
from registry.views.common import id_param, ids_param, redirect_back, search_too_long

PAGE_SIZE = 25
SEARCH_LIMIT = 15  # concepts offered while a reviewer types another one


def _samples(term: SiteTerm, waiting: dict, limit: int = 3) -> list[str]:
    """Stored rows that use the word, else rows of the imports waiting for it."""
    out = []
    for model, term_field, _concept_field in USES[term.domain]:
        for row in model.objects.filter(**{term_field: term}).select_related("patient")[:limit]:
            out.append(f"{row.patient.registry_id} · {row}")
    for batch_id, sample in waiting.get((term.site_id, term.domain, term.text), []):
        out.append(_("import #%(batch)s · %(file)s row %(row)s · %(cells)s") % {
            "batch": batch_id, "file": sample["file"], "row": sample["row"],
            "cells": sample.get("cells", "")})
    return out[:limit]


def _waiting_samples(site_ids: set[int]) -> dict:
    """{(site, domain, word): [(import, sample row)]} from the sites' imports that stopped in
    "needs mapping"."""
    waiting: dict = {}
    for batch_id, site_id, unmapped in ImportBatch.objects.filter(
            site_id__in=site_ids, dry_run=False,
            status=ImportBatch.Status.NEEDS_MAPPING).values_list("pk", "site_id", "unmapped"):
        for word in unmapped:
            waiting.setdefault((site_id, word["domain"], word["text"]), []).extend(
                (batch_id, sample) for sample in word.get("samples", []))
    return waiting


@login_required
def review_queue(request: HttpRequest) -> HttpResponse:
    domain = request.GET.get("domain", "")
    terms = (access.site_terms_visible(request.user).filter(unmappable=False)
             .exclude(mappings__status=MappingStatus.APPROVED)
             .select_related("site").order_by("-frequency", "text")
             .prefetch_related(Prefetch("mappings", queryset=TermMapping.objects.filter(
                 status=MappingStatus.SUGGESTED).select_related("concept__vocabulary")
                 .order_by("-score"))))
    if domain in Domain.values:
        terms = terms.filter(domain=domain)
    if request.GET.get("site"):
        terms = terms.filter(site__code=request.GET["site"][:limits.SEARCH_MAX_LENGTH])
    page = Paginator(terms, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = []
    waiting = _waiting_samples({term.site_id for term in page})
    for term in page:
        suggestions = [{"concept_id": m.concept_id, "code": m.concept.code,
                        "vocabulary": m.concept.vocabulary.code, "name_en": m.concept.name_en,
                        "name_zh": m.concept.name_zh, "score": m.score, "method": m.method,
                        "mapping_id": m.pk} for m in term.mappings.all()[:3]]
        if not suggestions:
            suggestions = [s.as_dict() for s in suggest(term.domain, term.text, site=term.site,
                                                        limit=3)]
        margin = suggestion_margin([s["score"] for s in suggestions[:2]])
        rows.append({"term": term, "suggestions": suggestions, "samples": _samples(term, waiting),
                     "margin": margin, "clear": bool(suggestions) and margin >= MIN_MARGIN})
    return render(request, "registry/mapping_queue.html", {
        "page": page, "rows": rows, "domains": Domain.choices, "domain": domain,
        "min_margin": MIN_MARGIN})


def _warn_locked(request: HttpRequest, term: SiteTerm) -> None:
    """Name the locked records a re-code left on the word's earlier concept."""
    pending = recode_pending(term)
    if pending:
        messages.warning(request, _(
            "%(n)d locked record(s) keep their earlier concept; they are re-coded when a "
            "monitor unlocks them: %(rows)s") % {
            "n": len(pending),
            "rows": "; ".join(f"{r.site} {r.registry_id} {r.kind} #{r.id}" for r in pending)})


@login_required
@require_POST
def review_act(request: HttpRequest) -> HttpResponse:
    terms = access.site_terms_visible(request.user)
    action = request.POST.get("action")
    try:
        if action == "approve":
            term = get_object_or_404(terms, pk=id_param(request.POST.get("term")))
            concept = get_object_or_404(Concept, pk=id_param(request.POST.get("concept")),
                                        domain=term.domain)
            mapping_review_approve(term=term, concept=concept, acting_user=request.user)
            _warn_locked(request, term)
        elif action == "choose":
            term = get_object_or_404(terms, pk=id_param(request.POST.get("term")))
            vocabulary, _sep, code = request.POST.get("concept_code", "").partition(":")
            concept = Concept.objects.filter(vocabulary__code=vocabulary, code=code,
                                             domain=term.domain).first()
            if concept is None:
                messages.error(request, _("No such concept: choose one from the list."))
                return redirect_back(request, "mapping_queue")
            mapping_review_approve(term=term, concept=concept, acting_user=request.user)
            _warn_locked(request, term)
        elif action == "reject":
            mapping = get_object_or_404(TermMapping.objects.filter(site_term__in=terms),
                                        pk=id_param(request.POST.get("mapping")))
            require_site_role(request.user, mapping.site_term.site, REVIEW_ROLES)
            mapping_reject(mapping=mapping, acting_user=request.user)
            _warn_locked(request, mapping.site_term)
        elif action == "unmappable":
            term = get_object_or_404(terms, pk=id_param(request.POST.get("term")))
            reason = request.POST.get("reason", "")
            if len(reason) > limits.REASON_MAX_LENGTH:
                messages.error(request, _("A reason is at most %(n)d characters.")
                               % {"n": limits.REASON_MAX_LENGTH})
                return redirect_back(request, "mapping_queue")
            term_mark_unmappable(term=term, acting_user=request.user, reason=reason)
        elif action == "bulk":
            count, unclear = 0, []
            for term in terms.filter(pk__in=ids_param(request.POST.getlist("terms"))):
                best = suggest(term.domain, term.text, site=term.site, limit=2)
                if not has_clear_margin(best):
                    unclear.append(term.text)  # a person compares the suggestions
                    continue
                mapping_review_approve(term=term,
                                       concept=Concept.objects.get(pk=best[0].concept_id),
                                       acting_user=request.user,
                                       reason="bulk approval of the top suggestion")
                count += 1
            messages.success(request, _("%(n)d mappings approved.") % {"n": count})
            if unclear:
                messages.warning(request, _(
                    "Not approved, the first suggestion has no clear lead over the next "
                    "(choose one yourself): %(words)s") % {"words": ", ".join(unclear)})
        else:
            messages.error(request, _("Unknown action."))
    except RegistryError as error:
        messages.error(request, error.summary())
    return redirect_back(request, "mapping_queue")


@login_required
def concept_search(request: HttpRequest) -> JsonResponse:
    """Concepts of a domain by code, name or synonym, for picking another concept."""
    domain = request.GET.get("domain", "")
    q = request.GET.get("q", "").strip()
    if len(q) > limits.SEARCH_MAX_LENGTH:
        return search_too_long()
    if domain not in Domain.values or not q:
        return JsonResponse({"results": []})
    found = [(s.vocabulary, s.code, s.name_en, s.name_zh)
             for s in suggest(domain, q, limit=SEARCH_LIMIT)]
    if len(found) < SEARCH_LIMIT:
        # Suggestions match a short word exactly or not at all; a person typing one is
        # searching, so names that start with it follow.
        seen = {(v, c) for v, c, _en, _zh in found}
        found += [row for row in Concept.objects.filter(domain=domain, is_active=True).filter(
            Q(name_en__istartswith=q) | Q(name_zh__startswith=q)
            | Q(synonyms__name__istartswith=q)).distinct().order_by("code").values_list(
            "vocabulary__code", "code", "name_en", "name_zh")[:SEARCH_LIMIT]
            if (row[0], row[1]) not in seen]
    return JsonResponse({"results": [
        {"value": f"{v}:{c}", "label": f"{en} {zh} ({c})"} for v, c, en, zh in
        found[:SEARCH_LIMIT]]})
