"""Mapping local words to concepts: ranked suggestions, the site's auto-approval policy, review
decisions, and re-coding every stored row when a word's meaning changes.

Suggestions, best first: the exact code or name, a synonym (both after normalising case, width,
spacing and punctuation, Chinese or English), what other sites already approved for the same
word (learned), then fuzzy similarity (rapidfuzz).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, replace

from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from rapidfuzz import fuzz, process

from registry import suggestion_scoring as scoring
from registry.audit import (
    VERSION_BUMP_SQL,
    audited_save,
    bulk_update_audited,
    update_audited,
    version_bump,
)
from registry.errors import ValidationFailed
from registry.kinds import word_uses
from registry.models import (
    Concept,
    ConceptSynonym,
    Domain,
    LabResult,
    MappingStatus,
    RecordStatus,
    Site,
    SiteTerm,
    TermMapping,
)
from registry.models.organisation import DATA_ENTRY_ROLES, REVIEW_ROLES
from registry.services.organisation import require_site_role
from registry.services.terminology import (
    approved_concept,
    lab_canonical,
    site_term_get_or_create,
)
from registry.services.terminology import (
    normalise_for_domain as _normalise,
)
from registry.suggestion_scoring import FUZZY_CEILING

logger = logging.getLogger(__name__)

SCORE = {TermMapping.Method.EXACT: 1.0, TermMapping.Method.SYNONYM: 0.97}
LEARNED_BASE = 0.9
AUTO_METHODS = {TermMapping.Method.EXACT, TermMapping.Method.SYNONYM, TermMapping.Method.LEARNED}

# Where each domain's words are used: (model, term field, concept field), from the catalogue.
USES: dict[str, list[tuple[type[models.Model], str, str]]] = {
    domain: [(kind.model, word.term, word.concept) for kind, word in word_uses(domain)]
    for domain in Domain}


@dataclass(frozen=True)
class Suggestion:
    concept_id: int
    vocabulary: str
    code: str
    name_en: str
    name_zh: str
    score: float
    method: str
    detail: str = ""
    # On the first suggestion only: its lead over the second (see `suggestion_margin`).
    margin: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _fuzzy_form(domain: str, text: str) -> str:
    """What the fuzzy comparison reads: units as normalised (their case is meaning), drugs and
    regimens without dose and form, diagnoses with their histology folded onto the site."""
    if domain == Domain.UNIT:
        return _normalise(domain, text)
    if domain in (Domain.DRUG, Domain.REGIMEN):
        return scoring.strip_dose_and_form(text)
    if domain == Domain.CONDITION:
        return scoring.fold_histology(text)
    return scoring.fold(text)


class _Index:
    """Every name, Chinese name, code and synonym of a domain's concepts, normalised; for drugs
    and regimens also which drug each drug name means and which drugs each regimen gives."""

    _cache: dict[str, tuple[tuple, _Index]] = {}

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.exact: dict[str, set[int]] = defaultdict(set)
        self.synonym: dict[str, set[int]] = defaultdict(set)
        self.choices: list[str] = []  # compact fuzzy forms, for rapidfuzz
        self.forms: list[str] = []  # the same with their spaces, for token-aware scoring
        self.owners: list[int] = []
        concepts = Concept.objects.filter(domain=domain, is_active=True).values_list(
            "id", "code", "name_en", "name_zh"
        )
        names: list[tuple[str, int]] = []
        for concept_id, code, name_en, name_zh in concepts:
            for name in (code, name_en, name_zh):
                key = _normalise(domain, name)
                if key:
                    self.exact[key].add(concept_id)
                    names.append((name, concept_id))
        synonyms = ConceptSynonym.objects.filter(
            concept__domain=domain, concept__is_active=True
        ).values_list("concept_id", "name")
        for concept_id, name in synonyms:
            key = _normalise(domain, name)
            if key:
                self.synonym[key].add(concept_id)
                names.append((name, concept_id))
        for name, concept_id in names:
            form = _fuzzy_form(domain, name)
            if scoring.compact(form):
                self.choices.append(scoring.compact(form))
                self.forms.append(form)
                self.owners.append(concept_id)
        self.drugs: dict[str, int] = {}  # a drug's normalised name -> the drug, if only one
        self.regimens: dict[frozenset[int], set[int]] = defaultdict(set)
        self.drug_of_regimen: dict[int, frozenset[int]] = {}
        if domain in (Domain.DRUG, Domain.REGIMEN):
            self._add_combinations(domain)

    def _add_combinations(self, domain: str) -> None:
        drugs = self if domain == Domain.DRUG else _Index.get(Domain.DRUG)
        for table in (drugs.exact, drugs.synonym):
            for key, owners in table.items():
                if len(owners) == 1:
                    self.drugs.setdefault(key, next(iter(owners)))
        if domain != Domain.REGIMEN:
            return
        by_code = dict(Concept.objects.filter(domain=Domain.DRUG).values_list("code", "id"))
        for concept_id, attributes in Concept.objects.filter(
                domain=domain, is_active=True).values_list("id", "attributes"):
            given = frozenset(
                by_code[d["drug"]] for phase in (attributes or {}).get("phases", [])
                for d in phase.get("drugs", []) if d.get("drug") in by_code)
            if given:
                self.regimens[given].add(concept_id)
                self.drug_of_regimen[concept_id] = given

    def components(self, text: str) -> list[int] | None:
        """The drugs a combination names, in the order written (培美曲塞+卡铂, 培美曲塞卡铂,
        "paclitaxel carboplatin"); None unless every part is one known drug and there are
        two or more."""
        parts = scoring.combination_parts(text)
        if len(parts) == 1:
            parts = parts[0].split(" ")
        found: list[int] = []
        for part in parts:
            key = _normalise(Domain.DRUG, part)
            if key in self.drugs:
                found.append(self.drugs[key])
                continue
            pieces = scoring.segment(key, self.drugs) if scoring.has_cjk(key) else None
            if pieces is None:
                return None
            found += [self.drugs[piece] for piece in pieces]
        found = list(dict.fromkeys(found))
        return found if len(found) >= 2 else None

    @classmethod
    def get(cls, domain: str) -> _Index:
        stamp = (
            Concept.objects.aggregate(n=Count("id"), m=Max("id")),
            ConceptSynonym.objects.aggregate(n=Count("id"), m=Max("id")),
        )
        key = repr(stamp)
        cached = cls._cache.get(domain)
        if cached is None or cached[0] != key:
            cls._cache[domain] = (key, cls(domain))
        return cls._cache[domain][1]


# A drug-domain word naming several drugs offers each, the first named a little ahead and
# none with a clear margin: one drug row cannot hold a combination, so a person decides.
COMPONENT_STEP = 0.01


def suggest(
    domain: str, text: str, *, site: Site | None = None, limit: int = 5
) -> list[Suggestion]:
    """Ranked concepts for a local word; each with its score (0-1) and method, the first with
    its margin over the second.

    Exact code or name 1.0, synonym 0.97, learned from other sites 0.92-0.98; the rest is
    fuzzy, at most `FUZZY_CEILING`: the same after removing dose and form (or histology), the
    regimen giving exactly the drugs a combination names, else token-aware similarity with
    INN stems (see `registry.suggestion_scoring`)."""
    if domain not in Domain.values:
        raise ValidationFailed(f"Unknown terminology domain {domain!r}.", field="domain")
    key = _normalise(domain, text)
    if not key:
        return []
    index = _Index.get(domain)
    best: dict[int, tuple[float, str, str]] = {}

    def offer(concept_id: int, score: float, method: str, detail: str = "") -> None:
        if concept_id not in best or best[concept_id][0] < score:
            best[concept_id] = (score, method, detail)

    for concept_id in index.exact.get(key, ()):
        offer(concept_id, SCORE[TermMapping.Method.EXACT], TermMapping.Method.EXACT)
    for concept_id in index.synonym.get(key, ()):
        offer(concept_id, SCORE[TermMapping.Method.SYNONYM], TermMapping.Method.SYNONYM)
    learned = (
        TermMapping.objects.filter(
            status=MappingStatus.APPROVED, site_term__domain=domain, site_term__normalised=key
        )
        .exclude(site_term__site=site)
        .values("concept_id")
        .annotate(sites=Count("site_term__site", distinct=True))
    )
    for row in learned:
        sites = row["sites"]
        offer(
            row["concept_id"],
            round(LEARNED_BASE + 0.02 * min(sites, 4), 3),
            TermMapping.Method.LEARNED,
            f"approved at {sites} other site(s)",
        )
    _offer_fuzzy(index, domain, text, key, offer, limit)
    concepts = Concept.objects.select_related("vocabulary").in_bulk(list(best))
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], concepts[item[0]].code))
    suggestions = [
        Suggestion(
            concept_id=cid,
            vocabulary=concepts[cid].vocabulary.code,
            code=concepts[cid].code,
            name_en=concepts[cid].name_en,
            name_zh=concepts[cid].name_zh,
            score=score,
            method=method,
            detail=detail,
        )
        for cid, (score, method, detail) in ranked[:limit]
    ]
    if suggestions:
        margin = scoring.suggestion_margin([score for _cid, (score, _m, _d) in ranked[:2]])
        suggestions[0] = replace(suggestions[0], margin=margin)
    return suggestions


def _offer_fuzzy(index: _Index, domain: str, text: str, key: str, offer, limit: int) -> None:
    fuzzy = TermMapping.Method.FUZZY
    form = _fuzzy_form(domain, text)
    cleaned = _normalise(domain, form)
    if cleaned != key:
        for table, what in ((index.exact, "name"), (index.synonym, "synonym")):
            for concept_id in table.get(cleaned, ()):
                offer(concept_id, FUZZY_CEILING, fuzzy, f"{what} {form!r} once dose, form or "
                      "histology is set aside")
    drugs = index.components(text) if domain in (Domain.DRUG, Domain.REGIMEN) else None
    if drugs and domain == Domain.REGIMEN:
        for concept_id in index.regimens.get(frozenset(drugs), ()):
            offer(concept_id, FUZZY_CEILING, fuzzy, "gives exactly the drugs named")
    elif drugs:
        for position, concept_id in enumerate(drugs):
            offer(concept_id, round(FUZZY_CEILING - 0.05 - COMPONENT_STEP * position, 3),
                  fuzzy, f"one of {len(drugs)} drugs named")
    if not index.choices or scoring.is_abbreviation(scoring.compact(form)):
        return
    query = scoring.compact(form)
    # rapidfuzz narrows the field; the token-aware score decides the order.
    for _choice, _score, position in process.extract(
            query, index.choices, scorer=fuzz.WRatio, limit=limit * 10 + 20, score_cutoff=50):
        similarity = scoring.similarity(form, index.forms[position])
        concept_id = index.owners[position]
        detail = ""
        given = index.drug_of_regimen.get(concept_id, frozenset())
        if drugs and domain == Domain.REGIMEN and given != frozenset(drugs):
            similarity *= scoring.OTHER_DRUGS_PENALTY
            if given > frozenset(drugs):  # adds a drug the word leaves out: once more
                similarity *= scoring.OTHER_DRUGS_PENALTY
            detail = "gives other drugs than the word names"
        if similarity >= scoring.MIN_SIMILARITY:
            offer(concept_id, round(FUZZY_CEILING * similarity, 3), fuzzy, detail)


def exact_concept(domain: str, text: str) -> Concept | None:
    """The one concept whose code, name or synonym equals the word once normalised (None when
    nothing or more than one matches)."""
    index = _Index.get(domain)
    key = _normalise(domain, text)
    matches = index.exact.get(key, set()) | index.synonym.get(key, set())
    if len(matches) != 1:
        return None
    return Concept.objects.select_related("vocabulary").get(pk=next(iter(matches)))


def term_resolve(
    *, site: Site, domain: str, text: str, acting_user: User | None
) -> tuple[SiteTerm, Concept | None]:
    """The site term for `text` and its concept.

    A word with an approved mapping resolves to it. A new word gets suggestions, and is
    approved at once when the site's policy allows (exact, synonym or learned, clear winner);
    otherwise it is stored awaiting review and the concept is None: the clerk is never blocked.
    """
    term = site_term_get_or_create(site=site, domain=domain, text=text, acting_user=acting_user)
    concept = approved_concept(term)
    if concept is None and not term.unmappable and not term.mappings.exists():
        mapping = term_suggestions_store(term, acting_user=acting_user)
        concept = mapping.concept if mapping else None
    return term, concept


def _require_role(acting_user: User | None, site: Site, roles: tuple[str, ...]) -> None:
    """The acting user must hold one of `roles` at `site`; no user is an unattended job (a
    management command, the cohort loader, an import without an uploader), as in
    `batch_create`."""
    if acting_user is not None:
        require_site_role(acting_user, site, roles)


def policy_approves(site: Site, method: str, score: float) -> bool:
    """Whether the site's policy lets a match of this method and score be approved without a
    reviewer (the word is then coded as a clerk enters it)."""
    threshold = site.auto_approve_min_score
    return threshold is not None and method in AUTO_METHODS and score >= threshold


def has_clear_margin(suggestions: list[Suggestion]) -> bool:
    """Whether the first suggestion leads the second by `MIN_MARGIN` or more: the one test for
    approving it without a person comparing them (auto-approval and the page's bulk action)."""
    return scoring.has_clear_margin([s.score for s in suggestions[:2]])


def auto_approvable(site: Site, suggestions: list[Suggestion]) -> Suggestion | None:
    """The suggestion the site's policy approves without review, if any: a clear winner (by
    `MIN_MARGIN`) by an exact, synonym or learned match at or above the site's threshold."""
    if not suggestions or not policy_approves(site, suggestions[0].method, suggestions[0].score):
        return None
    top = suggestions[0]
    if len(suggestions) > 1 and suggestions[1].score >= site.auto_approve_min_score:
        return None  # two concepts claim the word: a person decides
    if not has_clear_margin(suggestions):
        return None
    return top


@transaction.atomic
def term_suggestions_store(
    term: SiteTerm, *, acting_user: User | None, limit: int = 3
) -> TermMapping | None:
    """Record suggestions for a term (status suggested) and approve one if the site's policy
    allows; returns the approved mapping, if any. Whoever enters the site's records may."""
    _require_role(acting_user, term.site, DATA_ENTRY_ROLES)
    suggestions = suggest(term.domain, term.text, site=term.site, limit=limit)
    winner = auto_approvable(term.site, suggestions)
    if winner is not None:
        return mapping_approve(
            site_term=term,
            concept=Concept.objects.get(pk=winner.concept_id),
            acting_user=acting_user,
            method=winner.method,
            score=winner.score,
            reason=f"auto-approved ({winner.method})",
        )
    existing = set(term.mappings.values_list("concept_id", flat=True))
    for s in suggestions:
        if s.concept_id not in existing:
            audited_save(
                TermMapping(
                    site_term=term,
                    concept_id=s.concept_id,
                    score=s.score,
                    method=s.method,
                    status=MappingStatus.SUGGESTED,
                ),
                acting_user=acting_user,
                reason="suggested",
            )
    return None


@transaction.atomic
def mapping_approve(
    *,
    site_term: SiteTerm,
    concept: Concept,
    acting_user: User | None,
    method: str = TermMapping.Method.MANUAL,
    score: float = 1.0,
    reason: str = "mapping approved",
) -> TermMapping:
    """Make `concept` the approved meaning of the word and re-code every stored row that came
    from it (audited, in this transaction). A previous approval is withdrawn.

    A reviewer of the site decides a word's meaning; whoever enters its records may only
    approve what the site's policy approves without review (an exact, synonym or learned match
    at or above its threshold)."""
    _require_role(acting_user, site_term.site,
                  DATA_ENTRY_ROLES if policy_approves(site_term.site, method, score)
                  else REVIEW_ROLES)
    if concept.domain != site_term.domain:
        raise ValidationFailed(
            f"{concept} is a {concept.domain} concept; the word {site_term.text!r} is a "
            f"{site_term.domain} word.",
            field="concept",
        )
    previous = None
    for other in (
        TermMapping.objects.select_for_update()
        .filter(site_term=site_term, status=MappingStatus.APPROVED)
        .exclude(concept=concept)
    ):
        previous = other.concept
        other.status = MappingStatus.REJECTED
        other.reviewed_by, other.reviewed_at = acting_user, timezone.now()
        audited_save(other, acting_user=acting_user, reason=f"superseded: {reason}")
    mapping = TermMapping.objects.filter(site_term=site_term, concept=concept).first()
    if mapping is not None and mapping.status == MappingStatus.APPROVED:
        # Approving it again re-codes the rows left behind while they were locked.
        recode(site_term, concept, acting_user=acting_user,
               reason=f"re-coded {site_term.text!r} after unlock: {concept.code} ({reason})")
        return mapping
    mapping = mapping or TermMapping(site_term=site_term, concept=concept)
    mapping.status, mapping.method, mapping.score = MappingStatus.APPROVED, method, score
    mapping.reviewed_by, mapping.reviewed_at = acting_user, timezone.now()
    audited_save(mapping, acting_user=acting_user, reason=reason)
    if site_term.unmappable:
        site_term.unmappable = False
        audited_save(site_term, acting_user=acting_user, reason=reason)
    old = f"{previous.code}" if previous else "unmapped"
    recode(
        site_term,
        concept,
        acting_user=acting_user,
        reason=f"re-coded {site_term.text!r}: {old} -> {concept.code} ({reason})",
    )
    return mapping


@dataclass(frozen=True)
class LockedRow:
    """A locked record a re-code left alone: it keeps its old concept until unlocked."""

    site: str
    registry_id: str
    kind: str
    id: int


@dataclass(frozen=True)
class RecodeResult:
    changed: int
    locked: tuple[LockedRow, ...] = ()


def _locked_rows(rows: list[models.Model]) -> list[LockedRow]:
    return [LockedRow(site=row.site.code, registry_id=row.patient.registry_id,
                      kind=row._meta.model_name, id=row.pk) for row in rows]


# Rows per re-coding statement, by id range: memory and each statement's work stay bounded
# however many rows use the word.
RECODE_BATCH_IDS = 100_000


@transaction.atomic
def recode(
    site_term: SiteTerm, concept: Concept | None, *, acting_user: User | None, reason: str,
    batch_ids: int = RECODE_BATCH_IDS,
) -> RecodeResult:
    """Point every row that came from `site_term` at `concept`; labs get their canonical value
    recomputed. Locked records are never changed here (only an unlock opens them): they keep
    their old concept and are returned in `locked`, and `recode_pending` lists them until they
    are re-coded: when unlocked (`record_unlock` calls `record_recode`), or by approving the
    same concept again.

    Set-based on PostgreSQL: per use of the word, one UPDATE per range of `batch_ids` ids,
    each writing the history rows of the rows it changed in the same statement (version
    bumped, the acting user and `reason`), all in this transaction; memory does not grow with
    the number of rows.

    Whoever enters the site's records may bring its rows to the word's current meaning (the
    mapping services decided it, each checking its own role); re-coding to anything else is
    a reviewer's decision. No acting user is the system (an unattended job)."""
    _require_role(acting_user, site_term.site,
                  DATA_ENTRY_ROLES if _is_current_meaning(site_term, concept) else REVIEW_ROLES)
    changed = 0
    locked: list[LockedRow] = []
    for model, term_field, concept_field in USES[site_term.domain]:
        rows = _recodable(model, term_field, concept_field, site_term, concept)
        survey = _survey(model, concept_field, rows)
        if survey.locked:
            locked += _locked_rows(rows.filter(status=RecordStatus.LOCKED)
                                   .select_related("site", "patient").order_by("pk"))
        if connection.vendor == "postgresql":
            changed += _recode_in_sets(model, term_field, concept_field, site_term, concept,
                                       survey, acting_user=acting_user, reason=reason,
                                       batch_ids=batch_ids)
        else:  # the embedded SQLite demo: no data-modifying WITH
            changed += _recode_row_by_row(model, concept_field, rows, concept,
                                          acting_user=acting_user, reason=reason,
                                          batch_ids=batch_ids)
    return RecodeResult(changed=changed, locked=tuple(locked))


def _current_meaning(site_term: SiteTerm) -> Concept | None:
    """The concept the word's rows are coded with now (None: unmapped or not mappable)."""
    return None if site_term.unmappable else approved_concept(site_term)


def _is_current_meaning(site_term: SiteTerm, concept: Concept | None) -> bool:
    current = _current_meaning(site_term)
    return (current.pk if current else None) == (concept.pk if concept else None)


def _recodable(model: type[models.Model], term_field: str, concept_field: str,
               site_term: SiteTerm, concept: Concept | None) -> models.QuerySet:
    """Rows of `model` from `site_term` whose concept is not `concept`."""
    rows = model.objects.filter(**{term_field: site_term})
    if concept is None:
        return rows.filter(**{f"{concept_field}__isnull": False})
    return rows.exclude(**{f"{concept_field}_id": concept.pk})


@dataclass(frozen=True)
class _Survey:
    """One pass over a use's rows to re-code: their id range, how many are locked, and (for
    labs) the other coded column's distinct values, which decide the canonical form."""

    low: int | None
    high: int | None
    locked: int
    others: tuple[int | None, ...] = ()


def _other_lab_field(concept_field: str) -> str:
    return "unit" if concept_field == "lab" else "lab"


def _survey(model: type[models.Model], concept_field: str, rows: models.QuerySet) -> _Survey:
    group = [f"{_other_lab_field(concept_field)}_id"] if model is LabResult else []
    found = list(rows.values(*group).annotate(
        low=Min("pk"), high=Max("pk"),
        locked=Count("pk", filter=Q(status=RecordStatus.LOCKED))).order_by())
    if not found:
        return _Survey(low=None, high=None, locked=0)
    return _Survey(low=min(f["low"] for f in found), high=max(f["high"] for f in found),
                   locked=sum(f["locked"] for f in found),
                   others=tuple(f[group[0]] for f in found) if group else ())


def _recode_in_sets(model: type[models.Model], term_field: str, concept_field: str,
                    site_term: SiteTerm, concept: Concept | None, survey: _Survey, *,
                    acting_user: User | None, reason: str, batch_ids: int) -> int:
    """One UPDATE ... FROM per id range, with its history rows (see `update_audited`)."""
    pk = model._meta.pk.column
    term_column = model._meta.get_field(term_field).column
    concept_column = model._meta.get_field(concept_field).column
    low, high = survey.low, survey.high
    if low is None:
        return 0
    concept_id = concept.pk if concept else None
    assignments = f"{concept_column} = %s, {VERSION_BUMP_SQL}"
    from_sql, from_params = "", []
    join = ""
    if model is LabResult:
        canonical = _canonical_rules(concept_field, concept, survey.others)
        assignments += (", value_canonical = t.value * r.factor, "
                        "canonical_unit_id = r.canonical_unit_id, unit_flag = r.flag")
        from_sql, from_params, join = canonical
    changed = 0
    for start in range(low, high + 1, batch_ids):
        changed += update_audited(
            model,
            assignments=assignments,
            set_params=[concept_id],
            from_sql=from_sql,
            from_params=from_params,
            where=(f"t.{pk} >= %s AND t.{pk} < %s AND t.{term_column} = %s "
                   f"AND t.status <> %s AND t.{concept_column} IS DISTINCT FROM %s{join}"),
            where_params=[start, start + batch_ids, site_term.pk, RecordStatus.LOCKED,
                          concept_id],
            acting_user=acting_user,
            reason=reason,
        )
        logger.info("re-coding %s %s: ids up to %s of %s, %s rows changed",
                    site_term.domain, site_term.pk, min(start + batch_ids - 1, high), high,
                    changed)
    return changed


def _canonical_rules(concept_field: str, concept: Concept | None,
                     others: tuple[int | None, ...]) -> tuple[str, list, str]:
    """The canonical form of the word's lab rows once `concept` is their lab or unit, as a
    FROM clause `r` of (factor, canonical unit, flag) per case, its parameters and its join
    condition on `t`; `others` are the values of the other coded column among the rows.
    Each case is decided by `lab_canonical` itself (the one rule, also used by forms and
    imports), on the canonical value of 1 in the unit as written: the same rule as every
    other path, applied to a set."""
    other_field = _other_lab_field(concept_field)
    other_column = LabResult._meta.get_field(other_field).column
    concepts = Concept.objects.in_bulk([o for o in others if o is not None])
    cases, params = [], []
    for other in others:
        pair = {concept_field: concept, other_field: concepts.get(other)}
        for unit_given in (True, False):
            for value in (1.0, None):
                factor, canonical_unit, flag = lab_canonical(
                    lab=pair["lab"], unit=pair["unit"], value=value, unit_given=unit_given)
                cases.append("(%s::bigint, %s::boolean, %s::boolean, %s::float8, %s::bigint, "
                             "%s::text)")
                params += [other or 0, unit_given, value is None, factor,
                           canonical_unit.pk if canonical_unit else None, flag]
    from_sql = (f"FROM (VALUES {', '.join(cases)}) "
                "AS r(other, unit_given, value_missing, factor, canonical_unit_id, flag)")
    join = (f" AND r.other = coalesce(t.{other_column}, 0) "
            "AND r.unit_given = (t.unit_term_id IS NOT NULL) "
            "AND r.value_missing = (t.value IS NULL)")
    return from_sql, params, join


def _recode_row_by_row(model: type[models.Model], concept_field: str, rows: models.QuerySet,
                       concept: Concept | None, *, acting_user: User | None, reason: str,
                       batch_ids: int) -> int:
    """The same re-code through the ORM, a batch at a time (databases without a
    data-modifying WITH)."""
    rows = rows.exclude(status=RecordStatus.LOCKED).order_by("pk")
    if model is LabResult:
        rows = rows.select_related("lab", "unit")
    fields = [concept_field, "version", "updated_at"]
    if model is LabResult:
        fields += ["value_canonical", "canonical_unit", "unit_flag"]
    changed, after = 0, 0
    while batch := list(rows.filter(pk__gt=after).select_for_update(of=("self",))[:batch_ids]):
        now = timezone.now()
        for row in batch:
            setattr(row, concept_field, concept)
            version_bump(row)
            row.updated_at = now
            if model is LabResult:
                _lab_canonical(row)
        bulk_update_audited(model, batch, fields, acting_user=acting_user, reason=reason)
        changed += len(batch)
        after = batch[-1].pk
    return changed


def recode_pending(site_term: SiteTerm) -> list[LockedRow]:
    """Records still coded from an earlier meaning of the word: the locked rows a re-code left
    alone (and, if any was unlocked since, not yet re-coded)."""
    concept = _current_meaning(site_term)
    pending: list[LockedRow] = []
    for model, term_field, concept_field in USES[site_term.domain]:
        rows = _recodable(model, term_field, concept_field, site_term, concept)
        pending += _locked_rows(rows.select_related("site", "patient").order_by("pk"))
    return pending


def record_recode(instance: models.Model, *, acting_user: User | None,
                  reason: str = "re-coded after unlock") -> list[str]:
    """Bring one record's coded values up to its words' current meaning (a row a re-code left
    alone while it was locked), audited; returns the concept fields changed. A locked record
    is left alone. Whoever enters the record's site's records may (no acting user: the
    system)."""
    _require_role(acting_user, instance.site, DATA_ENTRY_ROLES)
    if instance.status == RecordStatus.LOCKED:
        return []
    changed = []
    for uses in USES.values():
        for model, term_field, concept_field in uses:
            term = getattr(instance, term_field, None) if isinstance(instance, model) else None
            if term is None:
                continue
            wanted = _current_meaning(term)
            if getattr(instance, f"{concept_field}_id") != (wanted.pk if wanted else None):
                setattr(instance, concept_field, wanted)
                changed.append(concept_field)
    if changed:
        if isinstance(instance, LabResult):
            _lab_canonical(instance)
        version_bump(instance)
        audited_save(instance, acting_user=acting_user,
                     reason=f"{reason}: {', '.join(changed)} from the current mapping")
    return changed


def _lab_canonical(lab: LabResult) -> None:
    lab.value_canonical, lab.canonical_unit, lab.unit_flag = lab_canonical(
        lab=lab.lab, unit=lab.unit, value=lab.value, unit_given=lab.unit_term_id is not None)


@transaction.atomic
def mapping_reject(
    *, mapping: TermMapping, acting_user: User, reason: str = "rejected"
) -> TermMapping:
    """Reject a suggested or approved meaning of a word (a reviewer of the site); rows coded
    from an approved one are re-coded as unmapped."""
    require_site_role(acting_user, mapping.site_term.site, REVIEW_ROLES)
    was_approved = mapping.status == MappingStatus.APPROVED
    mapping.status = MappingStatus.REJECTED
    mapping.reviewed_by, mapping.reviewed_at = acting_user, timezone.now()
    audited_save(mapping, acting_user=acting_user, reason=reason)
    if was_approved:
        recode(
            mapping.site_term,
            None,
            acting_user=acting_user,
            reason=f"mapping of {mapping.site_term.text!r} withdrawn ({reason})",
        )
    return mapping


@transaction.atomic
def term_mark_unmappable(*, term: SiteTerm, acting_user: User, reason: str) -> SiteTerm:
    require_site_role(acting_user, term.site, REVIEW_ROLES)
    if not (reason or "").strip():
        raise ValidationFailed("Say why the word cannot be mapped.", field="reason")
    for mapping in term.mappings.filter(
        status__in=[MappingStatus.SUGGESTED, MappingStatus.APPROVED]
    ):
        mapping_reject(mapping=mapping, acting_user=acting_user, reason=f"not mappable: {reason}")
    term.unmappable = True
    return audited_save(term, acting_user=acting_user, reason=f"not mappable: {reason}")


def mapping_review_approve(*, term: SiteTerm, concept: Concept, acting_user: User,
                           reason: str = "approved in review") -> TermMapping:
    """A monitor's approval from the review queue."""
    require_site_role(acting_user, term.site, REVIEW_ROLES)
    return mapping_approve(site_term=term, concept=concept, acting_user=acting_user,
                           method=TermMapping.Method.MANUAL, score=1.0, reason=reason)
