"""Site extract import: round trip with the synthetic cohort, needs-mapping and resume,
idempotence, corrections, and every kind of bad input refused with nothing written."""

import collections
import io
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command
from django.db import connection

from registry.extracts import ExtractRefused, decode
from registry.models import (
    AdverseEvent,
    Cycle,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    ImportBatch,
    LabResult,
    Patient,
    SiteTerm,
    TreatmentLine,
)
from registry.services import imports
from registry.services.clinical import followup_summary_refresh
from registry.services.imports import batch_create, extract_import
from registry.services.mapping import term_mark_unmappable
from registry.services.mapping_files import mappings_import
from registry.services.organisation import site_upsert
from registry.synth import generator as g

pytestmark = pytest.mark.usefixtures("vocabulary")

PATIENTS = "patient_no,sex,birth_year,department,consent_scope\nH001,F,1960,肿瘤内科,academic\n"
DIAGNOSES = "patient_no,diagnosis_date,cancer,stage_group,ecog\nH001,2024-03-05,肺癌,IVA,1\n"
REGIMENS = "patient_no,line_no,regimen,intent,start_date\nH001,1,PP,palliative,2024/3/15\n"
CYCLES = "patient_no,line_no,cycle_no,start_date\nH001,1,1,20240315\nH001,1,2,2024年4月5日\n"
DRUGS = ("patient_no,line_no,cycle_no,day,drug,dose,dose_unit,route,purpose\n"
         "H001,1,1,1,顺铂,75,mg/m2,iv,antineoplastic\nH001,1,2,1,DDP,75,mg/m2,静脉,antineoplastic\n")
AES = ("patient_no,term,grade,onset_date,serious,line_no,cycle_no\n"
       "H001,恶心,2级,2024-03-17,N,1,1\nH001,呕吐,III度,2024-04-07,是,1,2\n")
LABS = ("patient_no,collected_date,test,value,unit,line_no,cycle_no\n"
        "H001,2024-03-25,ANC,800,/mm3,1,1\nH001,2024-04-15,ANC,<0.5,10^9/L,1,2\n")
FOLLOWUPS = "patient_no,followup_date,vital_status,progression\nH001,2024-09-01,存活,N\n"

GOOD = {"patients.csv": PATIENTS, "diagnoses.csv": DIAGNOSES, "regimens.csv": REGIMENS,
        "cycles.csv": CYCLES, "drugs.csv": DRUGS, "adverse_events.csv": AES, "labs.csv": LABS,
        "followups.csv": FOLLOWUPS}


def write(folder: Path, files: dict, encoding="utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        data = text if isinstance(text, bytes) else text.encode(encoding)
        (folder / name).write_bytes(data)
    return folder


def run(site, path, user=None, **kwargs):
    return extract_import(batch_create(site=site, path=path, acting_user=user, **kwargs))


def clinical_counts():
    return [m.objects.count() for m in (Patient, Diagnosis, TreatmentLine, Cycle,
                                         DrugAdministration, AdverseEvent, LabResult, FollowUp)]


def test_a_small_extract_imports_with_every_format_variant(tmp_path, site_a, alice):
    batch = run(site_a, write(tmp_path / "x", GOOD), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors or batch.unmapped
    assert clinical_counts() == [1, 1, 1, 2, 2, 2, 2, 1]
    drugs = DrugAdministration.objects.order_by("cycle__cycle_no")
    assert [d.drug.code for d in drugs] == ["L01XA01", "L01XA01"]
    assert drugs[1].route == "iv"
    ae = AdverseEvent.objects.get(ae__code="Vomiting")
    assert (ae.grade, ae.serious, ae.import_batch) == (3, True, batch)
    lab = LabResult.objects.get(collected_date="2024-03-25")
    assert lab.value_canonical == pytest.approx(0.8)
    censored = LabResult.objects.get(collected_date="2024-04-15")
    assert (censored.comparator, censored.value, censored.value_text) == ("<", 0.5, "<0.5")
    assert batch.files["patients.csv"]["sha256"] and batch.files["labs.csv"]["rows"] == 2
    assert batch.counts["drugs"] == {"created": 2, "updated": 0, "unchanged": 0}
    assert ae.history.first().history_change_reason.startswith(f"import {batch.pk}")
    assert ae.history.first().history_user == alice


@pytest.mark.parametrize("chunk", [50_000, 1])
def test_reimport_changes_nothing_and_a_correction_updates_one_row(tmp_path, site_a, alice,
                                                                   monkeypatch, chunk):
    # chunk 1: every row is turned into a dict and written in a COPY of its own.
    monkeypatch.setattr(imports, "CHUNK_ROWS", chunk)
    first = run(site_a, write(tmp_path / "a", GOOD), alice)
    assert clinical_counts() == [1, 1, 1, 2, 2, 2, 2, 1]
    assert first.counts["labs"] == {"created": 2, "updated": 0, "unchanged": 0}
    assert set(LabResult.objects.values_list("import_batch", flat=True)) == {first.pk}
    history = AdverseEvent.history.count()
    again = run(site_a, write(tmp_path / "b", GOOD), alice)
    assert again.status == ImportBatch.Status.IMPORTED
    assert all(c["created"] == 0 and c["updated"] == 0 for c in again.counts.values())
    assert AdverseEvent.history.count() == history
    corrected = dict(GOOD, **{"adverse_events.csv": AES.replace("恶心,2级", "恶心,3级")})
    fix = run(site_a, write(tmp_path / "c", corrected), alice)
    assert fix.counts["adverse_events"] == {"created": 0, "updated": 1, "unchanged": 1}
    nausea = AdverseEvent.objects.get(ae__code="Nausea")
    assert nausea.grade == 3 and nausea.import_batch == fix
    assert nausea.history.first().history_change_reason.startswith(f"import {fix.pk}")


def test_unmapped_words_stop_the_import_until_mapped(tmp_path, site_a, alice, mona, capsys):
    folder = write(tmp_path / "x", dict(GOOD, **{"drugs.csv": DRUGS.replace("DDP", "本院化疗药A")}))
    with pytest.raises(SystemExit) as exit_:
        call_command("import_extract", str(folder), "--site", "SITE-A")
    assert exit_.value.code == 3
    out = capsys.readouterr().out
    assert "needs mapping: drug '本院化疗药A'" in out
    assert clinical_counts() == [0] * 8
    batch = ImportBatch.objects.get()
    mapping_file = tmp_path / "map.csv"
    mapping_file.write_text("domain,local_term,vocabulary,code\ndrug,本院化疗药A,ATC,L01XA02\n",
                            encoding="utf-8")
    # A mapping file decides what words mean: the site's monitor loads it, not a clerk.
    mappings_import(site=site_a, path=mapping_file, acting_user=mona)
    call_command("import_extract", "--resume", str(batch.pk))
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.IMPORTED
    assert DrugAdministration.objects.filter(drug__code="L01XA02").count() == 1


def test_a_word_marked_not_mappable_is_imported_as_written(tmp_path, site_a, alice, mona):
    own_regimen = REGIMENS.replace("PP", "本院方案7")
    folder = write(tmp_path / "x", dict(GOOD, **{"regimens.csv": own_regimen}))
    batch = run(site_a, folder, alice)
    assert batch.status == ImportBatch.Status.NEEDS_MAPPING
    assert [w["text"] for w in batch.unmapped] == ["本院方案7"]
    term = SiteTerm.objects.get(site=site_a, domain="regimen", text="本院方案7")
    term_mark_unmappable(term=term, acting_user=mona, reason="hospital's own regimen")
    call_command("import_extract", "--resume", str(batch.pk))
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.IMPORTED and batch.unmapped == []
    line = TreatmentLine.objects.get()
    assert (line.regimen_term, line.regimen) == (term, None)


def test_words_waiting_in_an_import_lead_the_review_queue_with_their_rows(
        tmp_path, client, site_a, alice, mona):
    # Three drug rows of one unknown word, one lab row of another: the queue counts the rows
    # that wait for each word (none is stored yet) and shows where they are in the extract.
    drugs = DRUGS.replace("顺铂", "本院化疗药A").replace("DDP", "本院化疗药A") + \
        "H001,1,2,8,本院化疗药A,75,mg/m2,iv,antineoplastic\n"
    labs = LABS.replace("ANC,<0.5", "本院检验B,<0.5")
    batch = run(site_a, write(tmp_path / "x", dict(GOOD, **{"drugs.csv": drugs,
                                                          "labs.csv": labs})), alice)
    assert batch.status == ImportBatch.Status.NEEDS_MAPPING
    by_word = {w["text"]: w for w in batch.unmapped}
    assert by_word["本院化疗药A"]["rows"] == 3
    assert [(s["file"], s["row"]) for s in by_word["本院化疗药A"]["samples"]] == [
        ("drugs.csv", 2), ("drugs.csv", 3), ("drugs.csv", 4)]
    assert "H001" not in str(batch.unmapped)  # the hospital's number is never kept in clear
    frequency = dict(SiteTerm.objects.filter(site=site_a, text__startswith="本院")
                     .values_list("text", "frequency"))
    assert frequency == {"本院化疗药A": 3, "本院检验B": 1}
    client.force_login(mona)
    page = client.get("/mapping/").text
    assert page.index("本院化疗药A") < page.index("本院检验B")
    assert f"#{batch.pk} · labs.csv row 3" in page


@pytest.mark.parametrize(("change", "message"), [
    ({"patients.csv": PATIENTS.replace("sex,", "gender,")}, "unknown column 'gender'"),
    ({"cycles.csv": "patient_no,line_no,start_date\nH001,1,2024-03-15\n"},
     "required column 'cycle_no' is missing"),
    ({"cycles.csv": CYCLES + "H001,1,2,2024-04-06\n"}, "duplicate natural key"),
    ({"diagnoses.csv": DIAGNOSES.replace("2024-03-05", "2024-13-45")}, "not a date"),
    ({"diagnoses.csv": DIAGNOSES.replace("2024-03-05", "2099-03-05")}, "in the future"),
    ({"drugs.csv": DRUGS.replace(",75,mg/m2,iv", ",-75,mg/m2,iv")}, "must be positive"),
    ({"adverse_events.csv": AES.replace("2级", "6")}, "CTCAE grades are 1-5"),
    ({"adverse_events.csv": AES.replace("恶心,2级", "恶心,4")}, "Grade 4 is not defined"),
    ({"labs.csv": LABS.replace(",800,", ",abc,")}, "not a number"),
    ({"followups.csv": FOLLOWUPS + "H999,2024-09-01,alive,N\n"}, "no such patient"),
    ({"drugs.csv": DRUGS.replace("H001,1,2,1,DDP", "H001,1,7,1,DDP")}, "no such cycle"),
    ({"labs.csv": ""}, "is empty"),
    ({"notes.csv": "x\n1\n"}, "unknown file"),
])
def test_bad_input_is_refused_whole_with_a_clear_report(tmp_path, site_a, alice, change,
                                                        message):
    batch = run(site_a, write(tmp_path / "x", dict(GOOD, **change)), alice)
    assert batch.status == ImportBatch.Status.FAILED
    assert any(message in e["message"] for e in batch.errors), batch.errors
    assert all({"file", "row", "column", "value", "message"} <= set(e) for e in batch.errors)
    assert clinical_counts() == [0] * 8


def test_error_report_lists_every_error_and_exits_2(tmp_path, site_a, capsys):
    bad = dict(GOOD, **{"labs.csv": LABS.replace(",800,", ",abc,").replace("<0.5", "xyz")})
    with pytest.raises(SystemExit) as exit_:
        call_command("import_extract", str(write(tmp_path / "x", bad)), "--site", "SITE-A",
                     "--report", str(tmp_path / "report.csv"))
    assert exit_.value.code == 2
    report = pd.read_csv(tmp_path / "report.csv", encoding="utf-8-sig")
    assert list(report["row"]) == [2, 3] and set(report["column"]) == {"value"}


def test_encodings_bom_gb18030_and_mixed(tmp_path, site_a, alice):
    gbk = run(site_a, write(tmp_path / "gbk", GOOD, encoding="gb18030"), alice)
    assert gbk.status == ImportBatch.Status.IMPORTED
    assert gbk.files["drugs.csv"]["encoding"] == "gb18030"
    bom = {k: b"\xef\xbb\xbf" + v.encode() for k, v in GOOD.items()}
    assert run(site_a, write(tmp_path / "bom", bom), alice).status == ImportBatch.Status.IMPORTED
    mixed = dict(GOOD, **{"drugs.csv": DRUGS.split("\n", 2)[0].encode() + b"\n"
                          + DRUGS.split("\n")[1].encode("utf-8") + b"\n"
                          + DRUGS.split("\n")[2].encode("gb18030") + b"\n"})
    batch = run(site_a, write(tmp_path / "mixed", mixed), alice)
    assert batch.status == ImportBatch.Status.FAILED
    assert "mixed encodings" in batch.errors[0]["message"]


def test_gb18030_that_happens_to_be_valid_utf8_is_not_called_mixed():
    # 药 in GB18030 is D2 A9, which is also UTF-8 for the Cyrillic ҩ: a whole site's regimen
    # file can be such lines, and it is still one encoding.
    content = ("patient_no,line_no,regimen\n" + "H1,1,K药+PC\n" * 30
               + "H2,1,顺铂\n").encode("gb18030")
    text, encoding = decode("regimens.csv", content)
    assert encoding == "gb18030" and text.count("K药+PC") == 30
    mixed = content + ("H3,1,紫杉醇\n" * 10).encode()
    with pytest.raises(ExtractRefused, match="mixed encodings"):
        decode("regimens.csv", mixed)
    # 稹啊 in GB18030 is F0 A1 B0 A1, also UTF-8 for U+21C21 (CJK extension B): no clinical
    # text has it, so the line is not taken for UTF-8.
    rare = ("patient_no,line_no,regimen\n" + "H1,1,顺铂\n" * 12 + "H2,1,稹啊\n").encode("gb18030")
    assert decode("regimens.csv", rare) == (rare.decode("gb18030"), "gb18030")
    with pytest.raises(ExtractRefused, match="1 line.s. are UTF-8: line 15"):
        decode("regimens.csv", rare + "H3,1,β2-微球蛋白 ×2\n".encode())


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_extract_traversal_and_bomb(tmp_path, site_a, alice):
    ok = run(site_a, _zip(tmp_path / "ok.zip", GOOD), alice)
    assert ok.status == ImportBatch.Status.IMPORTED
    evil = run(site_a, _zip(tmp_path / "evil.zip", {"../patients.csv": PATIENTS}), alice)
    assert evil.status == "failed" and "path traversal" in evil.errors[0]["message"]
    bomb = run(site_a, _zip(tmp_path / "bomb.zip", {"labs.csv": b"0" * (30 << 20)}), alice)
    assert bomb.status == "failed" and "zip bomb" in bomb.errors[0]["message"]


def test_oversized_file_is_refused(tmp_path, site_a, alice, settings):
    settings.IMPORT_MAX_FILE_BYTES = 100  # stands for the 1 GiB limit
    batch = run(site_a, write(tmp_path / "x", GOOD), alice)
    assert batch.status == "failed" and "are refused" in batch.errors[0]["message"]


def test_formula_text_is_stored_as_text(tmp_path, site_a, alice):
    files = dict(GOOD, **{"followups.csv": "patient_no,followup_date,vital_status,cause_of_death"
                                           "\nH001,2024-09-01,死亡,=cmd|' /C calc'!A0\n"})
    run(site_a, write(tmp_path / "x", files), alice)
    assert FollowUp.objects.get().cause_of_death == "=cmd|' /C calc'!A0"


@pytest.mark.parametrize("text", ["\\N", "a\\Nb\\", "tab\there", "two\nlines", "\"quoted\"", ""])
def test_free_text_survives_the_copy_path_exactly(tmp_path, site_a, alice, text):
    # COPY's text format: a literal \N must not become NULL, nor a tab or newline split a row.
    cell = '"' + text.replace('"', '""') + '"'
    files = dict(GOOD, **{"followups.csv": "patient_no,followup_date,vital_status,cause_of_death"
                                           f"\nH001,2024-09-01,死亡,{cell}\n"})
    batch = run(site_a, write(tmp_path / "x", files), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    followup = FollowUp.objects.get()
    assert followup.cause_of_death == text
    assert followup.history.get().cause_of_death == text
    assert followup.history.get().history_user == alice


def test_the_same_key_written_two_ways_is_refused_and_nothing_written(tmp_path, site_a, alice):
    # Different text, same meaning once parsed: one adverse event listed twice.
    aes = AES + "H001,恶心,1级,2024/3/17,N,1,1\n"
    batch = run(site_a, write(tmp_path / "x", dict(GOOD, **{"adverse_events.csv": aes})), alice)
    assert batch.status == ImportBatch.Status.FAILED
    assert [(e["file"], e["row"]) for e in batch.errors] == [("adverse_events.csv", 4)]
    assert "repeats the key of row 2 once read" in batch.errors[0]["message"]
    assert clinical_counts() == [0] * 8


def test_xlsx_files_are_read(tmp_path, site_a, alice):
    folder = write(tmp_path / "x", {k: v for k, v in GOOD.items() if k != "patients.csv"})
    frame = pd.read_csv(io.StringIO(PATIENTS), dtype=str)
    frame.to_excel(folder / "patients.xlsx", index=False)
    assert run(site_a, folder, alice).status == ImportBatch.Status.IMPORTED


def test_dry_run_writes_nothing(tmp_path, site_a, alice):
    batch = run(site_a, write(tmp_path / "x", GOOD), alice, dry_run=True)
    assert batch.status in (ImportBatch.Status.CHECKED, ImportBatch.Status.NEEDS_MAPPING)
    assert clinical_counts() == [0] * 8


def test_the_synthetic_cohort_round_trips_through_its_extracts(tmp_path, ada):
    call_command("seed_demo", "--patients", "60", "--sites", "2", "--seed", "12",
                 "--as-extracts", str(tmp_path / "out"))
    for spec in g.plan_sites(n_sites=2, n_patients=60, seed=12):
        cohort = g.generate_site(spec)
        site, _ = site_upsert(code=spec.code, name=spec.name, acting_user=None)
        batch = run(site, tmp_path / "out" / spec.code, ada)
        if batch.status == ImportBatch.Status.NEEDS_MAPPING:
            mapping = tmp_path / f"{spec.code}.csv"
            cohort.terms[["domain", "text", "vocabulary", "code"]].rename(
                columns={"text": "local_term"}).to_csv(mapping, index=False)
            mappings_import(site=site, path=mapping, acting_user=ada)
            batch = extract_import(batch)
        assert batch.status == ImportBatch.Status.IMPORTED, (
            [e["message"] for e in batch.errors[:3]] or batch.unmapped)
        counts = cohort.row_counts()
        assert Patient.objects.filter(site=site).count() == counts["patients"]
        assert Cycle.objects.filter(site=site).count() == counts["cycles"]
        assert LabResult.objects.filter(site=site).count() == counts["labs"]
        assert AdverseEvent.objects.filter(site=site).count() == counts["adverse_events"]
        imported = collections.Counter(DrugAdministration.objects.filter(site=site)
                                       .values_list("drug__code", flat=True))
        assert imported == collections.Counter(cohort.drugs["drug_code"])
        grades = collections.Counter(AdverseEvent.objects.filter(site=site)
                                     .values_list("ae__code", "grade"))
        assert grades == collections.Counter(zip(cohort.adverse_events["term_code"],
                                                 cohort.adverse_events["grade"], strict=True))
        canonical = sorted(LabResult.objects.filter(site=site)
                           .values_list("value_canonical", flat=True))
        assert canonical == pytest.approx(sorted(cohort.labs["value_canonical"]), rel=1e-6)
        summary = list(Patient.objects.filter(site=site).order_by("pk").values_list(
            "last_followup_date", "followup_closed"))
        assert sum(1 for d, _ in summary if d) > len(summary) // 2
        followup_summary_refresh()
        assert summary == list(Patient.objects.filter(site=site).order_by("pk").values_list(
            "last_followup_date", "followup_closed"))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_of_two_sites_do_not_block_each_other(tmp_path, site_a, site_b,
                                                                 alice, bob):
    folders = {s: write(tmp_path / s.code, GOOD) for s in (site_a, site_b)}
    results, errors = {}, []

    def work(site, user):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '5s'")
            results[site.code] = run(site, folders[site], user).status
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=args) for args in ((site_a, alice),
                                                                      (site_b, bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == {"SITE-A": "imported", "SITE-B": "imported"}


def test_upload_page_imports_and_shows_progress(client, tmp_path, settings, site_a, alice,
                                                bob, django_capture_on_commit_callbacks):
    settings.IMPORT_UPLOAD_DIR = tmp_path / "uploads"
    archive = _zip(tmp_path / "extract.zip", GOOD)
    client.force_login(alice)
    assert "SITE-A" in client.get("/imports/").text
    with django_capture_on_commit_callbacks(execute=True), open(archive, "rb") as handle:
        response = client.post("/imports/", {"site": "SITE-A", "extract": handle})
    batch = ImportBatch.objects.get()
    assert response.url == f"/imports/{batch.pk}/"
    status = client.get(f"/imports/{batch.pk}/", {"format": "json"}).json()
    assert (status["status"], status["progress"]) == ("imported", 100)
    page = client.get(f"/imports/{batch.pk}/")
    assert "drugs" in page.text and batch.uploaded_by == alice
    client.force_login(bob)
    assert client.get(f"/imports/{batch.pk}/").status_code == 404
    with open(archive, "rb") as handle:
        refused = client.post("/imports/", {"site": "SITE-A", "extract": handle})
    assert refused.status_code == 200 and ImportBatch.objects.count() == 1


def test_upload_errors_and_resume(client, tmp_path, settings, site_a, alice, mona,
                                  django_capture_on_commit_callbacks):
    settings.IMPORT_UPLOAD_DIR = tmp_path / "uploads"
    archive = _zip(tmp_path / "x.zip", dict(GOOD, **{"drugs.csv": DRUGS.replace("DDP", "自拟药")}))
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True), open(archive, "rb") as handle:
        client.post("/imports/", {"site": "SITE-A", "extract": handle})
    batch = ImportBatch.objects.get()
    assert batch.status == "needs_mapping"
    assert "自拟药" in client.get(f"/imports/{batch.pk}/").text
    mapping_file = tmp_path / "m.csv"
    mapping_file.write_text("domain,local_term,vocabulary,code\ndrug,自拟药,ATC,L01CB01\n",
                            encoding="utf-8")
    # A mapping file decides what words mean: the site's monitor loads it, not a clerk.
    mappings_import(site=site_a, path=mapping_file, acting_user=mona)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/imports/{batch.pk}/resume")
    batch.refresh_from_db()
    assert batch.status == "imported"
    bad = _zip(tmp_path / "bad.zip", dict(GOOD, **{"labs.csv": LABS.replace("800", "abc")}))
    with django_capture_on_commit_callbacks(execute=True), open(bad, "rb") as handle:
        client.post("/imports/", {"site": "SITE-A", "extract": handle})
    failed = ImportBatch.objects.latest("pk")
    assert failed.status == "failed"
    report = client.get(f"/imports/{failed.pk}/", {"format": "csv"})
    assert "not a number" in report.content.decode("utf-8-sig")
