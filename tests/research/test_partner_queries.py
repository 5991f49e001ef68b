"""The partner queries' bookkeeping (research.services.partner_queries): repeats (decided by
the question), the overlap audit (a flag in the log, never a refusal), the privacy budget (an
odometer that does not depend on the data), the query log, and concurrency of one partner's
requests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import numpy as np
import pytest
import time_machine
from django.contrib import admin
from django.db import connection
from django.test import Client, RequestFactory
from django.utils import timezone
from pyroaring import BitMap64

from registry.api.errors import ERRORS, exception_handler
from registry.errors import BudgetExhausted
from registry.models import Role
from registry.services.api_tokens import api_token_create
from research.models import PartnerQuery
from research.partner.control import noisy_counts
from research.services.partner_queries import (
    partner_budget,
    partner_query_answer,
    question_noise_key,
)
from tests.conftest import _person
from tests.research.partner_answers import answer_over

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

Outcome = PartnerQuery.Outcome
DAY = 86400


@pytest.fixture(autouse=True)
def privacy(settings):
    settings.PARTNER_EPSILON = 0.5
    settings.PARTNER_EPSILON_BUDGET = 20.0
    settings.PARTNER_BUDGET_DAYS = 30
    settings.PARTNER_AUDIT_DAYS = 90
    settings.PARTNER_AUDIT_QUERIES = 500
    return settings


def ask(user, raw, *, endpoint="aggregates", params=None, token=None) -> dict:
    """Ask for `raw`. By default the question names its population (as a partner's criteria
    would), so different populations are different questions."""
    if params is None:
        params = {"by": "cohort", "patients": raw.population.tolist()}
    return partner_query_answer(user=user, token=token, endpoint=endpoint, params=params,
                                compute=lambda: raw)


def logged(user) -> list[tuple[str, float]]:
    return list(PartnerQuery.objects.filter(user=user).order_by("created_at", "id")
                .values_list("outcome", "epsilon_charged"))


def flags(user) -> list[bool]:
    return list(PartnerQuery.objects.filter(user=user).order_by("created_at", "id")
                .values_list("overlap_flagged", flat=True))


# -- repeats --------------------------------------------------------------------------------------

def test_a_repeat_is_free_and_identical(pat, ada):
    cohort = range(1000, 1200)
    question = {"by": "cohort", "site": "A"}
    first = ask(pat, answer_over(cohort, attribute=range(1000, 1080)), params=question)
    again = ask(pat, answer_over(cohort, attribute=range(1000, 1080)),
                params={"site": "A", "by": "cohort"})  # the same question, keys reordered
    assert again == first
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.0)]
    assert partner_budget(pat)["spent"] == 0.5
    # Another partner asking the same question gets the same numbers (noise seeded by the
    # question and the sets), and pays for its own first asking.
    assert ask(ada, answer_over(cohort, attribute=range(1000, 1080)), params=question) == first
    assert logged(ada) == [(Outcome.ANSWERED, 0.5)]
    rows = list(PartnerQuery.objects.filter(user=pat).order_by("created_at", "id"))
    assert rows[0].fingerprint == rows[1].fingerprint
    assert rows[0].data_digest == rows[1].data_digest
    assert not any(row.overlap_flagged for row in rows)
    row = rows[0]
    assert row.true_result["tables"]["cohort"][0]["patients"] == 200
    assert row.true_result["tables"]["cohort"][0]["with_attribute"] == 80
    assert BitMap64.deserialize(bytes(row.population)) == BitMap64(range(1000, 1200))
    assert row.params == {"by": "cohort", "site": "A"}
    shown = row.released_result["tables"]["cohort"]["cells"][0]
    assert shown["patients"] % 5 == 0 and abs(shown["patients"] - 200) < 40


def test_a_rephrased_question_over_the_same_patients_pays_and_draws_fresh_noise(pat):
    raw = answer_over(range(1000, 1200), attribute=range(1000, 1080))
    first = ask(pat, raw, params={"by": "cohort", "site": "A"})
    again = ask(pat, raw, params={"by": "cohort", "diagnosed_after": "2000-01-01"})
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]
    one, two = PartnerQuery.objects.filter(user=pat).order_by("created_at", "id")
    assert one.fingerprint != two.fingerprint and one.data_digest == two.data_digest
    assert one.released_result == first and two.released_result == again
    # Fresh noise: identical answers would tell that the two questions cover the same sets.
    # (One count's rounded value may coincide by chance; the noise itself differs.)
    counts, digests = np.full(50, 1000), np.arange(1, 51, dtype=np.uint64)
    noise = [noisy_counts(counts, digests, epsilon=0.5, key=question_noise_key(row.fingerprint))
             for row in (one, two)]
    assert not np.array_equal(*noise)
    assert np.array_equal(noise[0], noisy_counts(counts, digests, epsilon=0.5,
                                                 key=question_noise_key(one.fingerprint)))
    assert partner_budget(pat)["spent"] == 1.0


def test_the_same_question_on_a_new_snapshot_is_a_new_question(pat):
    raw = answer_over(range(1000, 1200))
    ask(pat, raw, params={"by": "cohort"})
    newer = dataclasses.replace(raw, snapshot_at="2026-12-01T00:00:00+00:00")
    ask(pat, newer, params={"by": "cohort"})
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]


def test_the_same_question_to_another_endpoint_is_a_new_question(pat):
    raw = answer_over(range(1000, 1200))
    ask(pat, raw, params={"by": "cohort"}, endpoint="aggregates")
    ask(pat, raw, params={"by": "cohort"}, endpoint="feasibility")
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]


def test_the_same_population_grouped_otherwise_is_a_new_question(pat):
    ask(pat, answer_over(range(200), group="all"), params={"group": "all"})
    ask(pat, answer_over(range(200), group="everyone"), params={"group": "everyone"})
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]
    one, two = PartnerQuery.objects.filter(user=pat).order_by("created_at", "id")
    assert one.data_digest != two.data_digest  # the dimensions are part of the data digest


def test_params_with_nul_characters_are_logged_without_them(pat):
    ask(pat, answer_over(range(100)), params={"name": "a\x00b"})
    ask(pat, answer_over(range(100)), params={"name": "a\ufffdb"})
    assert list(PartnerQuery.objects.filter(user=pat).values_list("params", flat=True)) == [
        {"name": "a\ufffdb"}] * 2
    # Two different questions, though logged alike.
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]


# -- the odometer does not depend on the data -----------------------------------------------------

BASE = range(5000, 5300)


def differing_by(count: int) -> set[int]:
    """BASE with `count` patients changed: half removed, the rest added."""
    removed = count // 2
    return set(BASE[removed:]) | set(range(9000, 9000 + count - removed))


def test_the_budget_moves_alike_whether_or_not_two_populations_coincide(pat, ada, privacy):
    """Two differently phrased questions: what the partner reads of its budget after each is
    the same whether their populations coincide, differ by one patient or by many."""
    privacy.PARTNER_EPSILON_BUDGET = 1.0
    partners = {0: pat, 1: ada, 60: _person("quinn", Role.PARTNER)}
    seen: dict[int, list[dict]] = {}
    with time_machine.travel(timezone.now(), tick=False):
        for difference, user in partners.items():
            readings = [partner_budget(user)]
            ask(user, answer_over(BASE), params={"criteria": "first"})
            readings.append(partner_budget(user))
            ask(user, answer_over(differing_by(difference)), params={"criteria": "second"})
            readings.append(partner_budget(user))
            ask(user, answer_over(BASE), params={"criteria": "first"})  # a repeat: free
            readings.append(partner_budget(user))
            with pytest.raises(BudgetExhausted) as refused:
                ask(user, answer_over(differing_by(difference)), params={"criteria": "third"})
            readings.append(refused.value.retry_after)
            seen[difference] = readings
            assert [o for o, _ in logged(user)] == [Outcome.ANSWERED] * 3 + [
                Outcome.REFUSED_BUDGET]
    assert [r["spent"] for r in seen[0][:4]] == [0.0, 0.5, 1.0, 1.0]
    assert seen[0] == seen[1] == seen[60]


# -- the overlap audit: a flag, never a refusal ---------------------------------------------------

@pytest.mark.parametrize("difference", [1, 2, 5, 10])
def test_a_population_a_few_patients_away_is_flagged_and_answered(pat, difference):
    first = ask(pat, answer_over(BASE))
    second = ask(pat, answer_over(differing_by(difference)))
    assert second["tables"]["cohort"]["cells"][0]["patients"] is not None
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]
    assert flags(pat) == [False, True]
    row = PartnerQuery.objects.get(user=pat, overlap_flagged=True)
    assert row.released_result == second
    assert row.true_result["tables"]["cohort"][0]["patients"] == len(differing_by(difference))
    assert partner_budget(pat)["spent"] == 1.0
    # The first query is still answered the same, for nothing.
    assert ask(pat, answer_over(BASE)) == first
    assert flags(pat) == [False, True, False]


@pytest.mark.parametrize("population", [
    set(BASE) | {9000}, set(BASE) | set(range(9000, 9010)), set(BASE) - {5000},
    set(BASE) - set(range(5000, 5010))], ids=["one more", "ten more", "one less", "ten less"])
def test_a_population_a_few_patients_larger_or_smaller_is_flagged(pat, population):
    ask(pat, answer_over(BASE))
    assert ask(pat, answer_over(population))["tables"]["cohort"]["cells"]
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]
    assert flags(pat) == [False, True]


@pytest.mark.parametrize("difference", [0, 11, 12, 60])
def test_the_same_population_or_one_enough_patients_away_is_not_flagged(pat, difference):
    first = ask(pat, answer_over(BASE), params={"criteria": "first"})
    second = ask(pat, answer_over(differing_by(difference)), params={"criteria": "second"})
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.5)]
    assert flags(pat) == [False, False]
    assert first["tables"]["cohort"]["cells"] and second["tables"]["cohort"]["cells"]
    one, two = PartnerQuery.objects.filter(user=pat).order_by("created_at", "id")
    assert (one.data_digest == two.data_digest) == (difference == 0)


def test_the_audit_reads_the_partners_own_answered_queries_in_its_window(pat, ada, privacy):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        ask(ada, answer_over(BASE))
        ask(pat, answer_over(differing_by(3)))  # another partner's population does not count
        ask(pat, answer_over(BASE))  # 3 patients from the partner's own: flagged
        ask(pat, answer_over(differing_by(20)))  # 17 from one, 20 from the other: not
        traveller.shift(dt.timedelta(days=privacy.PARTNER_AUDIT_DAYS, seconds=1))
        ask(pat, answer_over(differing_by(5)))  # 2 from one answered out of the window
    assert flags(pat) == [False, True, False, False]
    assert flags(ada) == [False]


def test_a_query_refused_by_the_budget_is_not_compared(pat, privacy):
    privacy.PARTNER_EPSILON_BUDGET = 0.5
    ask(pat, answer_over(range(20000, 20100)))
    with pytest.raises(BudgetExhausted):
        ask(pat, answer_over(BASE))
    privacy.PARTNER_EPSILON_BUDGET = 1.0
    ask(pat, answer_over(differing_by(2)))  # 2 from the refused one, never answered
    assert [o for o, _ in logged(pat)] == [Outcome.ANSWERED, Outcome.REFUSED_BUDGET,
                                          Outcome.ANSWERED]
    assert flags(pat) == [False, False, False]


def test_the_audit_reads_at_most_the_last_queries(pat, privacy):
    privacy.PARTNER_AUDIT_QUERIES = 2
    ask(pat, answer_over(BASE))
    ask(pat, answer_over(range(20000, 20100)))
    ask(pat, answer_over(range(30000, 30100)))
    ask(pat, answer_over(differing_by(4)))  # BASE is no longer among the last two
    assert [o for o, _ in logged(pat)] == [Outcome.ANSWERED] * 4
    assert flags(pat) == [False] * 4


# -- the budget -----------------------------------------------------------------------------------

def cohort(n: int) -> range:
    return range(100_000 + 1000 * n, 100_000 + 1000 * n + 100)


def test_an_exhausted_budget_refuses_with_the_time_until_it_comes_back(pat, privacy):
    privacy.PARTNER_EPSILON_BUDGET = 1.0
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        first = ask(pat, answer_over(cohort(1)))
        traveller.shift(dt.timedelta(days=2))
        ask(pat, answer_over(cohort(2)))
        traveller.shift(dt.timedelta(days=1))
        with pytest.raises(BudgetExhausted) as refused:
            ask(pat, answer_over(cohort(3)))
        # The first charge expires 30 days after it was made: 27 days from now.
        assert refused.value.retry_after == 27 * DAY
        assert logged(pat)[-1] == (Outcome.REFUSED_BUDGET, 0.0)
        row = PartnerQuery.objects.filter(user=pat).latest("created_at")
        assert row.released_result is None and row.true_result["patients"] == 100
        # A repeat is still answered: it costs nothing.
        assert ask(pat, answer_over(cohort(1))) == first
        budget = partner_budget(pat)
        assert (budget["spent"], budget["remaining"], budget["limit"]) == (1.0, 0.0, 1.0)
        assert budget["next_expiry_at"] == timezone.now() + dt.timedelta(days=27)
        assert budget["resets_at"] == timezone.now() + dt.timedelta(days=29)
        traveller.shift(dt.timedelta(days=27, seconds=1))
        ask(pat, answer_over(cohort(3)))
        assert partner_budget(pat)["spent"] == 1.0
    assert [o for o, _ in logged(pat)] == [
        Outcome.ANSWERED, Outcome.ANSWERED, Outcome.REFUSED_BUDGET, Outcome.ANSWERED,
        Outcome.ANSWERED]


def test_a_query_costs_epsilon_times_its_sensitivity(pat, privacy):
    privacy.PARTNER_EPSILON_BUDGET = 2.0
    ask(pat, answer_over(cohort(1), sensitivity=3))
    assert logged(pat) == [(Outcome.ANSWERED, 1.5)]
    with pytest.raises(BudgetExhausted):
        ask(pat, answer_over(cohort(2), sensitivity=2))
    ask(pat, answer_over(cohort(3), sensitivity=1))  # exactly the budget: allowed
    assert partner_budget(pat)["spent"] == 2.0


def test_a_query_larger_than_the_whole_budget_waits_a_whole_window(pat, privacy):
    privacy.PARTNER_EPSILON_BUDGET = 1.0
    with pytest.raises(BudgetExhausted) as refused:
        ask(pat, answer_over(cohort(1), sensitivity=3))
    assert refused.value.retry_after == 30 * DAY
    assert logged(pat) == [(Outcome.REFUSED_BUDGET, 0.0)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_queries_of_one_partner_cannot_overspend(pat, privacy):
    privacy.PARTNER_EPSILON_BUDGET = 1.5  # three queries
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def one(n: int) -> None:
        try:
            start.wait()
            ask(pat, answer_over(cohort(n)))
            outcomes.append("answered")
        except BudgetExhausted:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["answered"] * 3 + ["refused"] * 5
    rows = logged(pat)
    assert sorted(o for o, _ in rows) == [Outcome.ANSWERED] * 3 + [Outcome.REFUSED_BUDGET] * 5
    assert sum(eps for _, eps in rows) == 1.5


# -- the errors, the endpoint and the admin -------------------------------------------------------

def test_refusals_become_the_error_body_with_retry_after(rf: RequestFactory):
    request = rf.get("/api/v1/aggregates/")
    response = exception_handler(BudgetExhausted("Over budget.", retry_after=3600),
                                 {"request": request})
    assert response.status_code == 429 and response["Retry-After"] == "3600"
    assert response.data["error"]["code"] == "privacy_budget_exhausted"
    # The overlap audit refuses nothing: it has no error of its own.
    assert "query_refused_overlap" not in ERRORS


def bearer(user, scopes) -> dict:
    text = api_token_create(user=user, name="tests", scopes=scopes, expires_days=30,
                            acting_user=None)[1]
    return {"HTTP_AUTHORIZATION": f"Bearer {text}"}


@pytest.mark.parametrize("scopes", [["aggregates"], ["feasibility"]])
def test_the_budget_endpoint_shows_what_is_spent(pat, scopes):
    url = "/api/v1/privacy-budget/"
    fresh = Client().get(url, **bearer(pat, scopes))
    assert fresh.status_code == 200
    assert fresh.json() == {"spent": 0.0, "limit": 20.0, "remaining": 20.0,
                            "epsilon_per_query": 0.5, "window_days": 30,
                            "next_expiry_at": None, "resets_at": None}
    ask(pat, answer_over(cohort(1)))
    body = Client().get(url, **bearer(pat, scopes)).json()
    assert (body["spent"], body["remaining"]) == (0.5, 19.5)
    assert body["resets_at"] is not None


def test_the_budget_endpoint_needs_a_partner_scope(pat):
    url = "/api/v1/privacy-budget/"
    refused = Client().get(url, **bearer(pat, ["releases"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert Client().get(url).status_code == 401


def test_the_query_log_is_read_only_in_the_admin(pat, ada, rf):
    ask(pat, answer_over(cohort(1)))
    model_admin = admin.site._registry[PartnerQuery]
    request = rf.get("/admin/")
    request.user = ada
    row = PartnerQuery.objects.get()
    assert model_admin.has_view_permission(request, row)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, row)
    assert not model_admin.has_delete_permission(request, row)
    assert row.patients == 100
    partner_request = rf.get("/admin/")
    partner_request.user = pat
    assert not model_admin.has_view_permission(partner_request, row)


def test_the_registry_admin_lists_the_flagged_queries(client, pat, ada):
    ask(pat, answer_over(BASE))
    ask(pat, answer_over(differing_by(1)))
    flagged = PartnerQuery.objects.get(overlap_flagged=True)
    plain = PartnerQuery.objects.get(overlap_flagged=False)
    client.force_login(ada)
    url = "/admin/research/partnerquery/"
    page = client.get(url, {"overlap_flagged__exact": "1"})
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [flagged]
    page = client.get(url, {"overlap_flagged__exact": "0"})
    assert list(page.context["cl"].result_list) == [plain]


def test_a_repeat_named_by_its_snapshot_is_answered_before_anything_is_computed(pat):
    raw = answer_over(range(1000, 1200), attribute=range(1000, 1080))
    computed = []

    def compute():
        computed.append(1)
        return raw
    first = partner_query_answer(user=pat, token=None, endpoint="aggregates",
                                 params={"by": "cohort"}, compute=compute,
                                 snapshot_at=raw.snapshot_at)
    again = partner_query_answer(user=pat, token=None, endpoint="aggregates",
                                 params={"by": "cohort"}, compute=compute,
                                 snapshot_at=raw.snapshot_at)
    assert again == first and computed == [1]
    assert logged(pat) == [(Outcome.ANSWERED, 0.5), (Outcome.ANSWERED, 0.0)]
    one, two = PartnerQuery.objects.filter(user=pat).order_by("created_at", "id")
    assert two.true_result == one.true_result and two.data_digest == one.data_digest
    assert two.patients == 200 and bytes(two.population) == b""
    # A compute that reads another snapshot than the one named is a programming error.
    with pytest.raises(ValueError, match="another snapshot"):
        partner_query_answer(user=pat, token=None, endpoint="aggregates",
                             params={"by": "other"}, compute=compute,
                             snapshot_at="2020-01-01T00:00:00+00:00")
    assert PartnerQuery.objects.filter(user=pat).count() == 2


def test_the_embedded_databases_lock_is_a_write_to_the_partners_row(pat, monkeypatch):
    """SQLite (`make demo`) has no advisory locks: the partner's row is written (unchanged) to
    take the database's write lock. The statement is checked here on the test database."""
    from research.services import partner_queries

    monkeypatch.setattr(partner_queries.connection, "vendor", "sqlite")
    before = type(pat).objects.values().get(pk=pat.pk)
    partner_queries._lock_partner(pat)
    assert type(pat).objects.values().get(pk=pat.pk) == before
