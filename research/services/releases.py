"""Releases: the frozen, de-identified dataset an approved request produces, and its downloads.

A release reads the clinical record as it stood at its snapshot time (the bulk reader's
`as_of`), for the sites that opted in, streamed kind by kind in chunks (memory holds one chunk),
and writes CSV files in a zip and Parquet files, a codebook, a README and a k-anonymity report,
listed with their SHA-256 in a manifest. What it contains, by construction:

- only the approved variables: clinical ones, and quasi-identifiers the chair approved by name;
  direct identifiers never (the catalog refuses them in requests);
- only patients of opted-in sites, whose consent covers the purpose, not withdrawn (a
  withdrawal made after the snapshot still removes the patient), with submitted records
  matching the cohort criteria; draft records are left out;
- study pseudonyms keyed by the release's own key: two releases cannot be joined on id;
  treatment lines and cycles get release-local references the same way;
- dates as days from the patient's first diagnosis; ages as whole years at first diagnosis with
  90 and over as "90+"; the calendar year of diagnosis only when approved;
- every combination of the approved patient-level quasi-identifiers shared by at least k
  patients: generalised, and the rest suppressed, counted in the report.

Rebuilding a release reads the same snapshot with the same key and gives byte-identical files
(release_verify checks it), unless a patient has since withdrawn.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.http import Http404
from django.utils import timezone

from registry.audit import audited_save
from registry.biomarkers import format_biomarkers
from registry.errors import NotPermitted, ValidationFailed
from registry.kinds import KINDS
from registry.models import Concept, Department, Patient, Site
from registry.selectors.bulk import records_chunks, records_frame
from research import catalog
from research.limits import FILE_NAME_MAX_LENGTH
from research.models import (
    APPROVED_STATUSES,
    DataRequest,
    Decision,
    Download,
    Purpose,
    Release,
    ReleaseFile,
    SiteParticipation,
)
from research.notify import notify
from research.release import deid, kanon
from research.release.codebook import codebook_files
from research.release.files import ReleaseWriter
from research.selectors.cohort import RELEASED_STATUSES, cohort_mask
from research.selectors.requests import on_team
from research.storage import release_storage

log = logging.getLogger(__name__)

Progress = Callable[[int, str], None]

CSV_ZIP = "data-csv.zip"
# Rows per streamed chunk of a record kind (as COPY bytes). Memory holds about two chunks'
# frames (one being written, one read ahead): 8 MiB kept the build's growth near 400 MiB at
# 50,000 patients, against 1.1 GiB with 32 MiB, at the same speed.
CHUNK_BYTES = 8 << 20

# Columns pointing at a parent record, released as the parent's reference, and the kinds that
# have a reference of their own (other rows point at them).
_LINKS = {"line_id": ("line_ref", "treatmentline"), "cycle_id": ("cycle_ref", "cycle")}
_OWN_REF = {"treatmentline": "line_ref", "cycle": "cycle_ref"}
# How each patient-level quasi-identifier is generalised for k-anonymity.
_HIERARCHIES: dict[str, Callable[[], kanon.Hierarchy]] = {
    "age_at_diagnosis": kanon.age_hierarchy,
    "diagnosis_year": kanon.year_hierarchy,
    "sex": kanon.suppress_only,
    "site": kanon.suppress_only,
    "region": kanon.suppress_only,
    "site_tier": kanon.suppress_only,
    "department": kanon.suppress_only,
}


def _decision(request: DataRequest) -> Decision:
    decision = request.decisions.filter(revision=request.revision).first()
    if decision is None or request.status not in APPROVED_STATUSES:
        raise ValidationFailed(f"{request.reference} is not approved: no release can be built.")
    return decision


def _end_of(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min))


@transaction.atomic
def release_request(*, request: DataRequest, acting_user: User) -> Release:
    """Queue a release of an approved request (its requester or team). Refused before
    approval, after the access period, while no site has opted in, or while another release of
    the request is being built."""
    request = DataRequest.objects.select_for_update().get(pk=request.pk)
    if not on_team(acting_user, request):
        raise NotPermitted("Only the study's team requests its releases.")
    decision = _decision(request)
    if decision.access_until is None or decision.access_until < timezone.localdate():
        raise ValidationFailed(f"The access period of {request.reference} has ended.")
    if not request.participations.filter(answer=SiteParticipation.Answer.OPTED_IN).exists():
        raise ValidationFailed("No site has opted in yet: there is nothing to release.")
    if request.releases.filter(status__in=[Release.Status.QUEUED,
                                           Release.Status.BUILDING]).exists():
        raise ValidationFailed("A release of this request is already being built.")
    number = (request.releases.order_by("-number").values_list("number", flat=True).first()
              or 0) + 1
    release = Release(request=request, number=number, snapshot_at=timezone.now(),
                      key=secrets.token_hex(32), requested_by=acting_user,
                      expires_at=_end_of(decision.access_until))
    audited_save(release, acting_user=acting_user, reason="release requested")
    from research.tasks import release_build_task  # tasks import services, not the reverse

    transaction.on_commit(lambda: release_build_task.delay(release.pk))
    return release


def _progress_recorder(release_id: int) -> Progress:
    def record(pct: int, note: str) -> None:
        Release.objects.filter(pk=release_id).update(progress=max(0, min(100, pct)),
                                                     progress_note=note[:200])
    return record


def release_build(*, release_id: int, progress: Progress | None = None) -> Release:
    """Build (or rebuild) the release's files and record them; a failure is recorded on the
    release, its partial files removed, and re-raised."""
    release = Release.objects.select_related("request").get(pk=release_id)
    if release.status == Release.Status.EXPIRED:
        raise ValidationFailed(f"{release}: the access period has ended.")
    record = progress or _progress_recorder(release.pk)
    Release.objects.filter(pk=release.pk).update(status=Release.Status.BUILDING,
                                                 started_at=timezone.now(), error="")
    storage = release_storage()
    final = Path(storage.path(str(release.pk)))
    work = final.with_name(f"{release.pk}.building-{secrets.token_hex(4)}")
    try:
        summary = _build_into(release, work, record)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except Exception as problem:
        shutil.rmtree(work, ignore_errors=True)
        Release.objects.filter(pk=release.pk).update(status=Release.Status.FAILED,
                                                     error=str(problem)[:2000],
                                                     finished_at=timezone.now())
        raise
    with transaction.atomic():
        release = Release.objects.select_for_update().get(pk=release.pk)
        ReleaseFile.objects.filter(release=release).exclude(
            name__in=[f["name"] for f in summary["manifest"]["files"]]).delete()
        for entry in summary["manifest"]["files"]:
            ReleaseFile.objects.update_or_create(
                release=release, name=entry["name"],
                defaults={"bytes": entry["bytes"], "sha256": entry["sha256"],
                          "rows": entry.get("rows")})
        release.status = Release.Status.READY
        release.finished_at = timezone.now()
        release.patients = summary["patients"]
        release.manifest = summary["manifest"]
        release.k_report = summary["k_report"]
        release.progress, release.progress_note = 100, ""
        audited_save(release, acting_user=None, reason="release built")
        request = release.request
        notify([request.requester, *request.team.all()], f"{release} is ready",
               f"{release} of \"{request.title}\" is ready to download until "
               f"{timezone.localtime(release.expires_at):%Y-%m-%d}.")
    return release


def release_verify(*, release: Release) -> bool:
    """Rebuild the release into a scratch folder and compare its manifest with the stored one
    (byte-identical files have identical SHA-256)."""
    scratch = Path(release_storage().path(f"{release.pk}.verify-{secrets.token_hex(4)}"))
    try:
        summary = _build_into(release, scratch, lambda pct, note: None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary["manifest"] == release.manifest


# -- the build ---------------------------------------------------------------------------------


def selected_variables(request: DataRequest, decision: Decision) -> list[catalog.Variable]:
    approved_quasi = set(decision.approved_quasi_identifiers)
    known = catalog.by_name()
    out = []
    for name in request.variables:
        variable = known.get(name)
        if variable is None or variable.klass == catalog.DIRECT:
            continue
        if variable.klass == catalog.QUASI and name not in approved_quasi:
            continue
        out.append(variable)
    return out


class _Concepts:
    """Concept codes by id, read in one query before any kind is streamed (no other query may
    run on the connection while a COPY streams); remembers which were used, and reads their
    names for the codebook after the streaming ends."""

    def __init__(self) -> None:
        self.codes: dict[int, str] = dict(Concept.objects.values_list("pk", "code").iterator(
            chunk_size=50_000))
        self.used: set[int] = set()

    def codes_of(self, series: pd.Series) -> pd.Series:
        ids = series.astype("Int64")
        distinct = [int(i) for i in ids.dropna().unique()]
        self.used.update(distinct)
        codes = pd.Series({i: self.codes.get(i) for i in distinct}, dtype="string")
        return ids.map(codes).astype("string")

    def vocabularies(self) -> list[dict]:
        by_vocabulary: dict[str, dict[str, str]] = {}
        rows = Concept.objects.filter(pk__in=sorted(self.used)).values_list(
            "code", "name_en", "name_zh", "vocabulary__code")
        for code, en, zh, vocabulary in rows:
            by_vocabulary.setdefault(vocabulary, {})[code] = f"{en} / {zh}" if zh else en
        return [{"vocabulary": v, "concepts": [{"code": c, "name": n}
                                               for c, n in sorted(concepts.items())]}
                for v, concepts in sorted(by_vocabulary.items())]


def _column_type(variable: catalog.Variable) -> str:
    return variable.type


def _build_into(release: Release, folder: Path, progress: Progress) -> dict:
    request = release.request
    decision = _decision(request)
    variables = selected_variables(request, decision)
    site_ids = sorted(request.participations.filter(answer=SiteParticipation.Answer.OPTED_IN)
                      .values_list("site_id", flat=True))
    declined = sorted(request.participations.filter(answer=SiteParticipation.Answer.DECLINED)
                      .values_list("site__code", flat=True))
    as_of = release.snapshot_at
    key = bytes.fromhex(release.key)
    concepts = _Concepts()
    progress(2, "reading the cohort")

    patients, diagnoses, lines = (records_frame(kind, sites=site_ids, as_of=as_of,
                                                columns=columns)
                                  for kind, columns in COHORT_READS)
    withdrawn = set(Patient.objects.filter(site_id__in=site_ids, withdrawn_date__isnull=False)
                    .values_list("pk", flat=True))
    mask = cohort_mask(patients=patients, diagnoses=diagnoses, lines=lines,
                       concept_codes=concepts.codes,
                       criteria=request.criteria, purpose=request.purpose,
                       withdrawn=withdrawn)
    cohort = patients[mask].sort_values("id").reset_index(drop=True)
    cohort_ids = pd.Index(cohort["id"].astype("int64"))
    released_dx = diagnoses[diagnoses["status"].isin(RELEASED_STATUSES)]
    first_dx = released_dx.groupby("patient_id")["diagnosis_date"].min()
    study_ids = pd.Series(deid.pseudonyms(cohort["id"].astype(str), key).to_numpy(),
                          index=cohort_ids)
    index_dates = first_dx.reindex(cohort_ids)
    del patients, diagnoses, lines

    with ReleaseWriter(folder, csv_zip_name=CSV_ZIP) as writer:
        return _write_release(writer, release, decision, variables, site_ids, declined,
                              as_of=as_of, key=key, concepts=concepts, cohort=cohort,
                              study_ids=study_ids, index_dates=index_dates,
                              progress=progress)


def _write_release(writer: ReleaseWriter, release: Release, decision: Decision, variables,
                   site_ids, declined, *, as_of, key, concepts, cohort, study_ids,
                   index_dates, progress: Progress) -> dict:
    by_table: dict[str, list[catalog.Variable]] = {}
    for variable in variables:
        by_table.setdefault(variable.table, []).append(variable)

    # The patient table: one row per patient, k-anonymous over its quasi-identifiers.
    progress(8, "patients")
    patient_vars = by_table.get(KINDS["patient"].extract_file, [])
    table = pd.DataFrame({"study_id": study_ids.to_numpy()})
    sites = {s.pk: s for s in Site.objects.filter(pk__in=site_ids)}
    departments = dict(Department.objects.filter(site_id__in=site_ids)
                       .values_list("pk", "name"))
    derived = {
        "age_at_diagnosis": lambda: deid.age_top_coded(
            pd.Series(index_dates.dt.year.to_numpy() - cohort["birth_year"].astype("float")
                      ).astype("Int64")),
        "diagnosis_year": lambda: pd.Series(index_dates.dt.year.to_numpy()).astype("Int64"),
        "site": lambda: cohort["site_id"].map(lambda s: sites[int(s)].code),
        "region": lambda: cohort["site_id"].map(lambda s: sites[int(s)].province or None),
        "site_tier": lambda: cohort["site_id"].map(lambda s: sites[int(s)].tier),
        "department": lambda: cohort["department_id"].map(
            lambda d: departments.get(int(d)) if pd.notna(d) else None),
    }
    for variable in patient_vars:
        if variable.column in derived:
            table[variable.column] = derived[variable.column]().to_numpy()
        else:
            table[variable.column] = cohort[variable.source].to_numpy()
    quasi = {v.column: _HIERARCHIES[v.column]() for v in patient_vars
             if v.klass == catalog.QUASI and v.column in _HIERARCHIES}
    for column in quasi:
        table[column] = table[column].astype("string")
    k_table, k_report = kanon.k_anonymise(table, quasi, k=decision.k_anonymity,
                                          max_suppressed=_max_suppressed())
    types = {"study_id": "string"} | {v.column: ("string" if v.column in quasi
                                                 else _column_type(v)) for v in patient_vars}
    sink = writer.table(KINDS["patient"].extract_file, types)
    sink.write(k_table[list(types)])
    sink.close()

    # Every other table, streamed kind by kind.
    kinds = [k for k in KINDS.values() if k.parent and k.extract_file in by_table]
    for number, kind in enumerate(kinds):
        progress(10 + 80 * number // max(1, len(kinds)), f"{kind.extract_file}")
        _write_kind(writer, kind, by_table[kind.extract_file], site_ids=site_ids, as_of=as_of,
                    key=key, study_ids=study_ids, index_dates=index_dates, concepts=concepts)

    progress(92, "codebook")
    codebook_variables = []
    for table in [KINDS["patient"].extract_file, *(k.extract_file for k in kinds)]:
        for column in _structural_columns(table):
            label_en, label_zh = _STRUCTURAL[column]
            codebook_variables.append({
                "name": f"{table}.{column}", "table": table, "label_en": label_en,
                "label_zh": label_zh, "type": "string", "unit": "", "values": None,
                "klass": "structural", "transformation": catalog.STRUCTURE_NOTE})
        codebook_variables += [v.as_dict() for v in by_table.get(table, [])]
    for name, content in codebook_files(codebook_variables, concepts.vocabularies()).items():
        writer.text(name, content)
    writer.text("k_anonymity.json", json.dumps(k_report.to_dict(), sort_keys=True, indent=2,
                                               ensure_ascii=False) + "\n")
    writer.text("README.md", _readme(release, decision, variables, site_ids, declined,
                                     len(cohort), k_report.to_dict()))
    manifest = writer.close()
    manifest_dict = manifest if isinstance(manifest, dict) else manifest.to_dict()
    return {"manifest": manifest_dict, "patients": len(cohort), "k_report": k_report.to_dict()}


_STRUCTURAL = {
    "study_id": ("Study pseudonym of the patient (this release only)", "患者研究假名(仅本次发布)"),
    "line_ref": ("Reference of the treatment line (this release only)", "治疗线引用(仅本次发布)"),
    "cycle_ref": ("Reference of the cycle (this release only)", "周期引用(仅本次发布)"),
}


def _structural_columns(table: str) -> list[str]:
    kind = {k.extract_file: k for k in KINDS.values()}[table]
    fields = {f.attname for f in kind.model._meta.concrete_fields}
    columns = ["study_id"]
    if kind.name in _OWN_REF:
        columns.append(_OWN_REF[kind.name])
    columns += [_LINKS[c][0] for c in _LINKS if c in fields]
    return columns


def _max_suppressed() -> float:
    from django.conf import settings

    return settings.RELEASE_MAX_SUPPRESSED_PCT / 100


def _write_kind(writer: ReleaseWriter, kind, variables: list[catalog.Variable], *, site_ids,
                as_of, key: bytes, study_ids: pd.Series, index_dates: pd.Series,
                concepts: _Concepts) -> None:
    links = [c for c in _LINKS if c in {f.attname for f in kind.model._meta.concrete_fields}]
    own_ref = _OWN_REF.get(kind.name)
    columns = kind_columns(kind, variables)
    types = {"study_id": "string"}
    if own_ref:
        types[own_ref] = "string"
    types |= {_LINKS[c][0]: "string" for c in links}
    types |= {v.column: _column_type(v) for v in variables}
    sink = writer.table(kind.extract_file, types)
    for chunk in _read_ahead(lambda: records_chunks(kind.name, sites=site_ids, as_of=as_of,
                                                    columns=columns, chunk_bytes=CHUNK_BYTES)):
        chunk = chunk[chunk["status"].isin(RELEASED_STATUSES)
                      & chunk["patient_id"].isin(study_ids.index)]
        patient = chunk["patient_id"].astype("int64")
        out = pd.DataFrame({"study_id": study_ids.reindex(patient).to_numpy()})
        if own_ref:
            out[own_ref] = _refs(chunk["id"], kind.name, key)
        for column in links:
            ref, parent = _LINKS[column]
            out[ref] = _refs(chunk[column], parent, key)
        for variable in variables:
            out[variable.column] = _transform(variable, chunk, patient, index_dates, concepts)
        sink.write(out[list(types)])
    sink.close()


_DONE = object()


def _read_ahead(chunks: Callable[[], Iterator[pd.DataFrame]]) -> Iterator[pd.DataFrame]:
    """The chunks, read one ahead by a thread of its own (its own database connection), so
    PostgreSQL sends the next chunk while this one is transformed and written: two cores at
    work instead of one. Inside a transaction (the caller's writes must be visible) the chunks
    are read here, on the caller's connection."""
    if connection.in_atomic_block:
        yield from chunks()
        return
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for chunk in chunks():
                if not put(chunk):
                    return
            put(_DONE)
        except BaseException as problem:  # handed to the consumer, raised there
            put(problem)
        finally:
            connection.close()  # this thread's own connection

    reader = threading.Thread(target=run, name="release-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def kind_columns(kind, variables: list[catalog.Variable]) -> list[str]:
    """The columns a release reads of a record kind for these variables."""
    links = [c for c in _LINKS if c in {f.attname for f in kind.model._meta.concrete_fields}]
    return list(dict.fromkeys(["id", "patient_id", "status", *links,
                               *(v.source for v in variables)]))


# The frames of the cohort selection: (kind, columns).
COHORT_READS = (
    ("patient", ["id", "site_id", "status", "sex", "birth_year", "consent_scope",
                 "withdrawn_date", "department_id"]),
    ("diagnosis", ["id", "patient_id", "status", "diagnosis_date", "cancer_id", "stage_group"]),
    ("treatmentline", ["id", "patient_id", "status"]),
)


def _refs(ids: pd.Series, kind: str, key: bytes) -> pd.Series:
    """Release-local references of records: a keyed pseudonym of "kind:id", computed once per
    distinct id (many drugs and labs point at one cycle)."""
    ids = ids.astype("Int64").reset_index(drop=True)
    distinct = pd.Series(ids.dropna().unique(), dtype="Int64")
    refs = pd.Series(deid.pseudonyms(kind + ":" + distinct.astype("string"), key).to_numpy(),
                     index=distinct.to_numpy(), dtype="string")
    return ids.map(refs).astype("string")


def _transform(variable: catalog.Variable, chunk: pd.DataFrame, patient: pd.Series,
               index_dates: pd.Series, concepts: _Concepts):
    values = chunk[variable.source]
    if variable.type == "date_days":
        return deid.days_from(values.reset_index(drop=True),
                              index_dates.reindex(patient).reset_index(drop=True)).to_numpy()
    if variable.concept:
        return concepts.codes_of(values).to_numpy()
    if variable.source == "biomarkers":
        return values.map(_biomarker_text).to_numpy()
    return values.to_numpy()


def _biomarker_text(value) -> str | None:
    """Biomarkers as text ("EGFR+; ALK-") from the stored JSON (the history keeps it as a
    JSON string, the table as an object)."""
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            return value or None
    if isinstance(value, dict):
        return format_biomarkers(value) or None
    return None if value in (None, "") else str(value)


def _readme(release: Release, decision: Decision, variables, site_ids, declined, patients: int,
            k_report: dict) -> str:
    request = release.request
    site_codes = sorted(Site.objects.filter(pk__in=site_ids).values_list("code", flat=True))
    lines = [
        f"# {release} — {request.title}",
        "",
        f"Request: {request.reference} (revision {decision.revision}), purpose: "
        f"{Purpose(request.purpose).label}.",
        f"Decision: {decision.get_outcome_display()} on "
        f"{timezone.localtime(decision.decided_at):%Y-%m-%d}.",
        f"Conditions: {decision.conditions or 'none'}",
        f"Access until: {decision.access_until:%Y-%m-%d}",
        f"Snapshot of the registry: {release.snapshot_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} "
        "UTC",
        f"Sites included: {', '.join(site_codes) or 'none'}",
        f"Sites that declined: {', '.join(declined) or 'none'}",
        f"Patients: {patients}",
        "",
        "## Question",
        "",
        request.question,
        "",
        "## What was done to the data",
        "",
        "- Study pseudonyms (study_id) are keyed for this release only; line_ref and cycle_ref "
        "likewise.",
        "- Dates are whole days from the patient's first diagnosis (day 0).",
        "- Ages are whole years at first diagnosis; 90 and over are \"90+\".",
        "- Only patients whose consent covers this purpose and who have not withdrawn; records "
        "still in draft are not included.",
        f"- k-anonymity over the approved quasi-identifiers: k = {k_report.get('k')}; "
        f"{k_report.get('generalised_records', 0)} patients generalised, "
        f"{k_report.get('suppressed_records', 0)} suppressed (k_anonymity.json).",
        "",
        "## Files",
        "",
        f"- {CSV_ZIP}: one CSV file per table (UTF-8); the same tables as Parquet files. In "
        "the CSV files only an empty field is missing (pandas: keep_default_na=False, "
        "na_values=[\"\"]): a text such as \"NA\" is data.",
        "- codebook.csv / codebook.md: every variable with labels, types, units, values.",
        "- manifest.json: every file's size and SHA-256, and each table's row count.",
        "",
        "## Variables",
        "",
        *[f"- {v.name}: {v.label_en} / {v.label_zh}" for v in variables],
        "",
    ]
    return "\n".join(lines)


# -- downloads and expiry ----------------------------------------------------------------------


@transaction.atomic
def release_download(*, release: Release, name: str, acting_user: User, channel: str
                     ) -> tuple[Path, ReleaseFile]:
    """The path of one file of the release for a member of the study's team, recording the
    download. Anyone else, and a name the release does not hold, gets a 404; a release whose
    access period ended is refused."""
    release = Release.objects.select_related("request").get(pk=release.pk)
    if not on_team(acting_user, release.request):
        raise Http404("No such release.")
    valid = isinstance(name, str) and "\x00" not in name and len(name) <= FILE_NAME_MAX_LENGTH
    file = release.files.filter(name=name).first() if valid else None
    if file is None:
        raise Http404("No such file.")
    if release.status == Release.Status.EXPIRED or release.expires_at <= timezone.now():
        raise ValidationFailed(f"The access period of {release} has ended.")
    if release.status != Release.Status.READY:
        raise ValidationFailed(f"{release} is not ready ({release.get_status_display()}).")
    path = Path(release_storage().path(str(release.pk))) / file.name
    if not path.is_file():
        raise ValidationFailed(f"{release}'s files are missing; ask for a new release.")
    Download.objects.create(release=release, file=file, user=acting_user, channel=channel)
    return path, file


def releases_expire(*, now: dt.datetime | None = None) -> int:
    """Close every release whose access period has ended: status expired, files deleted
    (the manifest and the download record stay). Returns how many were closed."""
    now = now or timezone.now()
    closed = 0
    for release in Release.objects.filter(expires_at__lte=now).exclude(
            status=Release.Status.EXPIRED):
        with transaction.atomic():
            release = Release.objects.select_for_update().get(pk=release.pk)
            release.status = Release.Status.EXPIRED
            audited_save(release, acting_user=None, reason="access period ended")
        shutil.rmtree(Path(release_storage().path(str(release.pk))), ignore_errors=True)
        closed += 1
    return closed
