"""Terminology mapping: suggestions, cross-site learning, policy, re-coding, vocabulary and
mapping files."""

import datetime as dt
import json

import pytest
from django.core.management import CommandError, call_command

from registry.models import (
    Concept,
    DrugAdministration,
    LabResult,
    MappingStatus,
    Role,
    SiteTerm,
    TermMapping,
)
from registry.services import clinical
from registry.services.mapping import (
    mapping_approve,
    mapping_reject,
    suggest,
    term_mark_unmappable,
    term_resolve,
)
from registry.services.organisation import user_add
from tests.registry import factories

pytestmark = pytest.mark.usefixtures("vocabulary")


def concept(code):
    return Concept.objects.get(code=code)


@pytest.mark.parametrize(("word", "method"), [("DDP", "synonym"), ("顺铂", "exact"),
                                              ("ｃｉｓｐｌａｔｉｎ", "exact"),
                                              ("Cisplatin Inj.", "synonym"),
                                              ("cisplatin injection", "fuzzy"),
                                              ("cisplatine", "fuzzy")])
def test_suggestions_rank_cisplatin_first(word, method):
    top = suggest("drug", word)[0]
    assert (top.code, top.method) == ("L01XA01", method)
    assert 0 < top.score <= 1
    if method == "fuzzy":
        assert top.score < 0.95


def test_what_other_sites_approved_is_learned(site_a, site_b, alice, bob):
    term_b, _ = term_resolve(site=site_b, domain="drug", text="本院顺铂针", acting_user=bob)
    assert not term_b.mappings.filter(status="approved").exists()  # no exact match: review
    monitor_b = user_add(username="mo_b", role=Role.MONITOR, site_codes=[site_b.code],
                         acting_user=None)[0]
    mapping_approve(site_term=term_b, concept=concept("L01XA01"), acting_user=monitor_b)
    learned = suggest("drug", "本院顺铂针", site=site_a)[0]
    assert (learned.code, learned.method) == ("L01XA01", "learned")
    # One other site's approval scores 0.92; a site whose policy accepts that approves the
    # word on first use (the default, 0.95, wants three sites to agree).
    site_a.auto_approve_min_score = 0.9
    site_a.save()
    term_a, found = term_resolve(site=site_a, domain="drug", text="本院顺铂针", acting_user=alice)
    assert found.code == "L01XA01"
    assert term_a.mappings.get(status="approved").method == "learned"


def test_site_without_auto_approval_reviews_everything(site_a, alice):
    site_a.auto_approve_min_score = None
    site_a.save()
    term, found = term_resolve(site=site_a, domain="drug", text="DDP", acting_user=alice)
    assert found is None
    suggested = term.mappings.filter(status=MappingStatus.SUGGESTED)
    assert suggested.first().concept.code == "L01XA01"


def test_changing_a_mapping_recodes_every_stored_row(site_a, alice, mona):
    p = factories.full_record(site_a, alice)
    cycle = p.cycles.get()
    clinical.drug_administration_record(cycle=cycle, drug="XYZ-抗癌", day=2, dose="10",
                                        dose_unit="mg", acting_user=alice)
    row = DrugAdministration.objects.get(drug_term__text="XYZ-抗癌")
    assert row.drug is None
    term = row.drug_term
    mapping_approve(site_term=term, concept=concept("L01XA02"), acting_user=mona,
                    reason="pharmacy confirmed carboplatin")
    row.refresh_from_db()
    assert row.drug.code == "L01XA02"
    mapping_approve(site_term=term, concept=concept("L01XA03"), acting_user=mona,
                    reason="pharmacy corrected: oxaliplatin")
    row.refresh_from_db()
    assert row.drug.code == "L01XA03"
    last = row.history.order_by("-history_id").first()
    assert last.history_user == mona
    assert "L01XA02 -> L01XA03" in last.history_change_reason
    assert "oxaliplatin" in last.history_change_reason
    mapping_reject(mapping=term.mappings.get(status="approved"), acting_user=mona,
                   reason="not a drug")
    row.refresh_from_db()
    assert row.drug is None


def test_remapping_a_unit_recomputes_canonical_values(site_a, alice, mona):
    p = factories.patient(site_a, alice)
    lab = clinical.lab_result_record(patient=p, test="ANC", value="1500", unit="个/立方毫米",
                                     collected_date=factories.DIAGNOSED, acting_user=alice)
    assert (lab.value_canonical, lab.unit_flag) == (None, "unmapped")
    mapping_approve(site_term=lab.unit_term, concept=concept("/mm3"), acting_user=mona)
    lab.refresh_from_db()
    assert (lab.value_canonical, lab.unit_flag) == (pytest.approx(1.5), "")


def test_unmappable_words_leave_the_queue(site_a, mona):
    term, _ = term_resolve(site=site_a, domain="drug", text="中药汤剂", acting_user=mona)
    term_mark_unmappable(term=term, acting_user=mona, reason="herbal decoction, no concept")
    term.refresh_from_db()
    assert term.unmappable
    assert not term.mappings.exclude(status="rejected").exists()


def test_suggest_terms_command(capsys, site_a):
    call_command("suggest_terms", "--domain", "drug", "--site", "SITE-A", "--json", "DDP",
                 "紫杉醇")
    out = json.loads(capsys.readouterr().out)
    assert out["DDP"][0]["code"] == "L01XA01" and out["紫杉醇"][0]["code"] == "L01CD01"
    assert {"vocabulary", "code", "name_en", "score", "method"} <= set(out["DDP"][0])
    with pytest.raises(CommandError, match="Unknown site"):
        call_command("suggest_terms", "--domain", "drug", "--site", "NOPE", "DDP")


ATHENA_CONCEPT = (
    "concept_id\tconcept_name\tdomain_id\tvocabulary_id\tconcept_class_id\tstandard_concept\t"
    "concept_code\tvalid_start_date\tvalid_end_date\tinvalid_reason\n"
    "1397599\tcisplatin\tDrug\tATC\tATC 5th\tC\tL01XA01\t19700101\t20991231\t\n"
    "3013682\t{long}\tMeasurement\tLOINC\tLab Test\tS\t26499-4\t19700101\t20991231\t\n"
    "9\tsomething else\tDrug\tRxNorm\tIngredient\tS\t123\t19700101\t20991231\t\n"
)


def test_load_vocabulary_is_idempotent(tmp_path):
    long_name = "Neutrophils [#/volume] in Blood " + "x" * 300
    (tmp_path / "CONCEPT.csv").write_text(ATHENA_CONCEPT.format(long=long_name),
                                          encoding="utf-8")
    (tmp_path / "CONCEPT_SYNONYM.csv").write_text(
        "concept_id\tconcept_synonym_name\tlanguage_concept_id\n"
        "3013682\tANC count\t4180186\n1397599\t顺铂注射液\t4182948\n", encoding="utf-8")
    call_command("load_vocabulary", str(tmp_path))
    cis = concept("L01XA01")
    assert cis.omop_concept_id == 1397599 and cis.name_zh == "顺铂"
    loinc = Concept.objects.get(vocabulary__code="LOINC", code="26499-4")
    assert loinc.name_en == long_name and loinc.domain == "lab"
    assert not Concept.objects.filter(code="123").exists()  # RxNorm is not ours
    counts = Concept.objects.count(), cis.synonyms.count()
    call_command("load_vocabulary", str(tmp_path))
    assert (Concept.objects.count(), cis.synonyms.count()) == counts
    assert suggest("drug", "顺铂注射液")[0].code == "L01XA01"


def test_mapping_files_in_and_out(tmp_path, site_a, alice, mona, capsys):
    ours = tmp_path / "map.csv"
    ours.write_text("domain,local_term,vocabulary,code\ndrug,顺铂(齐鲁),ATC,L01XA01\n"
                    "unit,个/立方毫米,UCUM,/mm3\nadverse_event,粒缺,CTCAE,"
                    "Neutrophil count decreased\n", encoding="utf-8")
    call_command("import_mappings", "--site", "SITE-A", str(ours))
    assert SiteTerm.objects.get(site=site_a, text="粒缺").mappings.get(
        status="approved").method == TermMapping.Method.FILE
    bad = tmp_path / "bad.csv"
    bad.write_text("domain,local_term,vocabulary,code\ndrug,新药,ATC,L01XA01\n"
                   "drug,别的药,ATC,Z99\n", encoding="utf-8")
    with pytest.raises(CommandError, match="row 3: ATC Z99 is not in"):
        call_command("import_mappings", "--site", "SITE-A", str(bad))
    assert not SiteTerm.objects.filter(text="新药").exists()  # all-or-nothing
    concept("L01XA01").__class__.objects.filter(code="L01CD01").update(omop_concept_id=1378382)
    usagi = tmp_path / "usagi.csv"
    usagi.write_text("sourceCode,sourceName,sourceFrequency,matchScore,mappingStatus,conceptId,"
                     "conceptName\nT1,泰素注射液,12,0.9,APPROVED,1378382,paclitaxel\n"
                     "T2,未知药,3,0.2,UNCHECKED,0,\n", encoding="utf-8")
    call_command("import_mappings", "--site", "SITE-A", "--domain", "drug", str(usagi))
    assert SiteTerm.objects.get(site=site_a, text="泰素注射液").mappings.get(
        status="approved").concept.code == "L01CD01"
    stcm = tmp_path / "stcm.tsv"
    stcm.write_text("\t".join(["source_code", "source_concept_id", "source_vocabulary_id",
                               "source_code_description", "target_concept_id",
                               "target_vocabulary_id", "valid_start_date", "valid_end_date",
                               "invalid_reason"]) + "\n"
                    + "紫杉醇(国产)\t0\tH\t紫杉醇(国产)\t1378382\tATC\t19700101\t20991231\t\n",
                    encoding="utf-8")
    call_command("import_mappings", "--site", "SITE-A", str(stcm))
    capsys.readouterr()
    term, _ = term_resolve(site=site_a, domain="drug", text="=cmd|' /C calc'!A0",
                           acting_user=alice)
    mapping_approve(site_term=term, concept=concept("L01CB01"), acting_user=mona)
    call_command("export_mappings", "--site", "SITE-A")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("source_code\tsource_concept_id")
    assert any(line.startswith("紫杉醇(国产)\t0\tSITE-A_drug") and "\t1378382\t" in line
               for line in lines)
    assert not any(line.startswith("=") for line in lines)  # never re-exported as a formula


def test_recorded_rows_keep_their_word_when_a_lab_term_is_mapped(site_a, alice, mona):
    p = factories.patient(site_a, alice)
    lab = clinical.lab_result_record(patient=p, test="中性粒(自动)", value="0.7", unit="10^9/L",
                                     collected_date=factories.DIAGNOSED + dt.timedelta(1),
                                     acting_user=alice)
    assert lab.lab is None and lab.unit_flag == "unmapped"
    mapping_approve(site_term=lab.test_term, concept=concept("751-8"), acting_user=mona)
    lab = LabResult.objects.get(pk=lab.pk)
    assert (lab.lab.code, lab.test_term.text, lab.value_canonical) == ("751-8", "中性粒(自动)",
                                                                       pytest.approx(0.7))


def test_review_queue_page(client, site_a, alice, mona, bob):
    p = factories.full_record(site_a, alice)
    cycle = p.cycles.get()
    clinical.drug_administration_record(cycle=cycle, drug="顺铂(进口)X", day=3, dose="5",
                                        dose_unit="mg", acting_user=alice)
    clinical.drug_administration_record(cycle=cycle, drug="神秘药", day=4, acting_user=alice)
    client.force_login(mona)
    page = client.get("/mapping/")
    assert page.status_code == 200
    assert "顺铂(进口)X" in page.text and "神秘药" in page.text and "DDP" not in page.text
    term = SiteTerm.objects.get(site=site_a, text="顺铂(进口)X")
    assert term.mappings.filter(status="suggested").first().concept.code == "L01XA01"
    client.post("/mapping/act", {"action": "approve", "term": term.pk,
                                 "concept": concept("L01XA01").pk})
    row = DrugAdministration.objects.get(drug_term=term)
    assert row.drug.code == "L01XA01"
    assert "顺铂(进口)X" not in client.get("/mapping/").text
    other = SiteTerm.objects.get(site=site_a, text="神秘药")
    client.post("/mapping/act", {"action": "choose", "term": other.pk,
                                 "concept_code": "ATC:L01CB01"})
    assert DrugAdministration.objects.get(drug_term=other).drug.code == "L01CB01"
    # A clerk may look but not approve; another site's monitor sees nothing of site A.
    client.force_login(alice)
    client.post("/mapping/act", {"action": "unmappable", "term": other.pk, "reason": "x"})
    other.refresh_from_db()
    assert not other.unmappable
    client.force_login(bob)
    assert "神秘药" not in client.get("/mapping/").text
    assert client.post("/mapping/act", {"action": "unmappable", "term": other.pk,
                                         "reason": "x"}).status_code == 404
