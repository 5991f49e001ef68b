"""A scripted attack suite against the partner API's differencing defence, on a small synthetic
cohort built directly as raw answers (research.services.partner_queries).

40 target patients, half of whom have a secret attribute. The attacker wants each target's
attribute and uses the classic differencing attacks on the count of patients with it:
(a) a tracker: count(T + target) - count(T);
(b) complement subtraction: count(everyone) - count(everyone but the target);
(c) averaging 50 repeats of a pair of queries;
(d) averaging many different trackers that differ only by padding patients the attacker knows
    lack the attribute (each a new population, so repeats do not protect: the budget must);
(e) a filter on the secret itself ("T, or the target if it has the attribute"), read through
    every side channel: refusals, the budget's odometer and the released counts.
A refused or hidden answer is no information: the attacker then guesses at random (fixed
seed). Through the registry the attacker must do no better than chance; the same attack on the
true counts must be exact, so each test could fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from registry.errors import BudgetExhausted
from registry.models import Role
from research.models import PartnerQuery
from research.services.partner_queries import partner_budget, partner_query_answer
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

# The released count of patients with the attribute in a population, asked in the words of
# `question` (by default the population's list of patients: its criteria), or None.
Ask = Callable[..., int | None]


@pytest.fixture(autouse=True)
def defence(settings):
    # A fixed pepper: the noise, like the attack, is the same on every run and every machine.
    settings.REGISTRY_PEPPER = "attack-suite-fixed-pepper-1979"
    settings.PARTNER_EPSILON = 0.5
    settings.PARTNER_EPSILON_BUDGET = 20.0
    settings.PARTNER_BUDGET_DAYS = 30
    settings.PARTNER_AUDIT_DAYS = 90
    settings.PARTNER_AUDIT_QUERIES = 500


def through_the_registry(user, *, whole: bool = False) -> Ask:
    """The released count of patients with the attribute in a population (or, `whole`, the
    released cell), or None (refused or hidden)."""
    def ask(population: set[int], question: dict | None = None) -> int | None:
        raw = answer_over(population, attribute=HOLDERS)
        params = {"patients": sorted(population)} if question is None else question
        try:
            out = partner_query_answer(user=user, token=None, endpoint="aggregates",
                                       params=params, compute=lambda: raw)
        except BudgetExhausted:
            return None
        cell = out["tables"]["cohort"]["cells"][0]
        return cell if whole else cell["with_attribute"]
    return ask


def on_true_counts(population: set[int], question: dict | None = None) -> int | None:
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
             "padded_trackers": "oscar", "filter": "chuck", "identity": "walter"}
ATTACKS = {"tracker": tracker, "complement": complement, "averaged_repeats": averaged_repeats,
           "padded_trackers": padded_trackers}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_attack_works_on_true_counts(name):
    """The control: without disclosure control every attack reads every target."""
    assert accuracy(ATTACKS[name](on_true_counts, np.random.default_rng(7))) == 1.0


@pytest.mark.parametrize("name", ["tracker", "complement"])
def test_differencing_by_one_patient_is_flagged_and_noised(name):
    attacker = _person(ATTACKERS[name], Role.PARTNER)
    guesses = ATTACKS[name](through_the_registry(attacker), np.random.default_rng(7))
    assert accuracy(guesses) <= CHANCE_CEILING
    # Nothing is refused but by the budget: every pair is answered under noise and charged,
    # and each query one patient from an answered one is flagged for the registry admin.
    counted = outcomes(attacker)
    assert counted == {PartnerQuery.Outcome.ANSWERED: 2 * len(TARGETS) - 1,
                       PartnerQuery.Outcome.REFUSED_BUDGET: 1}
    assert PartnerQuery.objects.filter(user=attacker, overlap_flagged=True).count() == (
        len(TARGETS) - 1)
    assert charged(attacker) == 20.0


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


def filter_on_the_secret(user, ask: Ask) -> tuple[list[int], list[tuple]]:
    """For each target, T and then "T, or the target if it has the attribute" (the filter
    selects on the secret; its words name the target, not the answer). The attacker reads
    everything it is told: whether each query was refused, what the budget's odometer did,
    and the released counts. Returns its guesses and, per target, the side channels it saw
    (refusals and charges)."""
    guesses, side_channels = [], []
    rng = np.random.default_rng(7)
    for target in TARGETS:
        without = ask(BASE, {"cohort": "T"})
        spent_before = partner_budget(user)["spent"] if user else 0.0
        with_target = ask(BASE | ({target} & HOLDERS),
                          {"cohort": "T", "or": target, "if": "has the attribute"})
        spent_after = partner_budget(user)["spent"] if user else 0.0
        refused = without is None or with_target is None
        side_channels.append((refused, round(spent_after - spent_before, 6)))
        guesses.append(guess([] if refused else [with_target - without], rng))
    return guesses, side_channels


def test_a_filter_on_the_secret_learns_nothing_from_refusals():
    """The overlap audit used to refuse the second query exactly when the target had the
    attribute (one patient away) and a data fingerprint made it a free repeat exactly when the
    target had not: both told the secret. Now nothing is refused and every new question is
    charged alike; only the noisy counts remain."""
    truth, _ = filter_on_the_secret(None, on_true_counts)
    assert accuracy(truth) == 1.0  # the control: the attack reads every target exactly
    attacker = _person(ATTACKERS["filter"], Role.PARTNER)
    guesses, side_channels = filter_on_the_secret(attacker, through_the_registry(attacker))
    assert accuracy(guesses) <= 0.66
    # The refusals and the odometer are the same for every target, whatever its secret,
    # until the budget runs out (the 40th target's question: 0.5 + 39 * 0.5 > 20).
    assert side_channels[:-1] == [(False, 0.5)] * (len(TARGETS) - 1)
    assert side_channels[-1] == (True, 0.0)
    assert not PartnerQuery.objects.filter(user=attacker).exclude(
        outcome__in=[PartnerQuery.Outcome.ANSWERED, PartnerQuery.Outcome.REFUSED_BUDGET]
    ).exists()
    assert charged(attacker) == 20.0


def test_a_filter_on_the_secret_learns_nothing_from_identical_answers():
    """Were a count's noise seeded by its set of patients alone, the two questions would get
    identical answers exactly when the target lacks the attribute (37 of 40 read so); seeded
    by the question too, they get independent noise whatever the target."""
    attacker = _person(ATTACKERS["identity"], Role.PARTNER)
    ask = through_the_registry(attacker, whole=True)
    guesses = []
    for target in TARGETS:
        without = ask(BASE, {"cohort": "T"})
        with_target = ask(BASE | ({target} & HOLDERS),
                          {"cohort": "T", "or": target, "if": "has the attribute"})
        if without is None or with_target is None:
            guesses.append(0)  # refused by the budget: a guess
            continue
        guesses.append(int(without != with_target))
    assert accuracy(guesses) <= CHANCE_CEILING
