"""The partner API's bookkeeping around disclosure control (docs/partner-api.md, "Disclosure
control and differencing defence"): repeats, the privacy budget, the overlap audit and the
query log.

`partner_query_answer` is the one door every aggregate and feasibility answer goes through.
Under a per-partner lock (so concurrent requests of one partner cannot overspend) it:
1. computes the raw answer and the question's fingerprint (endpoint, validated parameters,
   snapshot time: nothing of the data);
2. answers a repeat of an answered question with its logged released result, for nothing;
3. refuses when the budget window's charges plus this query's would exceed the budget;
4. otherwise releases the answer under disclosure control (research.partner.control),
   charges epsilon times the query's sensitivity, and flags it in the log when its
   population differs from one the partner was answered recently by 1 to MIN_CELL-1 patients
   (the overlap audit: for the registry admin's review, never a refusal).
What the partner sees (the answer, the refusal, the budget's odometer) therefore depends on
the data only through the noisy released counts: a refusal or a free repeat that depended on
which patients a query covered would reveal it (tests/research/test_partner_attacks.py).
Every query, answered or refused, is logged with its true and released results. A refusal is
logged and committed before its error is raised, so the caller's error handling cannot roll
the log back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F, Subquery
from django.utils import timezone
from django.utils.translation import gettext as _
from pyroaring import BitMap64

from registry.errors import BudgetExhausted
from registry.models import ApiToken
from research.disclosure import MIN_CELL
from research.models import PartnerQuery
from research.partner.answer import DIGEST_SUFFIX, RawAnswer, set_digest
from research.partner.control import (
    count_columns,
    dim_columns,
    release_tables,
    sorted_cells,
    true_tables,
)

_NOISE_CONTEXT = b"registry partner noise\x00"
_FINGERPRINT_CONTEXT = b"registry partner question\x00"
_DATA_DIGEST_CONTEXT = b"registry partner data\x00"
# The first key of pg_advisory_xact_lock(int, int): partner queries' own lock space.
_LOCK_SPACE = 0x5052_4956  # "PRIV"
# Charges are floats: a budget spent exactly is not exceeded.
_BUDGET_TOLERANCE = 1e-9


def _derived_key(context: bytes) -> bytes:
    return hmac.new(settings.REGISTRY_PEPPER.encode(), context, hashlib.sha256).digest()


def partner_noise_key() -> bytes:
    """The key every question's noise key is derived from (from REGISTRY_PEPPER: a partner
    cannot compute a seed, and the same question gets the same noise across restarts)."""
    return _derived_key(_NOISE_CONTEXT)


def question_noise_key(fingerprint: str) -> bytes:
    """The key of one question's noise (its fingerprint under partner_noise_key). Seeding by
    the set of patients alone would give two differently phrased questions over the same
    patients identical answers, and "identical or not" would tell whether a target is in a
    set (tests/research/test_partner_attacks.py, identical answers)."""
    return hmac.new(partner_noise_key(), fingerprint.encode(), hashlib.sha256).digest()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"))


def query_fingerprint(*, endpoint: str, params: dict, snapshot_at: str) -> str:
    """The question: a keyed hash of the endpoint, the validated parameters (canonical JSON)
    and the time of the snapshot read. Nothing of the data is in it, so whether a query is a
    free repeat never tells the partner anything about the patients it covers; a new snapshot
    makes every question new."""
    message = _canonical_json({"endpoint": endpoint, "params": params,
                               "snapshot_at": snapshot_at})
    return hmac.new(_derived_key(_FINGERPRINT_CONTEXT), message.encode(),
                    hashlib.sha256).hexdigest()


def query_data_digest(raw: RawAnswer) -> str:
    """The data an answer was computed from, for the auditor: a keyed hash of each table's
    cells (their dimensions, count columns and sets of patients' digests) and of the
    population's digest. Two queries with the same data digest got the same released numbers
    (the noise is seeded by the sets counted). Never shown to the partner."""
    cells = []
    for name in sorted(raw.tables):
        table = sorted_cells(raw.tables[name])
        dims, counts = dim_columns(table), count_columns(table)
        for row in table.to_dict("records"):
            cells.append([name, [[str(d), str(row[d])] for d in dims],
                          [[c, int(row[f"{c}{DIGEST_SUFFIX}"])] for c in counts]])
    cells.sort(key=lambda cell: json.dumps(cell, sort_keys=True))
    message = json.dumps({"cells": cells, "population": int(set_digest(raw.population))},
                         sort_keys=True, separators=(",", ":"))
    return hmac.new(_derived_key(_DATA_DIGEST_CONTEXT), message.encode(),
                    hashlib.sha256).hexdigest()


def _population_bitmap(population: np.ndarray) -> BitMap64:
    return BitMap64(np.unique(np.asarray(population, dtype=np.int64)).tolist())


def _lock_partner(user: User) -> None:
    """Serialise one partner's queries until the transaction ends (other partners run on)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_SPACE, user.pk])
    else:  # SQLite (the embedded demo) serialises writers itself; this takes its write lock
        User.objects.filter(pk=user.pk).update(id=F("id"))


def _without_nul(value: Any) -> Any:
    """JSON as PostgreSQL's jsonb stores it: it refuses NUL characters in strings."""
    text = json.dumps(value, cls=DjangoJSONEncoder)
    return json.loads(text.replace("\\u0000", "\ufffd"))


def _window_charges(user: User, now: dt.datetime) -> list[tuple[dt.datetime, float]]:
    since = now - dt.timedelta(days=settings.PARTNER_BUDGET_DAYS)
    return list(PartnerQuery.objects.filter(user=user, created_at__gt=since,
                                            epsilon_charged__gt=0)
                .order_by("created_at", "id").values_list("created_at", "epsilon_charged"))


def _retry_after(charges: list[tuple[dt.datetime, float]], charge: float,
                 now: dt.datetime) -> int:
    """Seconds until enough of the window's charges expire for `charge` to fit; the whole
    window when it can never fit (a charge larger than the budget)."""
    window = dt.timedelta(days=settings.PARTNER_BUDGET_DAYS)
    limit = settings.PARTNER_EPSILON_BUDGET
    remaining = sum(eps for _at, eps in charges)
    if charge > limit + _BUDGET_TOLERANCE:
        return math.ceil(window.total_seconds())
    for at, eps in charges:
        remaining -= eps
        if remaining + charge <= limit + _BUDGET_TOLERANCE:
            return max(1, math.ceil((at + window - now).total_seconds()))
    return math.ceil(window.total_seconds())


def _overlaps(user: User, population: BitMap64, now: dt.datetime) -> bool:
    """Whether the population differs by 1 to MIN_CELL-1 patients from one of the partner's
    answered populations in the audit window (its last PARTNER_AUDIT_QUERIES): the two
    answers could be a differencing pair. Only the log is told (the query is flagged): a
    refusal would be a side channel on the data."""
    since = now - dt.timedelta(days=settings.PARTNER_AUDIT_DAYS)
    recent = (PartnerQuery.objects
              # Charged answers: a repeat released nothing new (and keeps no population).
              .filter(user=user, outcome=PartnerQuery.Outcome.ANSWERED, created_at__gt=since,
                      epsilon_charged__gt=0)
              .order_by("-created_at", "-id")
              .values("id")[:settings.PARTNER_AUDIT_QUERIES])
    size = len(population)
    # Only populations of nearly the same size can be 1 to MIN_CELL-1 patients away: the rest
    # are never read (a population of the whole cohort is large).
    rows = (PartnerQuery.objects
            .filter(id__in=Subquery(recent),
                    patients__range=(max(0, size - MIN_CELL + 1), size + MIN_CELL - 1))
            .values_list("data_digest", "population"))
    seen: set[str] = set()
    for data_digest, blob in rows:
        if data_digest in seen:
            continue  # the same data, so the same population
        seen.add(data_digest)
        earlier = BitMap64.deserialize(bytes(blob))
        if 0 < population.symmetric_difference_cardinality(earlier) < MIN_CELL:
            return True
    return False


def _repeat_answer(*, user: User, token: ApiToken | None, endpoint: str, params: dict,
                   fingerprint: str) -> dict | None:
    """The logged answer of the same question asked before (logged again, for nothing), or
    None. Runs under the partner's lock, in the caller's transaction."""
    earlier = (PartnerQuery.objects
               .filter(user=user, fingerprint=fingerprint,
                       outcome=PartnerQuery.Outcome.ANSWERED)
               .order_by("created_at", "id")
               .values("released_result", "true_result", "data_digest", "patients").first())
    if earlier is None:
        return None
    # Nothing new leaves, so there is nothing to audit: the population is not kept again.
    PartnerQuery.objects.create(
        user=user, token=token, endpoint=endpoint, params=_without_nul(params),
        fingerprint=fingerprint, data_digest=earlier["data_digest"], population=b"",
        patients=earlier["patients"], true_result=earlier["true_result"],
        released_result=earlier["released_result"], outcome=PartnerQuery.Outcome.ANSWERED,
        created_at=timezone.now())
    return earlier["released_result"]


def partner_query_answer(*, user: User, token: ApiToken | None, endpoint: str,
                         params: dict, compute: Callable[[], RawAnswer],
                         snapshot_at: str | None = None) -> dict:
    """The released answer of a partner query (research.partner.control's JSON), logged.

    `params` are the validated parameters: with the endpoint and the snapshot's time they are
    the question. The same question asked again returns the logged answer and costs nothing;
    any other question is charged epsilon times its sensitivity, whatever its data (a
    rephrased question over the same patients gets the same numbers, the noise being seeded by
    the sets counted, and pays). Raises BudgetExhausted (429, privacy_budget_exhausted, with
    `retry_after`) when the budget refuses it; it is logged first, in this function's own
    transaction, so call it outside any transaction the error would roll back (an API view
    is: the project does not use ATOMIC_REQUESTS). An answered query whose population is 1 to
    MIN_CELL-1 patients from an earlier answered one is flagged in the log, and answered.
    `compute` runs before the partner's lock is taken: only the bookkeeping is serialised.
    With `snapshot_at` (the time of the snapshot `compute` reads) a repeat is answered from the
    log before anything is computed."""
    if snapshot_at is not None:
        fingerprint = query_fingerprint(endpoint=endpoint, params=params,
                                        snapshot_at=snapshot_at)
        with transaction.atomic():
            _lock_partner(user)
            repeated = _repeat_answer(user=user, token=token, endpoint=endpoint,
                                      params=params, fingerprint=fingerprint)
        if repeated is not None:
            return repeated
    with transaction.atomic():
        raw = compute()
        if snapshot_at is not None and raw.snapshot_at != snapshot_at:
            raise ValueError("compute() read another snapshot than snapshot_at names.")
        fingerprint = query_fingerprint(endpoint=endpoint, params=params,
                                        snapshot_at=raw.snapshot_at)
        population = _population_bitmap(raw.population)
        log = PartnerQuery(user=user, token=token, endpoint=endpoint,
                           params=_without_nul(params), fingerprint=fingerprint,
                           data_digest=query_data_digest(raw),
                           population=population.serialize(), patients=len(population),
                           true_result=_without_nul(true_tables(raw)))
        _lock_partner(user)
        now = timezone.now()
        log.created_at = now
        repeated = _repeat_answer(user=user, token=token, endpoint=endpoint, params=params,
                                  fingerprint=fingerprint)
        if repeated is not None:
            return repeated
        charge = float(settings.PARTNER_EPSILON) * max(1, int(raw.sensitivity))
        charges = _window_charges(user, now)
        refusal: Exception | None = None
        if sum(eps for _at, eps in charges) + charge > (settings.PARTNER_EPSILON_BUDGET
                                                        + _BUDGET_TOLERANCE):
            log.outcome = PartnerQuery.Outcome.REFUSED_BUDGET
            refusal = BudgetExhausted(
                _("This query would exceed your privacy budget of %(limit)s over "
                  "%(days)s days; retry when earlier queries' charges have expired.") % {
                    "limit": settings.PARTNER_EPSILON_BUDGET,
                    "days": settings.PARTNER_BUDGET_DAYS},
                retry_after=_retry_after(charges, charge, now))
        else:
            log.outcome = PartnerQuery.Outcome.ANSWERED
            log.overlap_flagged = _overlaps(user, population, now)
            log.epsilon_charged = charge
            log.released_result = _without_nul(release_tables(
                raw, epsilon=float(settings.PARTNER_EPSILON), key=question_noise_key(fingerprint)))
        log.save()
    if refusal is not None:
        raise refusal
    return log.released_result


def partner_budget(user: User) -> dict:
    """The partner's privacy budget now: spent within the window, the limit, the window's
    days, when the next charge expires and when every charge now in the window has."""
    now = timezone.now()
    window = dt.timedelta(days=settings.PARTNER_BUDGET_DAYS)
    charges = _window_charges(user, now)
    spent = round(sum(eps for _at, eps in charges), 6)
    limit = float(settings.PARTNER_EPSILON_BUDGET)
    return {
        "spent": spent,
        "limit": limit,
        "remaining": round(max(0.0, limit - spent), 6),
        "epsilon_per_query": float(settings.PARTNER_EPSILON),
        "window_days": settings.PARTNER_BUDGET_DAYS,
        "next_expiry_at": charges[0][0] + window if charges else None,
        "resets_at": charges[-1][0] + window if charges else None,
    }
