"""The committee's review: recusal, votes, the chair's decision, and sites' answers.

Recusal is enforced, not only recorded: a member who declared a conflict, or who works for
the requester's organisation, cannot vote or decide on the request. The chair may record a
decision only once a quorum of eligible members has voted on the revision; the outcome is the
majority's (settings COMMITTEE_QUORUM and COMMITTEE_MAJORITY_PCT), not the chair's choice.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.access import site_ids_for
from registry.audit import audited_save, bulk_create_audited
from registry.errors import NotPermitted, ValidationFailed
from registry.models import Role, Site
from research import catalog
from research import limits as L
from research.models import (
    APPROVED_STATUSES,
    Affiliation,
    DataRequest,
    Decision,
    Recusal,
    SiteParticipation,
    Vote,
    VoteChoice,
)
from research.notify import notify, people_with_role
from research.selectors.requests import is_chair, is_committee

APPROVING = (VoteChoice.APPROVE, VoteChoice.APPROVE_CONDITIONS)


def recusals_record(*, request: DataRequest) -> int:
    """Record the recusal of every committee member of the requester's organisation (run at
    each submission, so the request page lists them before anyone tries to vote)."""
    if request.organisation_id is None:
        return 0
    members = Affiliation.objects.filter(
        organisation_id=request.organisation_id,
        user__in=[u.pk for u in people_with_role(Role.COMMITTEE, Role.CHAIR)]
    ).exclude(user__in=request.recusals.values("member")).values_list("user_id", flat=True)
    made = Recusal.objects.bulk_create([
        Recusal(request=request, member_id=m, reason=Recusal.Reason.ORGANISATION)
        for m in members])
    return len(made)


def recusal_reason(*, request: DataRequest, member: User) -> str | None:
    """Why `member` may not vote on `request` (a Recusal.Reason), or None."""
    if request.recusals.filter(member=member).exists():
        return request.recusals.get(member=member).reason
    if request.requester_id == member.pk:
        return Recusal.Reason.DECLARED
    if request.organisation_id is not None and Affiliation.objects.filter(
            user=member, organisation_id=request.organisation_id).exists():
        return Recusal.Reason.ORGANISATION
    return None


def _comment(value: str | None, field: str = "comment") -> str:
    value = (value or "").strip()
    if len(value) > L.COMMENT_MAX_LENGTH:
        raise ValidationFailed(f"At most {L.COMMENT_MAX_LENGTH:,} characters.", field=field)
    return value


def _under_review(request: DataRequest) -> DataRequest:
    request = DataRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != DataRequest.Status.SUBMITTED:
        raise ValidationFailed(f"{request.reference} is not under review "
                               f"({request.get_status_display().lower()}).")
    return request


@transaction.atomic
def recusal_declare(*, request: DataRequest, acting_user: User, statement: str = "") -> Recusal:
    """A committee member declares a conflict: from now on they cannot vote on the request
    (a vote already cast on the current revision is withdrawn)."""
    if not is_committee(acting_user):
        raise NotPermitted("Only committee members declare conflicts.")
    request = DataRequest.objects.select_for_update().get(pk=request.pk)
    recusal, _ = Recusal.objects.get_or_create(
        request=request, member=acting_user,
        defaults={"reason": Recusal.Reason.DECLARED, "statement": _comment(statement,
                                                                           "statement")})
    Vote.objects.filter(request=request, revision=request.revision, member=acting_user).delete()
    return recusal


@transaction.atomic
def vote_cast(*, request: DataRequest, acting_user: User, choice: str, comment: str = ""
              ) -> Vote:
    """One vote per member and revision. Refused for non-members, recused members, a request
    not under review, a second vote, or "approve with conditions" / "revise" / "reject"
    without a comment saying why."""
    if not is_committee(acting_user):
        raise NotPermitted("Only committee members vote.")
    request = _under_review(request)
    reason = recusal_reason(request=request, member=acting_user)
    if reason is not None:
        raise NotPermitted(f"You are recused from {request.reference} "
                           f"({Recusal.Reason(reason).label.lower()}) and cannot vote.")
    if choice not in VoteChoice.values:
        raise ValidationFailed(f"Choose one of {', '.join(VoteChoice.values)}.", field="choice")
    comment = _comment(comment)
    if choice != VoteChoice.APPROVE and not comment:
        raise ValidationFailed("Say why (the conditions, what to revise, or why not).",
                               field="comment")
    try:
        with transaction.atomic():
            return Vote.objects.create(request=request, revision=request.revision,
                                       member=acting_user, choice=choice, comment=comment)
    except IntegrityError:
        raise ValidationFailed(f"You have already voted on revision {request.revision} of "
                               f"{request.reference}.") from None


def tally(request: DataRequest) -> dict:
    """The current revision's votes, whether they make a quorum, and the outcome they give."""
    votes = Counter(Vote.objects.filter(request=request, revision=request.revision)
                    .values_list("choice", flat=True))
    cast = sum(votes.values())
    quorum = max(1, settings.COMMITTEE_QUORUM)
    share = settings.COMMITTEE_MAJORITY_PCT / 100
    approving = votes[VoteChoice.APPROVE] + votes[VoteChoice.APPROVE_CONDITIONS]
    if cast and approving / cast > share:
        outcome = (VoteChoice.APPROVE_CONDITIONS if votes[VoteChoice.APPROVE_CONDITIONS]
                   else VoteChoice.APPROVE)
    elif cast and votes[VoteChoice.REJECT] / cast > share:
        outcome = VoteChoice.REJECT
    else:
        outcome = VoteChoice.REVISE
    return {**{c: votes[c] for c in VoteChoice.values}, "cast": cast, "quorum": quorum,
            "majority_pct": settings.COMMITTEE_MAJORITY_PCT, "quorate": cast >= quorum,
            "outcome": outcome}


_STATUS_OF = {
    VoteChoice.APPROVE: DataRequest.Status.APPROVED,
    VoteChoice.APPROVE_CONDITIONS: DataRequest.Status.APPROVED_CONDITIONS,
    VoteChoice.REVISE: DataRequest.Status.REVISION,
    VoteChoice.REJECT: DataRequest.Status.REJECTED,
}


@transaction.atomic
def decision_record(*, request: DataRequest, acting_user: User, conditions: str = "",
                    approved_quasi_identifiers: list[str] | None = None,
                    k_anonymity: int | None = None) -> Decision:
    """The chair records the committee's outcome for the revision under review.

    The outcome is the votes' (tally()); the chair adds the conditions (required when the
    outcome carries conditions), which of the requested quasi-identifiers the release may
    hold, and the k of its k-anonymity (at least RELEASE_K_ANONYMITY). An approval asks each
    of the request's sites to opt in, and starts the access period."""
    if not is_chair(acting_user):
        raise NotPermitted("Only the committee chair records decisions.")
    request = _under_review(request)
    if recusal_reason(request=request, member=acting_user) is not None:
        raise NotPermitted(f"You are recused from {request.reference}; another chair must "
                           "record its decision.")
    counted = tally(request)
    if not counted["quorate"]:
        raise ValidationFailed(f"No quorum: {counted['cast']} of the {counted['quorum']} votes "
                               "needed have been cast.")
    outcome = counted["outcome"]
    conditions = _comment(conditions, "conditions")
    if outcome == VoteChoice.APPROVE and conditions:
        outcome = VoteChoice.APPROVE_CONDITIONS
    if outcome == VoteChoice.APPROVE_CONDITIONS and not conditions:
        raise ValidationFailed("State the conditions of the approval.", field="conditions")
    quasi = list(dict.fromkeys(approved_quasi_identifiers or []))
    requested_quasi = [v for v in request.variables
                       if catalog.by_name().get(v) and catalog.by_name()[v].klass == catalog.QUASI]
    not_requested = [q[:60] for q in quasi if q not in requested_quasi]
    if not_requested:
        raise ValidationFailed("Only quasi-identifiers the request asked for can be approved: "
                               f"{', '.join(not_requested)}.", field="approved_quasi_identifiers")
    floor = max(L.K_MIN, settings.RELEASE_K_ANONYMITY)
    k = floor if k_anonymity in (None, "") else k_anonymity
    if isinstance(k, bool) or not isinstance(k, int) or not floor <= k <= L.K_MAX:
        raise ValidationFailed(f"k must be a whole number from {floor} to {L.K_MAX}.",
                               field="k_anonymity")
    approved = outcome in APPROVING
    decision = Decision.objects.create(
        request=request, revision=request.revision, outcome=outcome, conditions=conditions,
        chair=acting_user, tally=counted,
        approved_quasi_identifiers=quasi if approved else [], k_anonymity=k,
        access_until=(timezone.localdate() + dt.timedelta(days=request.access_days)
                      if approved else None))
    request.status = _STATUS_OF[outcome]
    audited_save(request, acting_user=acting_user,
                 reason=f"committee decision: {VoteChoice(outcome).label} "
                        f"(revision {request.revision})")
    team = [request.requester, *request.team.all()]
    notify(team, f"{request.reference}: {VoteChoice(outcome).label}",
           f"The committee decided on {request.reference} \"{request.title}\": "
           f"{VoteChoice(outcome).label}.\n{conditions}")
    if approved:
        sites = list(request.sites.order_by("code"))
        asked = set(request.participations.values_list("site_id", flat=True))
        bulk_create_audited(SiteParticipation,
                            [SiteParticipation(request=request, site=s) for s in sites
                             if s.pk not in asked],
                            acting_user=acting_user, reason="site asked to take part")
        for site in sites:
            notify(people_with_role(Role.SITE_PI, site_id=site.pk),
                   f"{request.reference}: will {site.code} take part?",
                   f"The committee approved {request.reference} \"{request.title}\". As site PI "
                   f"of {site.code}, please opt in or decline.")
    return decision


@transaction.atomic
def participation_answer(*, participation: SiteParticipation, acting_user: User, answer: str,
                         comment: str = "") -> SiteParticipation:
    """The site PI opts the site in or out of an approved request. The answer may change
    until the access period ends; releases built afterwards follow the new answer."""
    participation = SiteParticipation.objects.select_for_update().select_related(
        "request", "site").get(pk=participation.pk)
    site: Site = participation.site
    if site.pk not in (site_ids_for(acting_user, roles=[Role.SITE_PI]) or []):
        raise NotPermitted(f"Only the site PI of {site.code} answers for it.")
    request = participation.request
    if request.status not in APPROVED_STATUSES:
        raise ValidationFailed(f"{request.reference} is not approved.")
    decision = request.decisions.filter(revision=request.revision).first()
    if decision and decision.access_until and decision.access_until < timezone.localdate():
        raise ValidationFailed(f"The access period of {request.reference} has ended.")
    if answer not in (SiteParticipation.Answer.OPTED_IN, SiteParticipation.Answer.DECLINED):
        raise ValidationFailed("Opt in or decline.", field="answer")
    participation.answer = answer
    participation.comment = _comment(comment)
    participation.answered_by = acting_user
    participation.answered_at = timezone.now()
    audited_save(participation, acting_user=acting_user,
                 reason=f"{site.code}: {SiteParticipation.Answer(answer).label}")
    notify([request.requester], f"{request.reference}: {site.code} "
           f"{SiteParticipation.Answer(answer).label.lower()}",
           f"{site.code} answered {request.reference}: "
           f"{SiteParticipation.Answer(answer).label}.")
    return participation
