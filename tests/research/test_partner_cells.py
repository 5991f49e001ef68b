"""Partner aggregates and feasibility over the analysis snapshot: every cell equals a count made
independently with the ORM over a factory-built cohort (for every dimension), the cohort rule
(consent, withdrawal, drafts), contribution bounding, filters, feasibility criteria, hostile
input, the snapshot's rebuild, and the endpoints over HTTP.

The cohort is built once for the module (through the registry's services, in a transaction
rolled back at the end); tests that need a database of their own use the personas as usual.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import threading
from collections import defaultdict

import numpy as np
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from registry.models import (
    AdverseEvent,
    Concept,
    Cycle,
    Diagnosis,
    LabResult,
    Patient,
    Role,
    TreatmentLine,
)
from registry.services import clinical, workflow
from registry.services.api_tokens import api_token_create
from registry.services.organisation import site_upsert, user_add
from research.api import partner as partner_api_module
from research.models import PartnerQuery
from research.partner import snapshot as snapshot_module
from research.partner.aggregates import SENSITIVITY, aggregate_raw, grouping_level
from research.partner.answer import DIGEST_SUFFIX, set_digest
from research.partner.dimensions import (
    AGE_BANDS,
    DIMENSIONS,
    MAX_CYCLES_COUNTED,
    MAX_LINES_COUNTED,
    PATIENT_DIMENSIONS,
    UNKNOWN,
)
from research.partner.feasibility import feasibility_raw
from research.partner.snapshot import partner_snapshot, snapshot_build, snapshot_reset
from research.selectors.cohort import RELEASED_STATUSES
from research.services.partner_queries import partner_query_answer
from tests.conftest import persona_password

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

V1 = "/api/v1"
NEUTROPENIA = "Neutrophil count decreased"
NAUSEA = "Nausea"
ANC = "751-8"
REGIMEN_WORDS = ["PP", "TC", "GP", "FOLFOX", "方案X"]  # the last maps to no regimen
CANCERS = ["C34", "C18", "C22.0", "C50"]
STAGE_WORDS = ["IIIA", "IV", "IIB", "BCLC C", "", "IVB"]


# -- the cohort --------------------------------------------------------------------------------


def _build_cohort() -> dict:
    """About thirty patients at three sites: most consenting to commercial use and submitted;
    some academic only, withdrawn or left in draft; lines (up to five, some of one regimen
    twice, some unmapped), cycles (up to seven), adverse events and labs."""
    rng = random.Random(18)
    a = site_upsert(code="SITE-A", name="Site A", province="Zhejiang", acting_user=None)[0]
    b = site_upsert(code="SITE-B", name="Site B", province="Sichuan", tier="secondary",
                    acting_user=None)[0]
    c = site_upsert(code="SITE-C", name="Site C", province="", tier="primary",
                    acting_user=None)[0]
    clerks = {}
    for site, name in ((a, "cellclerk_a"), (b, "cellclerk_b"), (c, "cellclerk_c")):
        clerks[site.pk] = user_add(username=name, role=Role.CLERK, site_codes=[site.code],
                                   password=persona_password(name), acting_user=None)[0]
    today = timezone.localdate()
    for i in range(33):
        site = (a, b, c)[i % 3]
        user = clerks[site.pk]
        consent = "academic" if i % 11 == 5 else "commercial"
        p = clinical.patient_register(site=site, patient_no=f"CELL{i:04d}",
                                      sex=rng.choice("MF"), birth_year=rng.randint(1935, 1990),
                                      consent_scope=consent, acting_user=user)
        diagnosed = dt.date(rng.randint(2018, 2022), rng.randint(1, 12), rng.randint(1, 28))
        diagnosed_at_all = i % 13 != 7  # a few patients without a diagnosis (nor lines)
        if diagnosed_at_all:
            markers = {"EGFR": rng.choice("+-")} if rng.random() < 0.5 else {}
            clinical.diagnosis_record(patient=p, diagnosis_date=diagnosed,
                                      cancer=rng.choice(CANCERS),
                                      stage_group=rng.choice(STAGE_WORDS), biomarkers=markers,
                                      acting_user=user)
            if i % 4 == 0:  # a later second diagnosis: not the first
                clinical.diagnosis_record(patient=p, diagnosis_date=diagnosed
                                          + dt.timedelta(days=200), cancer="C25",
                                          stage_group="I", acting_user=user)
        n_lines = rng.choice([0, 1, 2, 3, 4]) if diagnosed_at_all else 0
        start = diagnosed + dt.timedelta(days=10)
        for line_no in range(1, n_lines + 1):
            word = rng.choice(REGIMEN_WORDS)
            line = clinical.treatment_line_record(patient=p, line_no=line_no, regimen=word,
                                                  start_date=start, acting_user=user)
            for cycle_no in range(1, rng.randint(1, 7) + 1):
                day = start + dt.timedelta(days=21 * (cycle_no - 1))
                cycle = clinical.cycle_record(line=line, cycle_no=cycle_no, start_date=day,
                                              acting_user=user)
                if rng.random() < 0.35:
                    clinical.adverse_event_record(
                        patient=p, term=NEUTROPENIA, grade=rng.randint(1, 4),
                        onset_date=day + dt.timedelta(days=8), cycle=cycle, acting_user=user)
                if rng.random() < 0.25:
                    clinical.adverse_event_record(
                        patient=p, term=NAUSEA, grade=rng.randint(1, 3),
                        onset_date=day + dt.timedelta(days=2), cycle=cycle, acting_user=user)
            start += dt.timedelta(days=21 * 8)
        if rng.random() < 0.6:
            for k in range(2):
                clinical.lab_result_record(
                    patient=p, test="ANC", value=f"{rng.uniform(0.3, 6):.1f}", unit="10^9/L",
                    collected_date=diagnosed + dt.timedelta(days=5 + 30 * k), acting_user=user)
        if i % 9 == 4:
            continue  # left in draft
        workflow.patient_submit(p, acting_user=user)
        if i % 10 == 3:
            clinical.patient_withdraw(patient=p, withdrawn_date=min(today, diagnosed
                                      + dt.timedelta(days=400)), acting_user=user,
                                      reason="consent withdrawn")
        if i % 8 == 2 and n_lines:  # a line recorded after submission stays a draft
            clinical.treatment_line_record(patient=p, line_no=n_lines + 1, regimen="PP",
                                           start_date=start, acting_user=user)
    return {"sites": (a, b, c)}


class _Rollback(Exception):
    pass


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """The cohort built once, and what the tests compare read from it: the snapshot (through
    the bulk reader, and through the ORM as on SQLite), the independent counts, a few facts.
    The cohort itself is rolled back at once, so no other test sees it."""
    built: dict = {}
    with django_db_blocker.unblock(), pytest.MonkeyPatch.context() as patch:
        try:
            with transaction.atomic():
                _build_cohort()
                read: list[str] = []
                real = snapshot_module.records_frame

                def spy(kind, **options):
                    read.append(kind)
                    return real(kind, **options)
                patch.setattr(snapshot_module, "records_frame", spy)
                built["snapshot"] = snapshot_build()
                built["kinds_read"] = read
                patch.setattr(connection, "vendor", "sqlite")
                built["snapshot_orm"] = snapshot_build()
                patch.undo()
                built["oracle"] = Oracle()
                built["facts"] = _facts(built["snapshot"])
                raise _Rollback
        except _Rollback:
            pass
    return built


def _facts(snap) -> dict:
    """What the cohort holds beside the counts (for the tests of who is in and of bounding)."""
    ids = set(snap.patient_ids.tolist())
    excluded = Patient.objects.exclude(pk__in=ids)
    counted = snap.lines.assign(key=lambda f: list(zip(f["patient_id"], f["line_no"],
                                                       strict=True)))
    return {
        "excluded": {
            "academic": excluded.filter(consent_scope="academic").exists(),
            "withdrawn": excluded.filter(withdrawn_date__isnull=False,
                                         consent_scope="commercial").exists(),
            "draft": excluded.filter(status="draft", consent_scope="commercial").exists()},
        "draft_lines_in_snapshot": [
            key for key in TreatmentLine.objects.filter(status="draft", patient_id__in=ids)
            .values_list("patient_id", "line_no") if key in set(counted["key"])],
        "draft_lines": TreatmentLine.objects.filter(status="draft",
                                                    patient_id__in=ids).count(),
        "lines_beyond": TreatmentLine.objects.filter(
            line_no__gt=MAX_LINES_COUNTED, status__in=RELEASED_STATUSES,
            patient_id__in=ids).count(),
        "cycles_beyond": Cycle.objects.filter(
            cycle_no__gt=MAX_CYCLES_COUNTED, status__in=RELEASED_STATUSES,
            patient_id__in=ids).count(),
    }


# -- the independent count (ORM and plain Python) ----------------------------------------------


def _stage(text: str) -> str:
    text = (text or "").strip().upper()
    if text.startswith("BCLC"):
        rest = text[4:].strip()
        return f"BCLC {rest[0]}" if rest[:1] in ("0", "A", "B", "C", "D") else UNKNOWN
    for roman in ("IV", "III", "II", "I", "0"):
        if text.startswith(roman):
            return roman
    return UNKNOWN


def _band(age: int) -> str:
    return next(label for label, low, high in AGE_BANDS if low <= age < high)


class Oracle:
    """Each consenting patient's dimensions, counted lines, cycles and events, read with the
    ORM one patient at a time (slow and obvious, unlike the snapshot)."""

    def __init__(self) -> None:
        released = list(RELEASED_STATUSES)
        self.patients = {}
        for p in Patient.objects.filter(status__in=released, withdrawn_date__isnull=True,
                                        consent_scope="commercial").select_related("site"):
            d = (Diagnosis.objects.filter(patient=p, status__in=released)
                 .order_by("diagnosis_date", "id").select_related("cancer").first())
            lines = list(TreatmentLine.objects.filter(patient=p, status__in=released)
                         .order_by("line_no", "id").select_related("regimen"))
            counted = lines[:MAX_LINES_COUNTED]
            cycles = {}
            for line in counted:
                regimen = line.regimen.code if line.regimen else UNKNOWN
                for cycle in Cycle.objects.filter(line=line, status__in=released):
                    events = {}
                    for ae in AdverseEvent.objects.filter(cycle=cycle, status__in=released,
                                                          ae__isnull=False):
                        events[ae.ae.code] = max(events.get(ae.ae.code, 0), ae.grade)
                    key = (regimen, cycle.cycle_no)
                    merged = cycles.setdefault(key, {})
                    for term, grade in events.items():
                        merged[term] = max(merged.get(term, 0), grade)
            labs = {}
            for lab in (LabResult.objects.filter(patient=p, status__in=released,
                                                 lab__isnull=False,
                                                 value_canonical__isnull=False)
                        .order_by("collected_date", "id").select_related("lab")):
                labs[lab.lab.code] = lab.value_canonical
            self.patients[p.pk] = {
                "cancer_site": d.cancer.code[:3] if d and d.cancer else UNKNOWN,
                "cancer_code": d.cancer.code if d and d.cancer else "",
                "stage": _stage(d.stage_group) if d else UNKNOWN,
                "stage_group": (d.stage_group if d else "").upper(),
                "diagnosis_year": str(d.diagnosis_date.year) if d else UNKNOWN,
                "site_tier": p.site.tier,
                "region": p.site.province or UNKNOWN,
                "sex": p.sex,
                "age_band": _band(d.diagnosis_date.year - p.birth_year) if d else UNKNOWN,
                "biomarkers": {k: str(v).upper() for k, v in (d.biomarkers if d else {}).items()},
                "line_count": len(lines),
                "regimens": {line.regimen.code if line.regimen else UNKNOWN
                             for line in counted},
                "cycles": cycles,
                "labs": labs,
            }

    def cells(self, spec: dict) -> tuple[dict, dict]:
        """Cell (tuple of values, as text) -> the patients counted, and -> those with an
        event."""
        by, filters = spec["by"], spec.get("filters", {})
        counted, hit = defaultdict(set), defaultdict(set)
        incidence = spec["measure"] == "incidence"
        for pid, p in self.patients.items():
            if any(p[d] not in filters[d] for d in filters if d in PATIENT_DIMENSIONS):
                continue
            units = []  # (regimen, cycle) the patient counts by; None: the patient itself
            cycle_filter = filters.get("cycle_number")
            regimen_filter = filters.get("regimen")
            treated_only = incidence or "regimen" in by or regimen_filter
            if not treated_only:
                units = [(None, None, False)]
            else:
                for regimen in p["regimens"]:
                    if regimen_filter and regimen not in regimen_filter:
                        continue
                    if "cycle_number" in by or cycle_filter:
                        for (r, n), events in p["cycles"].items():
                            if r != regimen or not 1 <= n <= MAX_CYCLES_COUNTED:
                                continue
                            if cycle_filter and str(n) not in cycle_filter:
                                continue
                            units.append((regimen, n, self._event(spec, events)))
                    else:
                        event = any(self._event(spec, events)
                                    for (r, _n), events in p["cycles"].items() if r == regimen)
                        units.append((regimen, None, event))
            if not units:
                continue
            for regimen, n, event in units:
                key = tuple(regimen if d == "regimen" else str(n) if d == "cycle_number"
                            else p[d] for d in by)
                counted[key].add(pid)
                if event:
                    hit[key].add(pid)
        return counted, hit

    @staticmethod
    def _event(spec: dict, events: dict) -> bool:
        return spec["measure"] == "incidence" and events.get(spec["term"], 0) >= spec[
            "min_grade"]


def _as_text(value) -> str:
    return str(value)


def assert_cells_match(world, spec: dict) -> None:
    raw = aggregate_raw(world["snapshot"], spec)
    counted, hit = world["oracle"].cells(spec)
    table = raw.tables["cells"]
    seen = set()
    for row in table.to_dict("records"):
        key = tuple(_as_text(row[d]) for d in spec["by"])
        seen.add(key)
        assert row["patients"] == len(counted.get(key, ())), (spec, key)
        assert row["patients" + DIGEST_SUFFIX] == set_digest(np.array(sorted(
            counted.get(key, ())), dtype=np.int64)), (spec, key)
        if spec["measure"] == "incidence":
            assert row["patients_with_event"] == len(hit.get(key, ())), (spec, key)
            assert row["patients_with_event" + DIGEST_SUFFIX] == set_digest(np.array(sorted(
                hit.get(key, ())), dtype=np.int64)), (spec, key)
    assert set(counted) <= seen  # every counted cell is in the grid
    assert len(seen) == len(table)  # each cell once
    everyone = set().union(*counted.values()) if counted else set()
    assert list(raw.population) == sorted(everyone)
    assert raw.sensitivity == SENSITIVITY[grouping_level(spec["by"])] * (
        2 if spec["measure"] == "incidence" else 1)


# -- counts per cell ---------------------------------------------------------------------------

ONE_DIMENSION = [d for d in DIMENSIONS if d != "cycle_number"]


@pytest.mark.parametrize("dimension", ONE_DIMENSION)
def test_patients_per_cell_equal_the_orm_count(world, dimension):
    assert_cells_match(world, {"measure": "patients", "by": [dimension], "filters": {}})


@pytest.mark.parametrize("dimension", ONE_DIMENSION)
@pytest.mark.parametrize(("term", "grade"), [(NEUTROPENIA, 3), (NAUSEA, 1)])
def test_incidence_per_cell_equals_the_orm_count(world, dimension, term, grade):
    assert_cells_match(world, {"measure": "incidence", "by": [dimension], "filters": {},
                               "term": term, "min_grade": grade})


@pytest.mark.parametrize("dimension", PATIENT_DIMENSIONS)
def test_two_dimensions_with_regimen(world, dimension):
    assert_cells_match(world, {"measure": "patients", "by": ["regimen", dimension],
                               "filters": {}})
    assert_cells_match(world, {"measure": "incidence", "by": [dimension, "regimen"],
                               "filters": {}, "term": NEUTROPENIA, "min_grade": 2})


def test_neutropenia_per_regimen_and_cycle(world):
    spec = {"measure": "incidence", "by": ["regimen", "cycle_number"], "filters": {},
            "term": NEUTROPENIA, "min_grade": 3}
    assert_cells_match(world, spec)
    table = aggregate_raw(world["snapshot"], spec).tables["cells"]
    assert set(table["cycle_number"]) == set(range(1, MAX_CYCLES_COUNTED + 1))
    assert table["patients_with_event"].sum() > 0
    assert (table["patients_with_event"] <= table["patients"]).all()


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(PATIENT_DIMENSIONS, 2)))
def test_two_patient_dimensions(world, a, b):
    assert_cells_match(world, {"measure": "patients", "by": [a, b], "filters": {}})


def test_no_dimension_is_one_cell_of_everyone(world):
    raw = aggregate_raw(world["snapshot"], {"measure": "patients", "by": [], "filters": {}})
    assert len(raw.tables["cells"]) == 1
    assert raw.tables["cells"]["patients"].iloc[0] == len(world["oracle"].patients)
    assert_cells_match(world, {"measure": "patients", "by": [], "filters": {}})


# -- who is in the snapshot --------------------------------------------------------------------


def test_only_consenting_submitted_patients_and_released_records(world):
    snap = world["snapshot"]
    assert set(snap.patient_ids.tolist()) == set(world["oracle"].patients)
    facts = world["facts"]
    # Patients of each excluded kind exist in the cohort, and none is in the snapshot.
    assert facts["excluded"] == {"academic": True, "withdrawn": True, "draft": True}
    assert facts["draft_lines"] > 0
    assert facts["draft_lines_in_snapshot"] == []


def test_first_diagnosis_and_latest_lab(world):
    snap = world["snapshot"]
    oracle = world["oracle"].patients
    patients = snap.patients
    for pidx, pid in enumerate(snap.patient_ids.tolist()):
        expected = oracle[pid]
        assert (patients["cancer_code"].iloc[pidx] if patients["cancer_code"].iloc[pidx]
                == patients["cancer_code"].iloc[pidx] else "") == expected["cancer_code"]
        assert patients["line_count"].iloc[pidx] == expected["line_count"]
    labs = snap.labs
    got = {(int(snap.patient_ids[r.pidx]), r.lab): r.value for r in labs.itertuples()}
    want = {(pid, code): value for pid, p in oracle.items() for code, value in p["labs"].items()}
    assert got == pytest.approx(want)
    assert set(labs["unit"].dropna()) == {"10*9/L"}


# -- contribution bounding ---------------------------------------------------------------------


def test_a_patient_counts_in_at_most_three_regimens_and_six_cycles(world):
    snap = world["snapshot"]
    spec = {"measure": "incidence", "by": ["regimen", "cycle_number"], "filters": {},
            "term": NEUTROPENIA, "min_grade": 1}
    raw = aggregate_raw(snap, spec)
    # 18 cells, each with two counts a patient can be in (treated, with the event).
    assert raw.sensitivity == 2 * MAX_LINES_COUNTED * MAX_CYCLES_COUNTED == 36
    per_patient_regimens = snap.regimens.groupby("pidx").size()
    assert per_patient_regimens.max() <= MAX_LINES_COUNTED
    # Some patient had more lines (and more cycles) than are counted.
    assert world["facts"]["lines_beyond"] > 0
    assert world["facts"]["cycles_beyond"] > 0
    # Each patient's number of cells in the table: at most the sensitivity.
    cells_of = defaultdict(int)
    counted, _hit = world["oracle"].cells(spec)
    for patients in counted.values():
        for pid in patients:
            cells_of[pid] += 1
    assert max(cells_of.values()) <= raw.sensitivity // 2
    assert raw.tables["cells"]["patients"].sum() == sum(cells_of.values())
    regimen_only = aggregate_raw(snap, {"measure": "patients", "by": ["regimen"],
                                        "filters": {}})
    assert regimen_only.sensitivity == MAX_LINES_COUNTED
    assert aggregate_raw(snap, {"measure": "patients", "by": ["sex"], "filters": {}}
                         ).sensitivity == 1


# -- filters -----------------------------------------------------------------------------------

FILTERS = [
    {"measure": "patients", "by": ["sex"], "filters": {"cancer_site": ["C34", "C18"]}},
    {"measure": "patients", "by": ["cancer_site"], "filters": {"regimen": ["REG-PEM-CIS"]}},
    {"measure": "patients", "by": ["stage"], "filters": {"site_tier": ["tertiary"],
                                                         "region": ["Zhejiang", UNKNOWN]}},
    {"measure": "incidence", "by": ["regimen"], "filters": {"cycle_number": ["1", "2"]},
     "term": NEUTROPENIA, "min_grade": 2},
    {"measure": "incidence", "by": ["age_band"], "filters": {"regimen": ["REG-PAC-CARBO",
                                                                          UNKNOWN]},
     "term": NAUSEA, "min_grade": 2},
    {"measure": "incidence", "by": ["regimen", "cycle_number"],
     "filters": {"sex": ["F"], "cycle_number": ["3"]}, "term": NEUTROPENIA, "min_grade": 1},
    {"measure": "patients", "by": [], "filters": {"diagnosis_year": ["2019", "2020"],
                                                  "stage": ["IV", "III"]}},
]


@pytest.mark.parametrize("spec", FILTERS)
def test_filters_narrow_the_population(world, spec):
    assert_cells_match(world, spec)
    unfiltered = aggregate_raw(world["snapshot"], {**spec, "filters": {}})
    assert len(aggregate_raw(world["snapshot"], spec).population) <= len(
        unfiltered.population)


# -- feasibility -------------------------------------------------------------------------------

CRITERIA = [
    {},
    {"cancer": ["C34", "C22.0"]},
    {"cancer": ["C22"]},
    {"stage_groups": ["III"]},
    {"stage_groups": ["IVB", "BCLC C"]},
    {"biomarkers": {"EGFR": "+"}},
    {"min_prior_lines": 1, "max_prior_lines": 2},
    {"labs": [{"concept": ANC, "min": 1.5, "max": None}]},
    {"labs": [{"concept": ANC, "min": None, "max": 2.0}], "site_tiers": ["tertiary"]},
    {"regions": ["Sichuan"], "min_prior_lines": 3},
]


def _feasible(p: dict, c: dict) -> bool:
    if c.get("cancer") and not p["cancer_code"].startswith(tuple(c["cancer"])):
        return False
    if c.get("stage_groups") and not (p["stage"] in c["stage_groups"]
                                      or p["stage_group"] in c["stage_groups"]):
        return False
    for name, value in c.get("biomarkers", {}).items():
        if p["biomarkers"].get(name) != value:
            return False
    if c.get("min_prior_lines") is not None and p["line_count"] < c["min_prior_lines"]:
        return False
    if c.get("max_prior_lines") is not None and p["line_count"] > c["max_prior_lines"]:
        return False
    for lab in c.get("labs", []):
        value = p["labs"].get(lab["concept"])
        if value is None or (lab["min"] is not None and value < lab["min"]) or (
                lab["max"] is not None and value > lab["max"]):
            return False
    if c.get("site_tiers") and p["site_tier"] not in c["site_tiers"]:
        return False
    return not (c.get("regions") and p["region"] not in c["regions"])


@pytest.mark.parametrize("criteria", CRITERIA)
def test_feasibility_counts_equal_the_orm_count(world, criteria):
    raw = feasibility_raw(world["snapshot"], criteria)
    oracle = world["oracle"].patients
    matching = {pid for pid, p in oracle.items() if _feasible(p, criteria)}
    assert set(raw.population.tolist()) == matching
    assert set(raw.tables) == {"by_site_tier", "by_region"}
    for name, dimension in (("by_site_tier", "site_tier"), ("by_region", "region")):
        table = raw.tables[name]
        assert list(table.columns) == [dimension, "patients", "patients" + DIGEST_SUFFIX]
        for row in table.to_dict("records"):
            expected = sorted(pid for pid in matching if oracle[pid][dimension] == row[dimension])
            assert row["patients"] == len(expected), (criteria, row)
            assert row["patients" + DIGEST_SUFFIX] == set_digest(np.array(expected,
                                                                          dtype=np.int64))
        assert table["patients"].sum() == len(matching)
    assert raw.sensitivity == 2  # once in each of the two tables


# -- the snapshot's lifetime -------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(snapshot_module, "_clock", lambda: now[0])
    snapshot_reset()
    yield now
    snapshot_reset()


@pytest.mark.django_db
def test_the_snapshot_is_rebuilt_after_its_max_age(clock, settings, site_a, alice):
    settings.PARTNER_SNAPSHOT_MAX_AGE_SECONDS = 600
    first = partner_snapshot()
    assert partner_snapshot() is first
    p = clinical.patient_register(site=site_a, patient_no="NEW1", sex="M", birth_year=1970,
                                  consent_scope="commercial", acting_user=alice)
    workflow.patient_submit(p, acting_user=alice)
    clock[0] += 599
    assert partner_snapshot() is first  # still fresh: the new patient is not seen yet
    assert p.pk not in first.patient_ids
    clock[0] += 2
    second = partner_snapshot()
    assert second is not first
    assert p.pk in second.patient_ids
    assert second.snapshot_at >= first.snapshot_at


@pytest.mark.django_db
def test_readers_keep_the_old_snapshot_while_one_rebuilds(clock, settings, monkeypatch):
    settings.PARTNER_SNAPSHOT_MAX_AGE_SECONDS = 10
    old = partner_snapshot()
    clock[0] += 11
    started, release = threading.Event(), threading.Event()
    real_build = snapshot_module.snapshot_build
    builds = []

    def slow_build():
        builds.append(1)
        started.set()
        release.wait(5)
        return old  # what was read does not matter here
    monkeypatch.setattr(snapshot_module, "snapshot_build", slow_build)
    rebuilding = threading.Thread(target=partner_snapshot)
    rebuilding.start()
    assert started.wait(5)
    # While the rebuild runs, other readers get the old snapshot at once, and start none.
    assert partner_snapshot() is old
    assert partner_snapshot() is old
    release.set()
    rebuilding.join(5)
    assert builds == [1]
    monkeypatch.setattr(snapshot_module, "snapshot_build", real_build)


# -- speed -------------------------------------------------------------------------------------


def aggregate_benchmark(snapshot, repeat: int = 10) -> int:
    """The aggregates and feasibility queries the benchmark times, run `repeat` times over a
    snapshot; returns the number of cells computed (for a caller that times it)."""
    cells = 0
    specs = [{"measure": "incidence", "by": ["regimen", "cycle_number"], "filters": {},
              "term": NEUTROPENIA, "min_grade": 3},
             {"measure": "patients", "by": ["cancer_site", "stage"], "filters": {}},
             {"measure": "incidence", "by": ["region"], "filters": {"sex": ["F"]},
              "term": NAUSEA, "min_grade": 2}]
    for _ in range(repeat):
        for spec in specs:
            cells += len(aggregate_raw(snapshot, spec).tables["cells"])
        cells += len(feasibility_raw(snapshot, {"cancer": ["C34"], "min_prior_lines": 1,
                                                "labs": [{"concept": ANC, "min": 1.5,
                                                          "max": None}]}).tables["by_region"])
    return cells


def test_the_benchmark_function_runs(world):
    assert aggregate_benchmark(world["snapshot"], repeat=2) > 0


# -- the endpoints -----------------------------------------------------------------------------


@pytest.fixture
def partner_queries(monkeypatch):
    """The calls the endpoints make to the real query service (research.services.
    partner_queries), recorded on their way through."""
    calls = []

    def answer(**kwargs):
        calls.append(kwargs)
        return partner_query_answer(**kwargs)
    monkeypatch.setattr(partner_api_module, "partner_query_answer", answer)
    snapshot_reset()
    yield calls
    snapshot_reset()


def _logged(user) -> PartnerQuery:
    return PartnerQuery.objects.filter(user=user).latest("created_at", "id")


class Api:
    def __init__(self, user, scopes) -> None:
        text = api_token_create(user=user, name="cells", scopes=scopes, expires_days=30,
                                acting_user=None)[1]
        self.user = user
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {text}"}

    def post(self, url, body, **extra):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.post(url, data, content_type=extra.pop("content_type",
                                                                    "application/json"),
                                **self.headers, **extra)

    def get(self, url):
        return self.client.get(url, **self.headers)


@pytest.fixture
def partner_api(pat, partner_queries):
    return Api(pat, ["aggregates", "feasibility"])


def _error(response) -> dict:
    return response.json()["error"]


@pytest.mark.django_db
def test_aggregates_over_http(partner_api, partner_queries, site_a, alice):
    for i in range(3):
        p = clinical.patient_register(site=site_a, patient_no=f"HTTP{i}", sex="F",
                                      birth_year=1960, consent_scope="commercial",
                                      acting_user=alice)
        workflow.patient_submit(p, acting_user=alice)
    body = {"measure": "patients", "by": ["sex", "region"],
            "filters": {"diagnosis_year": [2021, "2022", "unknown"]}}
    response = partner_api.post(f"{V1}/aggregates/", body)
    assert response.status_code == 200, response.content
    answer = response.json()
    logged = _logged(partner_queries[0]["user"])
    assert logged.endpoint == "aggregates" and logged.outcome == PartnerQuery.Outcome.ANSWERED
    assert logged.params["filters"] == {"diagnosis_year": ["2021", "2022", "unknown"]}
    true = {(r["sex"], r["region"]): r["patients"] for r in logged.true_result["tables"]["cells"]}
    assert true[("F", "Zhejiang")] == 3
    assert sum(true.values()) == 3
    # Three patients: every released cell is hidden, and no true count leaves.
    released = answer["tables"]["cells"]["cells"]
    assert {(r["sex"], r["region"]) for r in released} == set(true)
    assert all(r["patients"] is None and r["patients_text"] == "< 11" for r in released)
    assert answer["tables"]["cells"]["hidden_cells"] == len(true)
    assert len(partner_queries) == 1
    assert partner_queries[0]["user"].username == "pat"
    assert partner_queries[0]["token"].user.username == "pat"


@pytest.mark.django_db
def test_incidence_per_regimen_and_cycle_over_http(partner_api, partner_queries):
    body = {"measure": "incidence", "by": ["regimen", "cycle_number"],
            "term": NEUTROPENIA, "min_grade": 3}
    response = partner_api.post(f"{V1}/aggregates/", body)
    assert response.status_code == 200, response.content
    rows = response.json()["tables"]["cells"]["cells"]
    assert {r["cycle_number"] for r in rows} == set(range(1, 7))
    assert all(r["patients"] is None and r["incidence"] is None for r in rows)
    logged = _logged(partner_api.user)
    assert logged.true_result["sensitivity"] == 36
    assert logged.epsilon_charged == pytest.approx(36 * settings.PARTNER_EPSILON)
    assert all(r["patients"] == 0 and r["patients_with_event"] == 0
               for r in logged.true_result["tables"]["cells"])


@pytest.mark.django_db
def test_feasibility_over_http(partner_api, partner_queries, site_a, alice):
    p = clinical.patient_register(site=site_a, patient_no="FEAS1", sex="M", birth_year=1950,
                                  consent_scope="commercial", acting_user=alice)
    clinical.diagnosis_record(patient=p, diagnosis_date=dt.date(2022, 1, 3), cancer="C34",
                              stage_group="IIIB", biomarkers={"EGFR": "+"}, acting_user=alice)
    workflow.patient_submit(p, acting_user=alice)
    body = {"cancer": ["c34"], "stage_groups": ["III"], "biomarkers": {"EGFR": "+"},
            "max_prior_lines": 0, "site_tiers": ["tertiary"], "regions": ["Zhejiang"]}
    response = partner_api.post(f"{V1}/feasibility/", body)
    assert response.status_code == 200, response.content
    answer = response.json()
    logged = _logged(partner_api.user)
    assert logged.endpoint == "feasibility" and logged.params["cancer"] == ["C34"]
    tiers = {r["site_tier"]: r["patients"]
             for r in logged.true_result["tables"]["by_site_tier"]}
    assert tiers["tertiary"] == 1 and sum(tiers.values()) == 1
    regions = {r["region"]: r["patients"] for r in logged.true_result["tables"]["by_region"]}
    assert regions == {"Zhejiang": 1, UNKNOWN: 0}
    released = answer["tables"]["by_region"]["cells"]
    assert {r["region"] for r in released} == {"Zhejiang", UNKNOWN}
    assert all(r["patients"] is None for r in released)
    assert not any("patient_id" in r for r in released)


@pytest.mark.django_db
def test_dimensions_list_every_dimension_with_labels(partner_api, site_a):
    response = partner_api.get(f"{V1}/aggregates/dimensions/")
    assert response.status_code == 200
    listed = response.json()
    assert [d["name"] for d in listed["dimensions"]] == list(DIMENSIONS)
    by_name = {d["name"]: d for d in listed["dimensions"]}
    regimens = {v["code"]: v for v in by_name["regimen"]["values"]}
    assert regimens["REG-PEM-CIS"]["label_zh"] == Concept.objects.get(
        code="REG-PEM-CIS").name_zh
    assert {v["code"] for v in by_name["sex"]["values"]} == {"M", "F"}
    assert by_name["cycle_number"]["values"][0]["code"] == 1
    assert "Zhejiang" in {v["code"] for v in by_name["region"]["values"]}
    assert {m["name"] for m in listed["measures"]} == {"patients", "incidence"}
    assert NEUTROPENIA in {t["code"] for t in listed["terms"]}
    assert {lab["code"]: lab["unit"] for lab in listed["labs"]}[ANC] == "10*9/L"


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "scopes"), [("aggregates/", ["feasibility"]),
                                               ("feasibility/", ["aggregates"]),
                                               ("aggregates/dimensions/", ["feasibility"])])
def test_each_endpoint_needs_its_scope(pat, partner_queries, path, scopes):
    api = Api(pat, scopes)
    response = (api.get(f"{V1}/{path}") if "dimensions" in path
                else api.post(f"{V1}/{path}", {"measure": "patients"}))
    assert response.status_code == 403
    assert partner_queries == []
    anonymous = Client().post(f"{V1}/{path}", "{}", content_type="application/json")
    assert anonymous.status_code == 401


@pytest.mark.django_db
def test_a_clerk_cannot_query(alice, partner_queries):
    client = Client()
    client.force_login(alice)
    response = client.post(f"{V1}/aggregates/", {"measure": "patients"},
                           content_type="application/json")
    assert response.status_code == 403
    assert partner_queries == []


HOSTILE_AGGREGATES = [
    ({"measure": "patients", "by": ["planet"]}, "by"),
    ({"measure": "patients", "by": ["sex", "region", "stage"]}, "by"),
    ({"measure": "patients", "by": ["sex", "sex"]}, "by"),
    ({"measure": "patients", "by": ["cycle_number"]}, "by"),
    ({"measure": "incidence", "by": ["cycle_number"], "term": NEUTROPENIA, "min_grade": 3},
     "by"),
    ({"measure": "patients", "filters": {"cycle_number": [1]}}, "by"),
    ({"measure": "patients", "filters": {"planet": ["x"]}}, "filters"),
    ({"measure": "patients", "filters": {"sex": ["X"]}}, "filters"),
    ({"measure": "patients", "filters": {"sex": []}}, "filters"),
    ({"measure": "patients", "filters": {"sex": "F"}}, "filters"),
    ({"measure": "patients", "filters": {"region": ["Zhe\x00jiang"]}}, "filters"),
    ({"measure": "patients", "filters": {"region": [True]}}, "filters"),
    ({"measure": "patients", "filters": {"region": [1.5]}}, "filters"),
    ({"measure": "patients", "filters": {"diagnosis_year": ["x" * 10_000]}}, "filters"),
    ({"measure": "patients", "filters": {"region": ["Zhejiang"] * 10_000}}, "filters"),
    ({"measure": "patients", "filters": {"sex\x00": ["F"]}}, "filters"),
    ({"measure": "patients", "filters": [["sex", "F"]]}, "filters"),
    ({"measure": "count"}, "measure"),
    ({"measure": ["patients"]}, "measure"),
    ({}, "measure"),
    ({"measure": "patients", "term": NEUTROPENIA}, "term"),
    ({"measure": "incidence", "min_grade": 3}, "term"),
    ({"measure": "incidence", "term": "Alopecia", "min_grade": 3}, "term"),
    ({"measure": "incidence", "term": NEUTROPENIA, "min_grade": 6}, "min_grade"),
    ({"measure": "incidence", "term": NEUTROPENIA, "min_grade": 10 ** 40}, "min_grade"),
    ({"measure": "incidence", "term": NEUTROPENIA, "min_grade": "NaN"}, "min_grade"),
    ({"measure": "incidence", "term": NEUTROPENIA, "min_grade": 2.5}, "min_grade"),
    ({"measure": "incidence", "term": "Neutro\x00penia", "min_grade": 2}, "term"),
    ({"measure": "patients", "extra": 1}, "extra"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), HOSTILE_AGGREGATES)
def test_hostile_aggregate_input_is_400_naming_the_field(partner_api, partner_queries, body,
                                                         field):
    response = partner_api.post(f"{V1}/aggregates/", body)
    assert response.status_code == 400, response.content
    error = _error(response)
    assert error["code"] == "validation_failed"
    assert any(name == field or name.startswith(field + ".") for name in error["fields"]), \
        error["fields"]
    assert partner_queries == []  # nothing was computed, charged or logged


HOSTILE_FEASIBILITY = [
    ({"cancer": ["lung"]}, "cancer"),
    ({"cancer": "C34"}, "cancer"),
    ({"cancer": ["C3\n4"]}, "cancer"),
    ({"cancer": ["C34"] * 1000}, "cancer"),
    ({"cancer": [34]}, "cancer"),
    ({"stage_groups": ["III; DROP"]}, "stage_groups"),
    ({"biomarkers": {"EGFR": "+", "TP53": "+"}}, "biomarkers"),
    ({"biomarkers": {"EGFR": "\x00"}}, "biomarkers"),
    ({"biomarkers": ["EGFR"]}, "biomarkers"),
    ({"min_prior_lines": -1}, "min_prior_lines"),
    ({"min_prior_lines": 10 ** 30}, "min_prior_lines"),
    ({"min_prior_lines": 3, "max_prior_lines": 1}, "max_prior_lines"),
    ({"min_prior_lines": True}, "min_prior_lines"),
    ({"labs": [{"concept": ANC, "min": "NaN"}]}, "labs"),
    ({"labs": [{"concept": ANC, "min": "1.5"}]}, "labs"),
    ({"labs": [{"concept": ANC, "max": 1e300}]}, "labs"),
    ({"labs": [{"concept": ANC, "min": 3, "max": 1}]}, "labs"),
    ({"labs": [{"concept": "1234-5", "min": 1}]}, "labs"),
    ({"labs": [{"concept": ANC, "unit": "g/L"}]}, "labs"),
    ({"labs": [{"concept": ANC}] * 100}, "labs"),
    ({"labs": {"concept": ANC}}, "labs"),
    ({"site_tiers": ["quaternary"]}, "site_tiers"),
    ({"regions": ["Atlantis"]}, "regions"),
    ({"sites": ["SITE-A"]}, "sites"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), HOSTILE_FEASIBILITY)
def test_hostile_feasibility_input_is_400_naming_the_field(partner_api, partner_queries,
                                                           site_a, body, field):
    response = partner_api.post(f"{V1}/feasibility/", body)
    assert response.status_code == 400, response.content
    assert any(name == field or name.startswith(field + ".")
               for name in _error(response)["fields"]), _error(response)["fields"]
    assert partner_queries == []


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ['{"measure": NaN}', '{"measure": "patients", "by": [Infinity]}',
                                 '{"measure": "pat', "[]", '"patients"', "null"])
@pytest.mark.parametrize("path", ["aggregates/", "feasibility/"])
def test_malformed_json_is_400(partner_api, partner_queries, raw, path):
    response = partner_api.post(f"{V1}/{path}", raw)
    assert response.status_code == 400
    assert partner_queries == []


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_415(partner_api, partner_queries):
    response = partner_api.post(f"{V1}/aggregates/", "measure=patients",
                                content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert partner_queries == []


@pytest.mark.django_db
def test_a_huge_body_is_413(partner_api, partner_queries, settings):
    body = json.dumps({"measure": "patients", "filters": {"region": ["x" * 60] * 300_000}})
    response = partner_api.post(f"{V1}/aggregates/", body)
    assert response.status_code == 413
    assert partner_queries == []


def test_the_schema_documents_the_partner_endpoints(client, db):
    response = client.get(f"{V1}/schema/", {"format": "json"})
    schema = json.loads(response.content)
    # 429 and 503 of the rate limits are on every operation (test_api_matrix.py).
    expected = {"/aggregates/": ("post", {"200", "400", "401", "403", "413", "415", "429",
                                          "503"}),
                "/feasibility/": ("post", {"200", "400", "401", "403", "413", "415", "429",
                                           "503"}),
                "/aggregates/dimensions/": ("get", {"200", "400", "401", "403", "429",
                                                    "503"})}
    for path, (method, statuses) in expected.items():
        operation = schema["paths"][V1 + path][method]
        assert set(operation["responses"]) == statuses, path
        assert {"bearerAuth": []} in operation["security"]
    assert "AggregateInputRequest" in schema["components"]["schemas"] or any(
        "AggregateInput" in name for name in schema["components"]["schemas"])


def test_the_snapshot_reads_the_bulk_reader_on_postgresql(world):
    """On PostgreSQL the clinical kinds come through the bulk reader (one read per kind)."""
    assert connection.vendor == "postgresql"
    assert sorted(world["kinds_read"]) == sorted(["patient", "diagnosis", "treatmentline",
                                                  "cycle", "adverseevent", "labresult"])


def test_the_snapshot_builds_through_the_orm_elsewhere(world):
    """Where COPY does not exist (SQLite, the demo), the same snapshot through the ORM."""
    via_copy, via_orm = world["snapshot"], world["snapshot_orm"]
    assert via_orm.patient_ids.tolist() == via_copy.patient_ids.tolist()
    for name in ("patients", "lines", "regimens", "cycles", "adverse_events", "labs"):
        left = getattr(via_copy, name).reset_index(drop=True)
        right = getattr(via_orm, name).reset_index(drop=True)
        assert left.astype(str).equals(right.astype(str)), name


@pytest.mark.django_db(transaction=True)
def test_concurrent_readers_of_a_stale_snapshot_start_one_rebuild(vocabulary, site_a, alice,
                                                                  clock, settings, monkeypatch):
    """Committed writes, then eight threads at once on a stale snapshot: one rebuild (which
    sees the withdrawal), every reader answered with the old or the new snapshot."""
    settings.PARTNER_SNAPSHOT_MAX_AGE_SECONDS = 60
    p = clinical.patient_register(site=site_a, patient_no="CONC1", sex="F", birth_year=1966,
                                  consent_scope="commercial", acting_user=alice)
    workflow.patient_submit(p, acting_user=alice)
    old = partner_snapshot()
    assert p.pk in old.patient_ids
    clinical.patient_withdraw(patient=p, withdrawn_date=timezone.localdate(),
                              acting_user=alice, reason="consent withdrawn")
    assert Patient.objects.get(pk=p.pk).withdrawn_date is not None
    clock[0] += 61
    real_build = snapshot_module.snapshot_build
    builds = []

    def counted_build():
        builds.append(threading.get_ident())
        return real_build()
    monkeypatch.setattr(snapshot_module, "snapshot_build", counted_build)
    barrier = threading.Barrier(8)
    results = []

    def reader():
        try:
            barrier.wait(10)
            results.append(partner_snapshot())
        finally:
            connection.close()
    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    new = snapshot_module._current
    assert len(builds) == 1
    assert len(results) == 8
    assert all(r is old or r is new for r in results)
    assert new is not old
    assert p.pk not in new.patient_ids
