"""Uploads that cannot hurt the server or lose a file: each finding of the upload probe, over
HTTP through the upload page, with the batch's status, its reason and the database checked."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from registry.extracts import ExtractRefused, open_extract
from registry.models import Department, ImportBatch, Patient
from registry.services.imports import batch_upload, import_uploads_purge
from tests.registry.test_imports import DRUGS, GOOD, PATIENTS, clinical_counts

pytestmark = pytest.mark.usefixtures("vocabulary")

MIB = 1 << 20


@pytest.fixture
def uploads(settings, tmp_path) -> Path:
    settings.IMPORT_UPLOAD_DIR = tmp_path / "uploads"
    return settings.IMPORT_UPLOAD_DIR


def stored(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def zipped(members: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data if isinstance(data, bytes) else data.encode())
    return buffer.getvalue()


def post(client, name: str, content: bytes, capture=None):
    upload = SimpleUploadedFile(name, content)
    if capture is None:
        return client.post("/imports/", {"site": "SITE-A", "extract": upload})
    with capture(execute=True):
        return client.post("/imports/", {"site": "SITE-A", "extract": upload})


def refused(client, response, *, message: str) -> ImportBatch:
    """The upload ended in a failed batch whose page names the problem; nothing written."""
    batch = ImportBatch.objects.get()
    assert response.status_code == 302 and response.url == f"/imports/{batch.pk}/"
    assert batch.status == ImportBatch.Status.FAILED
    assert any(message in e["message"] for e in batch.errors), batch.errors
    assert message in client.get(response.url).text
    assert clinical_counts() == [0] * 8
    return batch


# -- findings ----------------------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_single_csv_upload_imports_and_its_file_is_deleted(client, uploads, site_a, alice):
    # Was stored as <uuid>-patients.csv, then refused as an unknown file.
    client.force_login(alice)
    response = post(client, "patients.csv", PATIENTS.encode())
    batch = ImportBatch.objects.get()
    assert response.status_code == 302
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert batch.source_name == "patients.csv" and list(batch.files) == ["patients.csv"]
    assert Patient.objects.filter(import_batch=batch).count() == 1
    assert batch.upload.name == "" and stored(uploads) == []


def test_a_zip_with_a_bad_crc_fails_with_its_reason(client, uploads, site_a, alice,
                                                    django_capture_on_commit_callbacks):
    # Was a 500, the batch left running for ever.
    data = bytearray(zipped(GOOD, compression=zipfile.ZIP_STORED))
    at = data.index(b"H001,1,1,1,")  # a byte of drugs.csv's content, stored as is
    data[at] = ord("X")
    client.force_login(alice)
    response = post(client, "extract.zip", bytes(data), django_capture_on_commit_callbacks)
    batch = refused(client, response, message="drugs.csv is damaged inside the zip")
    assert batch.finished_at is not None and stored(uploads) == []


@pytest.mark.parametrize("length", [114, 255])
def test_a_long_file_name_imports(client, uploads, site_a, alice, length,
                                  django_capture_on_commit_callbacks):
    # 114 characters was a 500: the stored path, and the reason written with the name.
    name = ("肿瘤科导出" * 60)[:length - 4] + ".zip"
    client.force_login(alice)
    response = post(client, name, zipped(GOOD), django_capture_on_commit_callbacks)
    batch = ImportBatch.objects.get()
    assert response.status_code == 302
    assert (batch.status, batch.source_name) == (ImportBatch.Status.IMPORTED, name)
    assert clinical_counts() == [1, 1, 1, 2, 2, 2, 2, 1]


def test_a_file_name_longer_than_the_column_is_shortened_keeping_its_kind(
        client, uploads, site_a, alice, django_capture_on_commit_callbacks):
    client.force_login(alice)
    response = post(client, "x" * 300 + ".zip", zipped(GOOD), django_capture_on_commit_callbacks)
    batch = ImportBatch.objects.get()
    assert response.status_code == 302 and batch.status == ImportBatch.Status.IMPORTED
    assert batch.source_name == "x" * 251 + ".zip"


def test_many_small_members_that_expand_far_are_refused_before_any_is_read(
        client, uploads, site_a, alice, django_capture_on_commit_callbacks):
    # 8 members of 10 MiB each from a zip of some 80 KiB: members of 10 MiB or less escaped
    # the ratio check, and the request held everything they expand to.
    bomb = zipped({name: b"0" * (10 * MIB) for name in GOOD})
    assert len(bomb) < 200 * 1024
    client.force_login(alice)
    tracemalloc.start()
    try:
        response = post(client, "bomb.zip", bomb, django_capture_on_commit_callbacks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    batch = refused(client, response, message="refused as a zip bomb")
    assert "x (at most 100x)" in batch.errors[0]["message"]
    assert peak < 8 * MIB, f"the request held {peak:,} bytes"
    assert stored(uploads) == []


def _lying_zip(content: bytes, claimed: int) -> bytes:
    """A zip whose one member claims (in both headers) to expand to `claimed` bytes."""
    data = bytearray(zipped({"labs.csv": content}))
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, claimed)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, claimed)
    return bytes(data)


def test_a_member_that_expands_beyond_its_entry_is_cut_off_and_refused(
        client, uploads, site_a, alice, django_capture_on_commit_callbacks):
    lying = _lying_zip(b"patient_no\n" + b"H001\n" * (2 * MIB), claimed=1000)
    client.force_login(alice)
    tracemalloc.start()
    try:
        response = post(client, "lying.zip", lying, django_capture_on_commit_callbacks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    refused(client, response, message="labs.csv is damaged inside the zip")
    assert peak < 8 * MIB, f"the request held {peak:,} bytes"


def test_too_many_members_are_refused_from_the_directory(tmp_path, settings):
    settings.IMPORT_MAX_MEMBERS = 3
    path = tmp_path / "many.zip"
    path.write_bytes(zipped({f"{i}/notes.txt": b"x" for i in range(4)}))
    with pytest.raises(ExtractRefused, match="holds 4 entries; an extract has at most 3"):
        open_extract(path)


def test_the_expanded_total_is_checked_from_the_directory(tmp_path, settings):
    settings.IMPORT_MAX_TOTAL_BYTES = 1000
    path = tmp_path / "big.zip"
    path.write_bytes(zipped({"patients.csv": PATIENTS * 5, "drugs.csv": DRUGS * 5}))
    with pytest.raises(ExtractRefused, match="unpacks to more than 1,000 bytes"):
        open_extract(path)


def test_a_single_csv_over_the_file_limit_is_refused_at_the_field(client, uploads, settings,
                                                                  site_a, alice):
    # A folder's file was refused by size; a single uploaded .csv was read whole.
    settings.IMPORT_MAX_FILE_BYTES = 40
    client.force_login(alice)
    response = post(client, "patients.csv", PATIENTS.encode())
    assert response.status_code == 200
    assert f"The file is {len(PATIENTS.encode()):,} bytes; at most 40 are accepted." \
        in response.text
    assert ImportBatch.objects.count() == 0 and stored(uploads) == []


def test_a_single_csv_is_read_within_the_file_limit(tmp_path, settings):
    settings.IMPORT_MAX_FILE_BYTES = 40
    path = tmp_path / "patients.csv"
    path.write_bytes(PATIENTS.encode())
    with pytest.raises(ExtractRefused, match="patients.csv is larger than 40 bytes"):
        open_extract(path)
    with open(path, "rb") as handle, pytest.raises(ExtractRefused, match="larger than 40"):
        open_extract(handle, name="patients.csv")


def test_the_service_refuses_a_single_file_over_the_limit(uploads, settings, site_a, alice):
    settings.IMPORT_MAX_FILE_BYTES = 40
    upload = SimpleUploadedFile("patients.csv", PATIENTS.encode())
    with pytest.raises(Exception, match="at most 40 are accepted"):
        batch_upload(site=site_a, upload=upload, acting_user=alice)
    assert ImportBatch.objects.count() == 0 and stored(uploads) == []


def test_two_files_of_one_table_in_a_zip_are_refused_by_name(
        client, uploads, site_a, alice, django_capture_on_commit_callbacks):
    # a/patients.csv and b/patients.csv: one was silently dropped.
    members = dict(GOOD, **{"a/patients.csv": PATIENTS,
                            "b/patients.csv": PATIENTS.replace("H001", "H002")})
    del members["patients.csv"]
    client.force_login(alice)
    response = post(client, "two.zip", zipped(members), django_capture_on_commit_callbacks)
    refused(client, response, message="a/patients.csv and b/patients.csv are both patients")
    assert stored(uploads) == []


def test_gb18030_lines_with_one_utf8_line_are_refused_as_mixed(
        client, uploads, site_a, alice, django_capture_on_commit_callbacks):
    # 12 GB18030 lines and one UTF-8 line were imported, the department stored as mojibake.
    header = b"patient_no,sex,birth_year,department,consent_scope\n"
    lines = b"".join(f"H{n:03d},F,1960,肿瘤内科,academic\n".encode("gb18030")
                     for n in range(12))
    content = header + lines + "H999,M,1970,胸外科,academic\n".encode()
    client.force_login(alice)
    response = post(client, "patients.csv", content, django_capture_on_commit_callbacks)
    refused(client, response, message="mixed encodings (1 line(s) are UTF-8: line 14")
    assert Department.objects.count() == 0


def test_macos_archive_entries_are_skipped(tmp_path, site_a, alice):
    path = tmp_path / "mac.zip"
    path.write_bytes(zipped(dict(GOOD, **{"__MACOSX/._patients.csv": b"\x00\x05",
                                          ".DS_Store": b"\x00"})))
    assert sorted(open_extract(path)) == sorted(name[:-4] for name in GOOD)


# -- keeping and purging uploads -------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_needing_mapping_keeps_its_file_until_it_is_resumed(client, uploads, site_a,
                                                                    alice, mona):
    drugs = DRUGS.replace("DDP", "自拟药")
    client.force_login(alice)
    post(client, "x.zip", zipped(dict(GOOD, **{"drugs.csv": drugs})))
    batch = ImportBatch.objects.get()
    assert batch.status == ImportBatch.Status.NEEDS_MAPPING
    assert stored(uploads) == [Path(batch.upload.name).name]
    from registry.models import SiteTerm
    from registry.services.mapping import term_mark_unmappable

    term_mark_unmappable(term=SiteTerm.objects.get(site=site_a, text="自拟药"), acting_user=mona,
                         reason="hospital's own")
    response = client.post(f"/imports/{batch.pk}/resume")
    assert response.status_code == 302
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert stored(uploads) == [] and batch.upload.name == ""
    # The resume is one audited status change (it was a bare update with no history row).
    resumed = batch.history.filter(history_change_reason=f"import {batch.pk}: resumed").get()
    assert (resumed.status, resumed.history_user) == (ImportBatch.Status.RECEIVED, alice)
    # Nothing left to resume from: the button is gone and a resume is refused, not a 500.
    assert 'id="resume"' not in client.get(f"/imports/{batch.pk}/").text
    again = client.post(f"/imports/{batch.pk}/resume", follow=True)
    assert again.status_code == 200 and "only an import that needs mapping" in again.text
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.IMPORTED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_site_keeps_uploads_for_its_days_then_they_are_purged(client, uploads, site_a,
                                                                alice):
    site_a.keep_uploads_days = 3
    site_a.save()
    client.force_login(alice)
    post(client, "extract.zip", zipped(GOOD))
    post(client, "bad.zip", zipped(dict(GOOD, **{"labs.csv": "x\n1\n"})))
    imported, failed = ImportBatch.objects.order_by("pk")
    assert (imported.status, failed.status) == ("imported", "failed")
    assert len(stored(uploads)) == 2
    assert import_uploads_purge() == 0
    ImportBatch.objects.filter(pk=failed.pk).update(
        finished_at=timezone.now() - timedelta(days=3, minutes=1))
    assert import_uploads_purge() == 1
    assert stored(uploads) == [Path(imported.upload.name).name]
    failed.refresh_from_db()
    assert failed.upload.name == ""
    purged = failed.history.first()
    assert (purged.history_change_reason, purged.history_user) == (
        f"import {failed.pk}: upload purged", alice)


def test_the_import_page_polls_from_a_static_script(client, uploads, site_a, alice):
    batch = batch_upload(site=site_a, upload=SimpleUploadedFile("patients.csv",
                                                                PATIENTS.encode()),
                         acting_user=alice)
    client.force_login(alice)
    page = client.get(f"/imports/{batch.pk}/").text
    assert "<script>" not in page and " on" + "click=" not in page
    assert 'src="/static/registry/import_detail.js" defer' in page
    assert f'data-status-url="/imports/{batch.pk}/?format=json"' in page
    script = (Path(__file__).resolve().parents[2] / "static" / "registry" / "import_detail.js")
    assert "dataset.statusUrl" in script.read_text(encoding="utf-8")


# -- audit -----------------------------------------------------------------------------------

def test_a_department_an_import_creates_has_its_user_and_reason(client, uploads, site_a, alice,
                                                                django_capture_on_commit_callbacks):
    client.force_login(alice)
    post(client, "extract.zip", zipped(GOOD), django_capture_on_commit_callbacks)
    batch = ImportBatch.objects.get()
    assert batch.status == ImportBatch.Status.IMPORTED
    created = Department.objects.get(site=site_a, name="肿瘤内科").history.get()
    assert (created.history_user, created.history_change_reason) == (alice, f"import {batch.pk}")
    reasons = list(batch.history.order_by("history_id").values_list("history_change_reason",
                                                                    "history_user"))
    assert reasons == [("extract received", alice.pk),
                       (f"import {batch.pk}: started", alice.pk),
                       (f"import {batch.pk}: imported", alice.pk)]


def test_an_upload_larger_than_any_limit_is_refused_before_its_body_is_read(
        client, uploads, settings, site_a, alice):
    settings.IMPORT_MAX_FILE_BYTES = settings.IMPORT_MAX_TOTAL_BYTES = 1000
    client.force_login(alice)
    response = post(client, "patients.csv", PATIENTS.encode() + b"H1,F,1960,,\n" * 20_000)
    assert response.status_code == 200
    assert "The upload is " in response.text and "at most 1,000 are accepted" in response.text
    assert ImportBatch.objects.count() == 0 and stored(uploads) == []


@pytest.mark.postgres
def test_a_batch_another_process_runs_is_left_alone(uploads, site_a, alice):
    import psycopg
    from django.db import connection

    from registry.errors import ValidationFailed
    from registry.services.imports import IMPORT_LOCK, extract_import

    batch = batch_upload(site=site_a, upload=SimpleUploadedFile("patients.csv",
                                                                PATIENTS.encode()),
                         acting_user=alice)
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                         user=db["USER"], dbname=db["NAME"], autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [IMPORT_LOCK, batch.pk])
        with pytest.raises(ValidationFailed, match=f"Import {batch.pk} is running in another"):
            extract_import(batch)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.RECEIVED and clinical_counts() == [0] * 8
    assert extract_import(batch).status == ImportBatch.Status.IMPORTED  # the lock is free


def test_a_stored_file_no_batch_names_is_purged_once_a_day_old(uploads, site_a, alice):
    import os

    from django.core.files.base import ContentFile
    from django.core.files.storage import storages

    storage = storages["imports"]
    orphan = storage.save("0123.zip", ContentFile(b"x"))  # its web process died
    fresh = storage.save("4567.zip", ContentFile(b"x"))  # being uploaded now
    waiting = batch_upload(site=site_a, upload=SimpleUploadedFile("patients.csv",
                                                                  PATIENTS.encode()),
                           acting_user=alice)
    day_old = (timezone.now() - timedelta(days=1, minutes=1)).timestamp()
    for name in (orphan, waiting.upload.name):
        os.utime(storage.path(name), (day_old, day_old))
    assert import_uploads_purge() == 1
    assert stored(uploads) == sorted([fresh, waiting.upload.name])


def test_a_workbook_that_expands_beyond_the_file_limit_is_refused_unopened(tmp_path, settings):
    import pandas as pd

    from registry.extracts import read_file

    path = tmp_path / "patients.xlsx"
    pd.DataFrame({"patient_no": ["H001"] * 2000, "sex": ["F"] * 2000}).to_excel(path,
                                                                               index=False)
    content = path.read_bytes()
    assert len(read_file("patients", "patients.xlsx", content).raw) == 2000
    settings.IMPORT_MAX_FILE_BYTES = len(content) * 2  # the workbook fits, its XML does not
    with pytest.raises(ExtractRefused, match="patients.xlsx unpacks to .* bytes; files over"):
        read_file("patients", "patients.xlsx", content)
