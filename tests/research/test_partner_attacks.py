"""A scripted attack suite against the partner API's differencing defence, on a small synthetic
cohort built directly as raw answers (research.services.partner_queries).

40 target patients, half of whom have a secret attribute. The attacker wants each target's
attribute and uses the classic differencing attacks on the count of patients with it:
(a) a tracker: count(T + target) - count(T);
(b) complement subtraction: count(everyone) - count(everyone but the target);
(c) averaging 50 repeats of a pair of queries;
(d) averaging many different trackers that differ only by padding patients the attacker knows
    lack the attribute (each a new population, so repeats do not protect: the budget must).
A refused or hidden answer is no information: the attacker then guesses at random (fixed
seed). Through the registry the attacker must do no better than chance; the same attack on the
true counts must be exact, so each test could fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from registry.errors import BudgetExhausted, QueryRefused
from registry.models import Role
from research.models import PartnerQuery
from research.services.partner_queries import partner_query_answer
from tests.conftest import _person
from tests.research.partner_answers import answer_over

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

TARGETS = list(range(1, 41))
# Exactly half the targets have the attribute, chosen once with a fixed seed.
SECRET = {t: int(bit) for t, bit in zip(
    TARGETS, np.random.default_rng(1979).permutation([0, 1] * 20), strict=True)}
BASE = set(range(1000, 1200))  # a tracker set: 100 of its 200 patients have the attribute
HOLDERS = {t for t, bit in SECRET.items() if bit} | set(range(1000, 1100))
EVERYONE = set(TARGETS) | BASE
# Patients the attacker knows lack the attribute: padding for trackers.
PAD_POOL = range(100_000, 120_000)
PAD = 12
# Better than chance: two standard deviations above 1/2 over 40 coin flips.
CHANCE_CEILING = 0.5 + 2 * math.sqrt(0.25 / len(TARGETS))

Ask = Callable[[set[int]], int | None]


@pytest.fixture(autouse=True)
def defence(settings):
    # A fixed pepper: the noise, like the attack, is the same on every run and every machine.
    settings.REGISTRY_PEPPER = "attack-suite-fixed-pepper-1979"
    settings.PARTNER_EPSILON = 0.5
    settings.PARTNER_EPSILON_BUDGET = 20.0
    settings.PARTNER_BUDGET_DAYS = 30
    settings.PARTNER_AUDIT_DAYS = 90
    settings.PARTNER_AUDIT_QUERIES = 500


def through_the_registry(user) -> Ask:
    """The released count of patients with the attribute in a population, or None (refused
    or hidden)."""
    def ask(population: set[int]) -> int | None:
        raw = answer_over(population, attribute=HOLDERS)
        try:
            out = partner_query_answer(user=user, token=None, endpoint="aggregates",
                                       params={"cohort": "attack"}, compute=lambda: raw)
        except (QueryRefused, BudgetExhausted):
            return None
        return out["tables"]["cohort"]["cells"][0]["with_attribute"]
    return ask


def on_true_counts(population: set[int]) -> int | None:
    return len(population & HOLDERS)


def guess(differences: list[int], rng: np.random.Generator) -> int:
    """Has the attribute when the differences average above one half; a coin flip without
    any difference."""
    if not differences:
        return int(rng.integers(0, 2))
    return int(np.mean(differences) > 0.5)


def difference(ask: Ask, with_target: set[int], without: set[int]) -> int | None:
    without_count = ask(without)
    with_count = ask(with_target)
    if with_count is None or without_count is None:
        return None
    return with_count - without_count


def pads(index: int) -> tuple[set[int], set[int]]:
    """The index-th pair of disjoint padding sets."""
    start = PAD_POOL.start + 2 * PAD * index
    return set(range(start, start + PAD)), set(range(start + PAD, start + 2 * PAD))


def tracker(ask: Ask, rng: np.random.Generator) -> list[int]:
    guesses = []
    for target in TARGETS:
        found = difference(ask, BASE | {target}, BASE)
        guesses.append(guess([] if found is None else [found], rng))
    return guesses


def complement(ask: Ask, rng: np.random.Generator) -> list[int]:
    guesses = []
    for target in TARGETS:
        found = difference(ask, EVERYONE, EVERYONE - {target})
        guesses.append(guess([] if found is None else [found], rng))
    return guesses


def averaged_repeats(ask: Ask, rng: np.random.Generator, repeats: int = 50) -> list[int]:
    guesses = []
    for index, target in enumerate(TARGETS):
        pad_a, pad_b = pads(index)
        found = [difference(ask, BASE | pad_a | {target}, BASE | pad_b)]
        if found[0] is not None:  # a refused pair is not worth repeating
            found += [difference(ask, BASE | pad_a | {target}, BASE | pad_b)
                      for _ in range(repeats - 1)]
        guesses.append(guess([d for d in found if d is not None], rng))
    return guesses


def padded_trackers(ask: Ask, rng: np.random.Generator, per_target: int = 10) -> list[int]:
    guesses = []
    for index, target in enumerate(TARGETS):
        found = []
        for j in range(per_target):
            pad_a, pad_b = pads(len(TARGETS) + index * per_target + j)
            found.append(difference(ask, BASE | pad_a | {target}, BASE | pad_b))
        guesses.append(guess([d for d in found if d is not None], rng))
    return guesses


def accuracy(guesses: list[int]) -> float:
    return sum(g == SECRET[t] for g, t in zip(guesses, TARGETS, strict=True)) / len(TARGETS)


def outcomes(user) -> dict[str, int]:
    counted: dict[str, int] = {}
    for outcome in PartnerQuery.objects.filter(user=user).values_list("outcome", flat=True):
        counted[outcome] = counted.get(outcome, 0) + 1
    return counted


def charged(user) -> float:
    return sum(PartnerQuery.objects.filter(user=user).values_list("epsilon_charged", flat=True))


# One partner account per attack, each with a whole budget.
ATTACKERS = {"tracker": "eve", "complement": "mallory", "averaged_repeats": "trudy",
             "padded_trackers": "oscar", "filter": "chuck"}
ATTACKS = {"tracker": tracker, "complement": complement, "averaged_repeats": averaged_repeats,
           "padded_trackers": padded_trackers}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_attack_works_on_true_counts(name):
    """The control: without disclosure control every attack reads every target."""
    assert accuracy(ATTACKS[name](on_true_counts, np.random.default_rng(7))) == 1.0


@pytest.mark.parametrize("name", ["tracker", "complement"])
def test_differencing_by_one_patient_is_refused(name):
    attacker = _person(ATTACKERS[name], Role.PARTNER)
    guesses = ATTACKS[name](through_the_registry(attacker), np.random.default_rng(7))
    assert accuracy(guesses) <= CHANCE_CEILING
    # Every query a patient or two away from an answered one was refused, whatever its
    # secret: one population was answered (and repeated), every other refused.
    counted = outcomes(attacker)
    assert set(counted) <= {PartnerQuery.Outcome.ANSWERED, PartnerQuery.Outcome.REFUSED_OVERLAP}
    assert counted[PartnerQuery.Outcome.REFUSED_OVERLAP] >= len(TARGETS)
    assert charged(attacker) == 0.5


def test_averaging_repeats_gains_nothing():
    attacker = _person(ATTACKERS["averaged_repeats"], Role.PARTNER)
    guesses = averaged_repeats(through_the_registry(attacker), np.random.default_rng(7))
    assert accuracy(guesses) <= CHANCE_CEILING
    answered = PartnerQuery.objects.filter(user=attacker,
                                           outcome=PartnerQuery.Outcome.ANSWERED)
    # Each population was charged once; every repeat got the very same numbers.
    assert answered.filter(epsilon_charged__gt=0).count() == 40  # the budget: 20 / 0.5
    for fingerprint in answered.values_list("fingerprint", flat=True).distinct():
        results = answered.filter(fingerprint=fingerprint).values_list("released_result",
                                                                       flat=True)
        assert len(results) == 50 and all(r == results[0] for r in results)
    assert charged(attacker) == 20.0
    # The other 20 targets' first pairs: refused (the pair's second query is asked too).
    assert outcomes(attacker)[PartnerQuery.Outcome.REFUSED_BUDGET] == 20 * 2


def test_averaging_padded_trackers_is_stopped_by_the_budget():
    attacker = _person(ATTACKERS["padded_trackers"], Role.PARTNER)
    guesses = padded_trackers(through_the_registry(attacker), np.random.default_rng(7))
    assert accuracy(guesses) <= CHANCE_CEILING
    counted = outcomes(attacker)
    assert counted[PartnerQuery.Outcome.ANSWERED] == 40  # 20 pairs: 2 targets of 40
    assert counted[PartnerQuery.Outcome.REFUSED_BUDGET] == 40 * 10 * 2 - 40
    assert charged(attacker) == 20.0


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "Known limitation (docs/partner-api.md): the overlap audit's refusal depends on the data. "
    "When the secret attribute is itself a filter, the second query is a repeat (answered) "
    "for a target without it and one patient away (refused) for a target with it."))
def test_a_filter_on_the_secret_learns_nothing_from_refusals():
    attacker = _person(ATTACKERS["filter"], Role.PARTNER)
    ask = through_the_registry(attacker)
    guesses = []
    for target in TARGETS:
        ask(BASE)
        # "T, or the target if it has the attribute": the filter selects on the secret.
        refused = ask(BASE | ({target} & HOLDERS)) is None
        guesses.append(int(refused))
    assert accuracy(guesses) <= CHANCE_CEILING
