"""Re-coding after a mapping change: set-based (one UPDATE per id range, its history rows in
the same statement), the history rows those the row-by-row path writes, lab canonical values
by the one rule, locked records left alone, one site's word only."""

from __future__ import annotations

import datetime as dt
import itertools
import logging

import pytest
from django.db import connection, transaction
from django.db.models import Max
from django.test.utils import CaptureQueriesContext

from registry.audit import audited_save
from registry.models import (
    Concept,
    Diagnosis,
    DrugAdministration,
    LabResult,
    MappingStatus,
    RecordStatus,
    SiteTerm,
    UnitConversion,
    Vocabulary,
)
from registry.services import clinical, mapping, workflow
from registry.services.mapping import USES, mapping_approve, recode, recode_pending
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary")]

# Columns whose value is the moment of the write, different on every run.
MOMENTS = {"history_id", "history_date", "updated_at"}


def _lock(record, *, clerk, monitor):
    record = workflow.record_submit(record, acting_user=clerk)
    password = persona_password(monitor.username)
    record = workflow.record_verify(record, acting_user=monitor, password=password)
    return workflow.record_lock(record, acting_user=monitor, password=password)


def _morphology_concepts() -> list[Concept]:
    vocabulary = Vocabulary.objects.filter(code="ICDO3").first() or audited_save(
        Vocabulary(code="ICDO3", name="ICD-O-3", version="2019"), acting_user=None,
        reason="test vocabulary")
    return [audited_save(Concept(vocabulary=vocabulary, code=code, name_en=name, name_zh=name,
                                 domain="morphology"), acting_user=None, reason="test vocabulary")
            for code, name in (("8140/3", "Adenocarcinoma"), ("8070/3", "Squamous carcinoma"))]


def _labs(patient, user, rows):
    """Lab rows (test, value, unit) on successive days after the diagnosis."""
    days = itertools.count(20)
    return [clinical.lab_result_record(
        patient=patient, test=test, value=value, unit=unit, acting_user=user,
        collected_date=factories.DIAGNOSED + dt.timedelta(days=next(days)))
        for test, value, unit in rows]


def _every_coded_column(site, user) -> None:
    """A record with a word in every coded column, and labs in every canonical case: a
    converted unit, the canonical unit, an unmapped unit word, no unit, a censored value, a
    lab-specific factor."""
    _morphology_concepts()
    factories.full_record(site, user)
    p = factories.patient(site, user)
    clinical.diagnosis_record(patient=p, diagnosis_date=factories.DIAGNOSED, cancer="C34",
                              morphology="8140/3", stage_group="IV", ecog=1, acting_user=user)
    _labs(p, user, [("ANC", "1500", "/mm3"), ("ANC", "1.1", "10^9/L"),
                    ("ANC", "1500", "个/立方毫米"), ("ANC", "1.0", ""), ("ANC", "<0.5", "10^9/L"),
                    ("Hb", "7.2", "mmol/L"), ("Hb", "120", "g/L")])


def _other_concept(domain: str, current_id: int | None) -> Concept:
    return Concept.objects.filter(domain=domain).exclude(pk=current_id).order_by("code").first()


def _state(mark: dict) -> dict:
    """Every column of the clinical rows and of the history rows written since `mark`, but
    the moments of the write."""
    state = {}
    for model in mark:
        rows = model.objects.order_by("pk").values()
        history = model.history.filter(history_id__gt=mark[model]).order_by("id").values()
        state[model.__name__] = [{k: v for k, v in r.items() if k not in MOMENTS}
                                 for r in rows]
        state[f"history of {model.__name__}"] = [{k: v for k, v in r.items()
                                                  if k not in MOMENTS} for r in history]
    return state


def _compare(term: SiteTerm, target: Concept | None, user) -> dict:
    """The state after re-coding `term` row by row (the path the registry had) and set-based,
    each from the same start (a savepoint rolled back in between)."""
    models = {model for uses in USES.values() for model, _, _ in uses}
    states = {}
    for path in ("row by row", "set-based"):
        savepoint = transaction.savepoint()
        mark = {m: m.history.aggregate(m=Max("history_id"))["m"] or 0 for m in models}
        if path == "set-based":
            recode(term, target, acting_user=user, reason="compared")
        else:
            for model, term_field, concept_field in USES[term.domain]:
                rows = mapping._recodable(model, term_field, concept_field, term, target)
                mapping._recode_row_by_row(model, concept_field, rows, target,
                                           acting_user=user, reason="compared", batch_ids=3)
        states[path] = _state(mark)
        transaction.savepoint_rollback(savepoint)
    return states


def test_set_based_history_rows_are_those_the_row_by_row_path_writes(site_a, alice, mona):
    _every_coded_column(site_a, alice)
    cases = []
    for uses in USES.values():
        for model, term_field, concept_field in uses:
            for term_id, concept_id in (model.objects.exclude(**{f"{term_field}": None})
                                        .values_list(f"{term_field}_id", f"{concept_field}_id")
                                        .distinct()):
                term = SiteTerm.objects.get(pk=term_id)
                cases.append((term, _other_concept(term.domain, concept_id)))
    anc = SiteTerm.objects.get(site=site_a, domain="lab", text="ANC")
    cases += [(anc, Concept.objects.get(code="718-7")),  # a count re-coded as haemoglobin
              (anc, None),  # the mapping withdrawn
              (SiteTerm.objects.get(site=site_a, domain="unit", text="个/立方毫米"),
               Concept.objects.get(code="/mm3"))]
    assert {term.domain for term, _ in cases} == set(USES)  # every coded column

    for term, target in cases:
        states = _compare(term, target, mona)
        written = [r for key, rows in states["set-based"].items() if key.startswith("history")
                   for r in rows]
        assert written, (term.text, target)
        assert {(r["history_type"], r["history_user_id"], r["history_change_reason"])
                for r in written} == {("~", mona.pk, "compared")}
        assert states["set-based"] == states["row by row"], (term.text, target)


def test_the_sql_rule_agrees_with_the_form_on_every_starter_conversion(site_a, alice, mona):
    """Labs recorded through the form (the Python rule) in every converting (lab, unit) pair of
    the starter vocabulary; their units and labs re-coded away and back set-based give the
    same canonical values, bit for bit."""
    labs = list(Concept.objects.filter(domain="lab"))
    pairs = {(lab.code, lab.attributes["canonical_unit"]) for lab in labs}  # identity
    for conversion in UnitConversion.objects.select_related("lab", "from_unit", "to_unit"):
        for lab in [conversion.lab] if conversion.lab else labs:
            if lab.attributes.get("canonical_unit") == conversion.to_unit.code:
                pairs.add((lab.code, conversion.from_unit.code))
    assert len(pairs) > UnitConversion.objects.count()
    p = factories.patient(site_a, alice)
    recorded = _labs(p, alice, [(lab, "1.37", unit) for lab, unit in sorted(pairs)])
    by_form = {lab.pk: (lab.value_canonical, lab.canonical_unit_id, lab.unit_flag)
               for lab in recorded}
    assert {flag for _, _, flag in by_form.values()} == {""}  # every pair converted

    terms = {lab.unit_term for lab in recorded} | {lab.test_term for lab in recorded}
    for term in terms:
        concept = term.mappings.get(status=MappingStatus.APPROVED).concept
        recode(term, None, acting_user=mona, reason="away")
        assert recode(term, concept, acting_user=mona, reason="back").changed > 0
    in_sets = {lab.pk: (lab.value_canonical, lab.canonical_unit_id, lab.unit_flag)
               for lab in LabResult.objects.filter(patient=p)}
    assert in_sets == by_form


@pytest.mark.django_db(transaction=True)
def test_a_mapping_change_recodes_labs_through_the_service(site_a, alice, mona):
    p = factories.patient(site_a, alice)
    labs = _labs(p, alice, [("ANC", "1500", "个/立方毫米"), ("ANC", "900", "个/立方毫米"),
                            ("WBC", "4200", "个/立方毫米")])
    assert {lab.unit_flag for lab in labs} == {"unmapped"}
    unit_term = labs[0].unit_term

    mapping_approve(site_term=unit_term, concept=Concept.objects.get(code="/mm3"),
                    acting_user=mona, reason="the lab's report form")

    stored = LabResult.objects.filter(patient=p).order_by("pk")
    assert [(lab.unit.code, lab.value_canonical, lab.canonical_unit.code, lab.unit_flag,
             lab.version) for lab in stored] == [
        ("/mm3", pytest.approx(1.5), "10*9/L", "", 2), ("/mm3", pytest.approx(0.9), "10*9/L",
                                                        "", 2),
        ("/mm3", pytest.approx(4.2), "10*9/L", "", 2)]
    for before, after in zip(labs, stored, strict=True):
        assert after.updated_at > before.updated_at  # the row changed, and says so
        last = after.history.latest("history_id")
        assert (last.history_type, last.history_user, last.version, last.unit_id,
                last.value_canonical, last.history_date) == (
            "~", mona, 2, after.unit_id, after.value_canonical, after.updated_at)
        assert "the lab's report form" in last.history_change_reason
        assert after.history.count() == 2


@pytest.mark.django_db(transaction=True)
def test_locked_rows_are_skipped_in_every_batch(site_a, alice, mona, caplog):
    p = factories.patient(site_a, alice)
    labs = _labs(p, alice, [("ANC", value, "个/立方毫米") for value in
                            ("1000", "1100", "1200", "1300", "1400", "1500")])
    locked = [_lock(labs[i], clerk=alice, monitor=mona) for i in (1, 4)]
    history = {lab.pk: lab.history.count() for lab in locked}
    term = labs[0].unit_term
    table = LabResult._meta.db_table

    with CaptureQueriesContext(connection) as captured, caplog.at_level(logging.INFO):
        result = recode(term, Concept.objects.get(code="/mm3"), acting_user=mona,
                        reason="unit mapped", batch_ids=2)

    assert result.changed == 4
    assert [row.id for row in result.locked] == [lab.pk for lab in locked]
    statements = [q["sql"] for q in captured.captured_queries]
    updates = [s for s in statements if s.startswith(f"WITH changed AS (UPDATE {table}")]
    assert len(updates) >= 3  # one per id range of 2
    # No statement brings the rows to be re-coded into memory: the only rows read are the
    # locked ones, to be listed.
    reads = [s for s in statements if s.startswith(f'SELECT "{table}"."id"')]
    assert reads and all(f"\"{table}\".\"status\" = 'locked'" in s for s in reads), reads
    assert any("re-coding unit" in m and "4 rows changed" in m for m in caplog.messages)
    for lab in locked:
        frozen = LabResult.objects.get(pk=lab.pk)
        assert (frozen.unit_id, frozen.value_canonical, frozen.unit_flag, frozen.version,
                frozen.status) == (None, None, "unmapped", lab.version, RecordStatus.LOCKED)
        assert frozen.history.count() == history[lab.pk]
    open_rows = LabResult.objects.exclude(pk__in=[lab.pk for lab in locked])
    assert {(lab.unit.code, lab.unit_flag, lab.version) for lab in open_rows} == {
        ("/mm3", "", 2)}
    mapping_approve(site_term=term, concept=Concept.objects.get(code="/mm3"), acting_user=mona,
                    reason="unit mapped")  # nothing left to change but the locked rows
    assert LabResult.history.filter(history_change_reason__contains="unit mapped").count() == 4
    assert sorted(r.id for r in recode_pending(term)) == [lab.pk for lab in locked]


@pytest.mark.django_db(transaction=True)
def test_a_word_used_at_two_sites_is_recoded_at_its_site_only(site_a, site_b, alice, bob, mona):
    row_a = DrugAdministration.objects.get(patient=factories.full_record(site_a, alice))
    row_b = DrugAdministration.objects.get(patient=factories.full_record(site_b, bob))
    assert (row_a.drug_term.text, row_b.drug_term.text) == ("DDP", "DDP")
    assert row_a.drug_term_id != row_b.drug_term_id
    history_b = row_b.history.count()

    result = recode(row_a.drug_term, Concept.objects.get(code="L01XA02"), acting_user=mona,
                    reason="pharmacy corrected")

    assert result.changed == 1
    assert DrugAdministration.objects.get(pk=row_a.pk).drug.code == "L01XA02"
    untouched = DrugAdministration.objects.get(pk=row_b.pk)
    assert (untouched.drug.code, untouched.version) == ("L01XA01", row_b.version)
    assert untouched.history.count() == history_b


def test_a_word_with_no_rows_changes_nothing(site_a, mona):
    term, _ = mapping.term_resolve(site=site_a, domain="drug", text="DDP", acting_user=mona)
    with CaptureQueriesContext(connection) as captured:
        result = recode(term, Concept.objects.get(code="L01XA02"), acting_user=mona,
                        reason="nothing to do")
    assert result == mapping.RecodeResult(changed=0)
    assert not [q for q in captured.captured_queries if "UPDATE" in q["sql"]]
    assert not Diagnosis.history.filter(history_change_reason="nothing to do").exists()
