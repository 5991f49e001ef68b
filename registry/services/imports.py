"""Site extract import: read -> check every cell -> resolve local words -> write by natural
keys in one transaction -> report.

All-or-nothing: any error refuses the whole extract and writes no clinical row; the batch keeps
the report (file, row, column, value, message). Words without an approved mapping stop the
import in "needs mapping" (each word listed with its suggestions); once they are mapped,
`extract_import(batch=...)` finishes it without a new upload. Re-importing the same extract
changes nothing; a corrected one updates only the changed rows, each change audited with the
import as its reason, and every written row records its batch.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from registry.audit import audited_save, bulk_update_audited, copy_frame_audited, version_bump
from registry.biomarkers import parse_biomarkers
from registry.errors import ValidationFailed
from registry.extracts import (
    FILES,
    NATURAL_KEYS,
    UPLOAD_SUFFIXES,
    WORDS,
    ExtractFile,
    ExtractRefused,
    Problem,
    check_cells,
    check_columns,
    extract_inspect,
    open_extract,
    read_file,
    upload_limit,
)
from registry.kinds import KINDS, PATIENT, RECORD_KINDS, RecordKind
from registry.locks import process_lock
from registry.models import (
    Concept,
    Cycle,
    Department,
    Diagnosis,
    FollowUp,
    ImportBatch,
    MappingStatus,
    Patient,
    RecordStatus,
    Site,
    SiteTerm,
    TermMapping,
    TreatmentLine,
)
from registry.models.imports import ENDED, RESUMABLE, SOURCE_NAME_MAX_LENGTH
from registry.models.organisation import DATA_ENTRY_ROLES
from registry.pseudonyms import (
    hospital_number_hashes,
    hospital_number_normalise,
)
from registry.rules import Severity, allowed_grades_text, evaluate
from registry.services.clinical import followup_summary_refresh
from registry.services.mapping import suggest, term_resolve
from registry.services.organisation import require_site_role
from registry.services.terminology import (
    convert_to_canonical,
    lab_canonical,
    site_term_frequencies_import_add,
    site_term_frequencies_waiting_move,
)
from registry.services.workflow import queries_open_bulk
from registry.signals import records_changed_on_commit

IMPORT_ROLES = DATA_ENTRY_ROLES  # who enters a site's records imports its extracts

logger = logging.getLogger(__name__)

# pg_try_advisory_lock(IMPORT_LOCK, batch id) is held by the process running a batch: a
# batch "running" whose lock is free was left by a worker that died.
IMPORT_LOCK = 0x494D5054


class _Refused(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


def import_reason(batch: ImportBatch, what: str = "") -> str:
    """The change reason of every row an import writes (its batch: its status changes)."""
    return f"import {batch.pk}" + (f": {what}" if what else "")


def _progress(batch: ImportBatch, percent: int, stage: str,
              callback: Callable[[str], None]) -> None:
    ImportBatch.objects.filter(pk=batch.pk).update(progress=percent, stage=stage)
    batch.progress, batch.stage = percent, stage
    callback(f"{percent:3d}% {stage}")


def batch_status_set(batch: ImportBatch, *, status: str, acting_user: User | None,
                     reason: str, **changes) -> ImportBatch:
    """The one way a batch's status changes: saved with `changes`, audited (user, reason).

    A batch that ends (failed, checked, imported) is finished (time, 100%) and releases its
    upload: deleted at once, or kept for the site's keep_uploads_days and purged later by
    `import_uploads_purge`. A batch in "needs mapping" keeps it, for the resume."""
    for name, value in changes.items():
        setattr(batch, name, value)
    batch.status = status
    if status not in (ImportBatch.Status.RECEIVED, ImportBatch.Status.RUNNING):
        batch.finished_at, batch.progress = timezone.now(), 100
        batch.stage = str(batch.get_status_display())
    if status in ENDED and batch.upload.name and not batch.site.keep_uploads_days:
        _upload_delete(batch)
    was = ImportBatch.objects.filter(pk=batch.pk).values_list("status", "unmapped").first()
    with transaction.atomic():
        audited_save(batch, acting_user=acting_user, reason=reason)
        site_term_frequencies_waiting_move(batch=batch, was=was)  # the review queue's order
    return batch


def _upload_delete(batch: ImportBatch) -> None:
    """Delete a batch's upload (the caller saves the batch, whose field is then empty)."""
    batch.upload.storage.delete(batch.upload.name)
    batch.upload.name = ""


def batch_create(*, site: Site, path: Path, acting_user: User | None, dry_run: bool = False,
                 source_name: str | None = None) -> ImportBatch:
    """A batch for an extract the operator gives by path (import_extract): the folder or file
    stays theirs, never deleted."""
    if acting_user is not None:
        require_site_role(acting_user, site, IMPORT_ROLES)
    return audited_save(ImportBatch(site=site, uploaded_by=acting_user, dry_run=dry_run,
                                    source_name=source_name or Path(path).name,
                                    stored_path=str(path)),
                        acting_user=acting_user, reason="extract received")


def batch_upload(*, site: Site, upload: UploadedFile, acting_user: User,
                 dry_run: bool = False) -> ImportBatch:
    """Store an uploaded extract and record its batch.

    The upload goes to the "imports" storage in chunks under a name of ours (the user's file
    name is kept as the batch's source name only). Its size and, for a zip, its central
    directory (member count, sizes, ratios, names) are checked before anything is expanded;
    a refused upload leaves a failed batch giving the reason, and its file deleted. Raises
    ValidationFailed (nothing stored) for a file name or size the registry cannot take."""
    require_site_role(acting_user, site, IMPORT_ROLES)
    name = upload.name or ""
    if len(name) > SOURCE_NAME_MAX_LENGTH:
        raise ValidationFailed(f"The file name has {len(name)} characters; at most "
                               f"{SOURCE_NAME_MAX_LENGTH} are allowed.", field="extract")
    suffix = name.rpartition(".")[2].lower()
    if not name or "." not in name or suffix not in UPLOAD_SUFFIXES:
        raise ValidationFailed("Upload a .zip, .csv or .xlsx file.", field="extract")
    if upload.size > upload_limit(name):
        raise ValidationFailed(f"{name} is {upload.size:,} bytes; at most "
                               f"{upload_limit(name):,} are accepted.", field="extract")
    batch = ImportBatch(site=site, uploaded_by=acting_user, dry_run=dry_run, source_name=name)
    stored = batch.upload.storage.save(f"{uuid.uuid4().hex}.{suffix}", upload)
    batch.upload.name = stored
    try:
        with transaction.atomic():
            audited_save(batch, acting_user=acting_user, reason="extract received")
            try:
                with batch.upload.open("rb") as handle:
                    extract_inspect(handle, name=name)
            except ExtractRefused as exc:
                batch_status_set(batch, status=ImportBatch.Status.FAILED,
                                 acting_user=acting_user, reason=import_reason(batch, "refused"),
                                 errors=[Problem(name, 0, "", "", str(exc)).as_dict()])
    except BaseException:
        batch.upload.storage.delete(stored)  # nothing recorded: nothing kept
        raise
    return batch


def batch_resume(*, batch: ImportBatch, acting_user: User) -> ImportBatch:
    """Queue a batch in "needs mapping" (or failed, while its extract is kept) again."""
    require_site_role(acting_user, batch.site, IMPORT_ROLES)
    if batch.status not in RESUMABLE:
        raise ValidationFailed(f"Import {batch.pk} is {batch.get_status_display()}; only an "
                               "import that needs mapping or failed can be resumed.")
    if not batch.has_extract:
        raise ValidationFailed(f"The extract of import {batch.pk} was deleted when it ended; "
                               "upload it again.")
    return batch_status_set(batch, status=ImportBatch.Status.RECEIVED, acting_user=acting_user,
                            reason=import_reason(batch, "resumed"), progress=0, stage="",
                            restarts=0)


def _batch_lock(batch_id: int):
    """Whether this process holds the batch's lock (see registry.locks)."""
    return process_lock(IMPORT_LOCK, batch_id)


def batch_is_orphaned(batch: ImportBatch) -> bool:
    """A batch marked running that no process runs (its worker died)."""
    if batch.status != ImportBatch.Status.RUNNING:
        return False
    with _batch_lock(batch.pk) as held:
        return held


def batch_run(*, batch_id: int) -> ImportBatch | None:
    """Run a queued batch (the Celery task's one call); safe to run twice and after a worker
    died. Returns None when another process is running it. A batch found "running" with no
    process holding it was left by a dead worker: nothing of it was written (the writes are
    one transaction), so it is run again, at most IMPORT_MAX_RESTARTS times, then failed."""
    with _batch_lock(batch_id) as held:
        if not held:
            return None
        batch = ImportBatch.objects.select_related("site", "uploaded_by").get(pk=batch_id)
        if batch.status not in (ImportBatch.Status.RECEIVED, ImportBatch.Status.RUNNING):
            return batch
        if batch.status == ImportBatch.Status.RUNNING:
            if batch.restarts >= settings.IMPORT_MAX_RESTARTS:
                return batch_fail(batch, message=(
                    f"The worker running this import stopped {batch.restarts + 1} times "
                    "(killed, or out of memory); nothing was written."))
            batch.restarts += 1
            logger.warning("import %s: its worker died; running it again (restart %s)",
                           batch.pk, batch.restarts)
        return extract_import(batch)


def batch_fail(batch: ImportBatch, *, message: str) -> ImportBatch:
    """End a batch as failed for a fault (not its data), the message shown on its page."""
    return batch_status_set(batch, status=ImportBatch.Status.FAILED,
                            acting_user=batch.uploaded_by, reason=import_reason(batch, "failed"),
                            errors=[Problem(batch.source_name, 0, "", "", message).as_dict()])


def extract_import(batch: ImportBatch, *, progress: Callable[[str], None] = lambda m: None
                   ) -> ImportBatch:
    """Run (or resume) an import batch to one of: failed, needs_mapping, checked, imported.

    Any error ends the batch failed with its message (never left running); an unexpected
    one is logged and named. Raises ValidationFailed if another process runs the batch."""
    with _batch_lock(batch.pk) as held:
        if not held:
            raise ValidationFailed(f"Import {batch.pk} is running in another process.")
        try:
            return _import(batch, progress)
        except Exception as exc:
            logger.exception("import %s failed unexpectedly", batch.pk)
            return batch_fail(batch, message=f"The import stopped on an unexpected error "
                              f"({type(exc).__name__}); nothing was written. Tell the "
                              "registry's administrators.")


def _import(batch: ImportBatch, progress: Callable[[str], None]) -> ImportBatch:
    user, site = batch.uploaded_by, batch.site
    batch_status_set(batch, status=ImportBatch.Status.RUNNING, acting_user=user,
                     reason=import_reason(batch, "started"), errors=[], unmapped=[],
                     finished_at=None)
    try:
        _progress(batch, 5, "reading", progress)
        files = _read(batch)
        batch.files = {f.filename: {"sha256": f.sha256, "bytes": f.size, "rows": len(f.raw),
                                    "encoding": f.encoding} for f in files.values()}
        _progress(batch, 20, "checking every cell", progress)
        problems, soft = _check(files, site)
        if problems:
            # Every error in one pass: cells, references and rules, including the rules that
            # need the meaning of words the site has already mapped.
            concepts, _ = _resolve(files, site, user, dry_run=batch.dry_run)
            raise _Refused(problems + _check_rules(files, concepts, soft))
        _progress(batch, 40, "resolving local words", progress)
        concepts, unmapped = _resolve(files, site, user, dry_run=batch.dry_run)
        if unmapped:
            return _finish(batch, progress, ImportBatch.Status.NEEDS_MAPPING,
                           unmapped=unmapped)
        problems = _check_rules(files, concepts, soft)
        if problems:
            raise _Refused(problems)
        if batch.dry_run:
            return _finish(batch, progress, ImportBatch.Status.CHECKED)
        _progress(batch, 60, "writing", progress)
        with transaction.atomic():
            counts = _Writer(batch, files, concepts, soft).write()
            site_term_frequencies_import_add(batch=batch)
            records_changed_on_commit(kind="import", site_ids=[batch.site_id])
        return _finish(batch, progress, ImportBatch.Status.IMPORTED, counts=counts)
    except ExtractRefused as exc:
        return _finish(batch, progress, ImportBatch.Status.FAILED, errors=[
            Problem(batch.source_name, 0, "", "", str(exc)).as_dict()])
    except _Refused as exc:
        return _finish(batch, progress, ImportBatch.Status.FAILED,
                       errors=[p.as_dict() for p in exc.problems])


def _finish(batch: ImportBatch, progress, status: str, **changes) -> ImportBatch:
    batch = batch_status_set(batch, status=status, acting_user=batch.uploaded_by,
                             reason=import_reason(batch, status), **changes)
    progress(f"100% {batch.stage}")
    return batch


def _read(batch: ImportBatch) -> dict[str, ExtractFile]:
    if batch.upload.name:
        if not batch.upload.storage.exists(batch.upload.name):
            raise ExtractRefused("The uploaded extract is no longer stored; upload it again.")
        with batch.upload.open("rb") as handle:
            members = open_extract(handle, name=batch.source_name)
    else:
        path = Path(batch.stored_path)
        if not path.exists():
            raise ExtractRefused(f"{path} no longer exists; give the extract again.")
        members = open_extract(path)
    return {key: read_file(key, name, content) for key, (name, content) in members.items()}


# A stored file no batch names (its web process died between storing and recording it) is
# deleted once this old: a file being uploaded right now is not named by a batch yet either.
ORPHAN_UPLOAD_AGE = timedelta(days=1)


def import_uploads_purge() -> int:
    """Delete the uploads of ended batches kept past their site's keep_uploads_days, and stored
    files no batch names; returns how many. (Uploads of sites that keep none are deleted when
    the batch ends.)"""
    now, purged = timezone.now(), 0
    storage = ImportBatch._meta.get_field("upload").storage
    try:
        names = storage.listdir("")[1]
    except FileNotFoundError:  # nothing was ever uploaded
        names = []
    named = set(ImportBatch.objects.exclude(upload="").values_list("upload", flat=True))
    for name in names:
        if name not in named and storage.get_modified_time(name) < now - ORPHAN_UPLOAD_AGE:
            storage.delete(name)
            logger.info("deleted %s, an upload no import batch names", name)
            purged += 1
    kept = ImportBatch.objects.filter(status__in=ENDED).exclude(upload="").select_related(
        "site", "uploaded_by")
    for batch in kept:
        if batch.finished_at and batch.finished_at + timedelta(
                days=batch.site.keep_uploads_days) <= now:
            _upload_delete(batch)
            audited_save(batch, acting_user=batch.uploaded_by,
                         reason=import_reason(batch, "upload purged"))
            purged += 1
    return purged


def import_stale_batches() -> list[int]:
    """Batches to queue again: "running" with no process running them (a worker died), or
    "received" for longer than IMPORT_REQUEUE_AFTER_SECONDS (their queued task was lost)."""
    waited = timezone.now() - timedelta(seconds=settings.IMPORT_REQUEUE_AFTER_SECONDS)
    stale = [b.pk for b in ImportBatch.objects.filter(status=ImportBatch.Status.RUNNING)
             if batch_is_orphaned(b)]
    stale += ImportBatch.objects.filter(status=ImportBatch.Status.RECEIVED,
                                        created_at__lt=waited).values_list("pk", flat=True)
    return sorted(stale)


def _pause_for_tests() -> None:
    """The killed-worker test's hook (IMPORT_TEST_PAUSE_FILE, empty in deployments): wait here,
    inside the write transaction, once, having told the test which process to kill."""
    marker = settings.IMPORT_TEST_PAUSE_FILE
    if marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        time.sleep(120)


def _check(files: dict[str, ExtractFile], site: Site) -> tuple[list[Problem], dict]:
    """Every problem of the extract that needs no word's meaning, in one pass: its cells, its
    references (each child row's patient, line and cycle exist in the extract or the
    registry) and the rulebook's hard rules over each file's rows. Returns the problems and
    the soft rules' violations by file (opened as queries once the rows are written)."""
    problems: list[Problem] = []
    today = pd.Timestamp(timezone.localdate())
    readable = set()
    for key, extract in files.items():
        if check_columns(extract, problems):
            check_cells(extract, problems, today)
            readable.add(key)
    # Every child row's patient, line and cycle must exist in the extract or the registry;
    # patient numbers compare as normalised (one patient however the number is written).
    in_file = set()
    if "patients" in files:
        in_file = _numbers_checked(files["patients"], problems)
    existing_numbers, existing_lines, existing_cycles = _existing_structure(site, files)
    patients = in_file | existing_numbers
    lines = set(existing_lines)
    if "regimens" in readable:
        lines |= set(zip(_normalised(files["regimens"]), files["regimens"].parsed["line_no"],
                         strict=True))
    cycles = set(existing_cycles)
    if "cycles" in readable:
        cycles |= set(zip(_normalised(files["cycles"]), files["cycles"].parsed["line_no"],
                          files["cycles"].parsed["cycle_no"], strict=True))
    for key, extract in files.items():
        if extract.name == "patients" or key not in readable:
            continue
        number = _normalised(extract)
        missing = ~number.isin(patients)
        _report(problems, extract, missing, "patient_no", extract.raw["patient_no"],
                "no such patient in patients.csv or the registry")
        parsed = extract.parsed
        if extract.name == "cycles":
            keys = pd.Series(list(zip(number, parsed["line_no"], strict=True)),
                             index=number.index)
            _report(problems, extract, ~missing & ~keys.isin(lines), "line_no",
                    parsed["line_no"], "no such line in regimens.csv or the registry")
        elif "cycle_no" in parsed and "line_no" in parsed:
            given = parsed["cycle_no"].notna() & parsed["line_no"].notna()
            keys = pd.Series(list(zip(number, parsed["line_no"], parsed["cycle_no"],
                                      strict=True)), index=number.index)
            _report(problems, extract, ~missing & given & ~keys.isin(cycles), "cycle_no",
                    parsed["cycle_no"], "no such cycle in cycles.csv or the registry")
    soft: dict[str, list[tuple[int, str, str]]] = {}
    frames = _rule_frames({k: files[k] for k in readable}, site)
    for key, frame in frames.items():
        _rules_apply(files[key], RULE_KINDS[key], frame, problems, soft)
    return problems, soft


# The record kind (as the rulebook names it) of each extract file of records about a patient.
RULE_KINDS = {k.extract_file: k.name for k in RECORD_KINDS}


def _normalised(extract: ExtractFile) -> pd.Series:
    """The file's patient numbers as the registry compares them."""
    cached = getattr(extract, "_normalised", None)
    if cached is None:
        numbers = extract.raw["patient_no"]
        forms = {n: hospital_number_normalise(n) for n in numbers.unique()}
        cached = extract._normalised = numbers.map(forms)
    return cached


def _numbers_checked(extract: ExtractFile, problems: list[Problem]) -> set[str]:
    """patients.csv's numbers (normalised); one number written two ways is a problem."""
    number = _normalised(extract)
    first = number.drop_duplicates()
    again = number.duplicated() & ~extract.raw["patient_no"].duplicated()
    rows = {n: i for i, n in first.items()}
    for index in again[again].index:
        problems.append(Problem(extract.filename, int(index) + 2, "patient_no",
                                str(extract.raw.at[index, "patient_no"]),
                                gettext("the same hospital number as row %(row)d, written "
                                        "differently") % {"row": rows[number[index]] + 2}))
    return set(first)


def _rule_frames(files: dict[str, ExtractFile], site: Site) -> dict[str, pd.DataFrame]:
    """Each file as the rulebook reads it: the record's columns (model field names) and the
    patient's facts (``ctx_`` columns) from the extract and the registry together, set-based:
    the stored facts in one query per table, joined by normalised patient number."""
    numbers = set()
    for extract in files.values():
        numbers |= set(_normalised(extract))
    stored = _stored_facts(site, numbers)
    birth = stored["birth"]
    if "patients" in files:
        parsed = files["patients"].parsed
        year = pd.to_numeric(parsed.get("birth_year"), errors="coerce") if "birth_year" in \
            parsed else pd.Series(float("nan"), index=parsed.index)
        if "birth_date" in parsed:
            year = year.fillna(pd.to_datetime(parsed["birth_date"], errors="coerce").dt.year)
        given = pd.Series(year.to_numpy(), index=_normalised(files["patients"]).to_numpy())
        given = given[given.notna()]
        birth = _joined(birth[~birth.index.isin(given.index)], given[~given.index.duplicated()])

    def dates(key: str, column: str, where=None) -> pd.Series:
        if key not in files:
            return pd.Series(dtype="datetime64[ns]")
        parsed = files[key].parsed
        values = pd.Series(pd.to_datetime(parsed[column], errors="coerce").to_numpy(),
                           index=_normalised(files[key]).to_numpy())
        return values[where(parsed).to_numpy()] if where is not None else values

    def combined(extract_values: list[pd.Series], stored_values: pd.Series, how: str):
        both = _joined(stored_values, *extract_values).dropna()
        grouped = both.groupby(level=0)
        return grouped.min() if how == "min" else grouped.max()

    dead = dates("followups", "followup_date", lambda p: p["vital_status"] == "dead")
    death = combined([dead], stored["death"], "min")
    first_dx = combined([dates("diagnoses", "diagnosis_date")], stored["first_dx"], "min")
    last_event = combined([dates("diagnoses", "diagnosis_date"), dates("cycles", "start_date")],
                          stored["last_event"], "max")
    line_start = stored["line_start"]
    if "regimens" in files:
        given = pd.Series(pd.to_datetime(files["regimens"].parsed["start_date"],
                                         errors="coerce").to_numpy(),
                          index=pd.MultiIndex.from_arrays([
                              _normalised(files["regimens"]).to_numpy(),
                              files["regimens"].parsed["line_no"].astype(float).to_numpy()]))
        line_start = _joined(line_start[~line_start.index.isin(given.index)],
                             given[~given.index.duplicated()])
    frames = {}
    for key in RULE_KINDS:
        if key not in files:
            continue
        extract = files[key]
        frame = extract.parsed.copy()
        for column in FILES[key]:  # a column the file leaves out is empty in every row
            if column.name not in frame and column.name != "value":
                frame[column.name] = None
            if column.kind == "date":  # parsed once here, not once per rule
                frame[column.name] = pd.to_datetime(frame[column.name], errors="coerce")
        if key == "labs":
            frame["value"] = frame["value_value"]
        number = _normalised(extract).to_numpy()
        frame["ctx_birth_year"] = birth.reindex(number).to_numpy()
        frame["ctx_death_date"] = death.reindex(number).to_numpy()
        frame["ctx_first_diagnosis_date"] = first_dx.reindex(number).to_numpy()
        frame["ctx_last_event_date"] = last_event.reindex(number).to_numpy()
        if key == "cycles":
            frame["ctx_line_start_date"] = line_start.reindex(pd.MultiIndex.from_arrays([
                number, frame["line_no"].astype(float).to_numpy()])).to_numpy()
        frames[key] = frame
    return frames


def _stored_facts(site: Site, numbers: set[str]) -> dict[str, pd.Series]:
    """The registry's facts of the extract's patients, indexed by normalised number: birth
    year, first death, first diagnosis, last diagnosis or cycle, and each line's start."""
    by_hash = {}
    for number in numbers:
        for h in hospital_number_hashes(site.code, number):
            by_hash[h] = number
    patients = {pk: (by_hash[h], year) for pk, h, year in Patient.objects.filter(
        site=site, hospital_number_hash__in=list(by_hash)).values_list(
        "pk", "hospital_number_hash", "birth_year")}
    ids = list(patients)

    def per_patient(rows) -> pd.Series:
        rows = list(rows)
        return pd.Series(pd.to_datetime([d for _, d in rows]),
                         index=[patients[p][0] for p, _ in rows], dtype="datetime64[ns]")

    death = per_patient(FollowUp.objects.filter(
        patient_id__in=ids, vital_status=FollowUp.VitalStatus.DEAD).values_list(
        "patient_id", "followup_date"))
    diagnoses = per_patient(Diagnosis.objects.filter(patient_id__in=ids).values_list(
        "patient_id", "diagnosis_date"))
    cycles = per_patient(Cycle.objects.filter(patient_id__in=ids).values_list(
        "patient_id", "start_date"))
    lines = list(TreatmentLine.objects.filter(patient_id__in=ids).values_list(
        "patient_id", "line_no", "start_date"))
    line_start = pd.Series(
        pd.to_datetime([d for _, _, d in lines]), dtype="datetime64[ns]",
        index=pd.MultiIndex.from_arrays([[patients[p][0] for p, _, _ in lines],
                                         [float(n) for _, n, _ in lines]]))
    return {
        "birth": pd.Series([y for _, y in patients.values()],
                           index=[n for n, _ in patients.values()], dtype=float),
        "death": death, "first_dx": diagnoses,
        "last_event": _joined(diagnoses, cycles), "line_start": line_start}


def _joined(*parts: pd.Series) -> pd.Series:
    """The series one after another (empty ones left out: they carry no dtype)."""
    kept = [p for p in parts if len(p)]
    return pd.concat(kept) if kept else parts[0]


def _rules_apply(extract: ExtractFile, kind: str, frame: pd.DataFrame,
                 problems: list[Problem], soft: dict) -> None:
    """The rulebook over one file's frame: hard violations are problems (file, row, column,
    value, the rule's message), soft ones kept by file for their queries."""
    violations, _ = evaluate(kind, frame)
    for row, code, severity, field, message in zip(
            violations["row"], violations["code"], violations["severity"], violations["field"],
            violations["message"], strict=True):
        if severity == Severity.HARD:
            value = extract.raw.at[row, field] if field in extract.raw else ""
            problems.append(Problem(extract.filename, int(row) + 2, field, str(value),
                                    message, code))
        else:
            soft.setdefault(extract.name, []).append((int(row), field, message))


def _report(problems: list[Problem], extract: ExtractFile, mask: pd.Series, column: str,
            values: pd.Series, message: str) -> None:
    for index in mask[mask].index:
        problems.append(Problem(extract.filename, int(index) + 2, column,
                                str(values.loc[index]), message))


def _existing_structure(site: Site, files) -> tuple[set, set, set]:
    """The extract's patient numbers already registered, and their lines and cycles."""
    numbers = set()
    for extract in files.values():
        numbers |= set(_normalised(extract))
    by_hash = {h: n for n in numbers for h in hospital_number_hashes(site.code, n)}
    patients = dict(Patient.objects.filter(site=site, hospital_number_hash__in=list(by_hash))
                    .values_list("pk", "hospital_number_hash"))
    lines = {(by_hash[patients[p]], n) for p, n in TreatmentLine.objects.filter(
        patient_id__in=list(patients)).values_list("patient_id", "line_no")}
    cycles = {(by_hash[patients[p]], line, c) for p, line, c in Cycle.objects.filter(
        patient_id__in=list(patients)).values_list("patient_id", "line__line_no", "cycle_no")}
    return {by_hash[h] for h in patients.values()}, lines, cycles


def _resolve(files, site, user, *, dry_run: bool):
    """{(domain, word): (site term, concept)} and the words still needing a mapping (neither
    approved nor marked not mappable)."""
    words: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for (file_key, column), domain in WORDS.items():
        if file_key in files and column in files[file_key].raw.columns:
            for word, count in files[file_key].raw[column].value_counts().items():
                if word:
                    words[(domain, word)] += int(count)
                    where[(domain, word)].append((file_key, column))
    # Words the site already mapped resolve in two queries; only the others go one by one.
    known = {(t.domain, t.text): t for t in SiteTerm.objects.filter(
        site=site, text__in=sorted({word for _, word in words}))}
    approved = {}
    for mapping in TermMapping.objects.filter(
            site_term__in=list(known.values()), status=MappingStatus.APPROVED).select_related(
            "concept", "concept__vocabulary").order_by("pk"):
        approved.setdefault(mapping.site_term_id, mapping.concept)
    resolved, unmapped = {}, []
    for (domain, word), count in sorted(words.items()):
        term = known.get((domain, word))
        concept = approved.get(term.pk) if term else None
        if concept is None and not dry_run:
            term, concept = term_resolve(site=site, domain=domain, text=word, acting_user=user)
        # A word a reviewer marked not mappable is stored as written, with no concept.
        if concept is None and not (term is not None and term.unmappable):
            unmapped.append({"domain": domain, "text": word, "rows": count,
                             "samples": _word_samples(files, where[(domain, word)], word),
                             "suggestions": [s.as_dict() for s in suggest(domain, word,
                                                                          site=site, limit=3)]})
        resolved[(domain, word)] = (term, concept)
    return resolved, unmapped


def _word_samples(files, places, word: str, limit: int = 3) -> list[dict]:
    """The first rows of the extract that use a word (file, row as numbered in error reports,
    the row's other cells), so a reviewer sees the word in context before any row is stored.
    The hospital's patient number stays out: the registry keeps only its keyed hash."""
    samples = []
    for file_key, column in places:
        raw = files[file_key].raw
        shown = [c for c in raw.columns if c not in ("patient_no", column)]
        for index in raw.index[raw[column] == word][:limit - len(samples)]:
            cells = " · ".join(f"{c}={raw.at[index, c]}" for c in shown if raw.at[index, c])
            samples.append({"file": files[file_key].filename, "row": int(index) + 2,
                            "cells": cells[:160]})
        if len(samples) >= limit:
            break
    return samples


def _check_rules(files, concepts, soft: dict) -> list[Problem]:
    """The rulebook's rules that need the words' meanings: the grades a CTCAE term defines,
    a lab value against its reference range in the canonical unit. A word not mapped yet
    gives no meaning, and its rules wait for the mapping."""
    problems: list[Problem] = []
    if "adverse_events" in files and "grade" in files["adverse_events"].parsed:
        extract = files["adverse_events"]
        words = extract.raw["term"]
        meaning = {}
        for word in words.unique():
            concept = concepts.get(("adverse_event", word), (None, None))[1]
            meaning[word] = ((allowed_grades_text(concept.allowed_grades()), concept.name_en)
                             if concept is not None else ("", word))
        frame = pd.DataFrame({
            "grade": extract.parsed["grade"],
            "ctx_allowed_grades": words.map(lambda w: meaning[w][0]),
            "ctx_term": words.map(lambda w: meaning[w][1])}, index=extract.raw.index)
        _rules_apply(extract, "adverseevent", frame, problems, soft)
    if "labs" in files and "value_value" in files["labs"].parsed:
        extract = files["labs"]
        tests, units = extract.raw["test"], (extract.raw["unit"] if "unit" in extract.raw
                                             else pd.Series("", index=extract.raw.index))
        factor, low, high = {}, {}, {}
        for pair in set(zip(tests, units, strict=True)):
            lab = concepts.get(("lab", pair[0]), (None, None))[1]
            unit = concepts.get(("unit", pair[1]), (None, None))[1]
            value, _, _ = lab_canonical(lab=lab, unit=unit, value=1.0, unit_given=bool(pair[1]))
            factor[pair] = value
            reference = lab.attributes if lab is not None else {}
            low[pair] = reference.get("reference_low")
            high[pair] = reference.get("reference_high")
        pairs = pd.Series(list(zip(tests, units, strict=True)), index=extract.raw.index)
        frame = pd.DataFrame({
            "value_canonical": extract.parsed["value_value"] * pd.to_numeric(
                pairs.map(factor), errors="coerce"),
            "ctx_reference_low": pd.to_numeric(pairs.map(low), errors="coerce"),
            "ctx_reference_high": pd.to_numeric(pairs.map(high), errors="coerce")},
            index=extract.raw.index)
        _rules_apply(extract, "labresult", frame, problems, soft)
    return problems


def _python(series: pd.Series) -> list:
    """A column as Python values (numpy scalars unwrapped), missing values as None."""
    missing = series.isna().to_numpy()
    return [None if m else v for v, m in zip(series.tolist(), missing, strict=True)]


# New rows go to the database per COPY of at most this many (bounds an import's memory).
CHUNK_ROWS = 50_000


class _Writer:
    """Upserts by natural key, table by table, parents first.

    Each file's column values are computed for all its rows at once (pandas, no model
    instances); rows whose natural key is new go to COPY in chunks, and only rows that match
    a stored record are compared field by field and updated (audited) where they differ.
    """

    def __init__(self, batch: ImportBatch, files, concepts, soft: dict | None = None) -> None:
        self.batch, self.files = batch, files
        self.soft = soft or {}
        self.site = batch.site
        self.user = batch.uploaded_by
        self.reason = import_reason(batch)
        self.counts: dict[str, dict[str, int]] = {}
        self.problems: list[Problem] = []
        self.factors: dict[tuple[int, int], tuple] = {}
        self.queued_queries: list[tuple] = []
        # (domain, word) -> (site term id, concept id or None), and the concepts themselves.
        self.ids = {key: (term.pk if term else None, concept.pk if concept else None)
                    for key, (term, concept) in concepts.items()}
        self.concepts = {key: concept for key, (_, concept) in concepts.items()}

    def write(self) -> dict:
        self.patient_of = self._patients()
        self.patient_ids = list(self.patient_of.values())
        # Each kind's column values from its file (what differs between kinds is only this).
        values_for = {"diagnosis": self._diagnosis_values, "treatmentline": self._line_values,
                      "cycle": self._cycle_values, "drugadministration": self._drug_values,
                      "adverseevent": self._ae_values, "labresult": self._lab_values,
                      "followup": self._followup_values}
        for kind in RECORD_KINDS:  # parents first
            self._table(kind, values_for[kind.name])
            if kind.name == "treatmentline":  # the cycles' parents, stored and new
                self.lines = {(p, n): i for p, n, i in self._stored(TreatmentLine).values_list(
                    "patient_id", "line_no", "id")}
            elif kind.name == "cycle":  # the parents of drugs, events and labs
                self.cycles = {(p, n, c): i for p, n, c, i in self._stored(Cycle).values_list(
                    "patient_id", "line__line_no", "cycle_no", "id")}
        if "followups" in self.files:
            followup_summary_refresh(self.patient_ids)
        if self.problems:
            raise _Refused(self.problems)
        for queued in self.queued_queries:
            self._queries(*queued)
        return self.counts

    def _queries(self, model, key: str, natural: list[str], keys: list[tuple]) -> None:
        """Open the soft rules' queries on the file's written rows: one INSERT for the file,
        attributed to the import's user with the import as the reason."""
        flagged = pd.DataFrame(self.soft[key], columns=["position", "field", "text"])
        ids = {tuple(row[:-1]): row[-1] for row in self._stored(model).values_list(
            *natural, "id")}
        patient_of = dict(self._stored(model).values_list("id", "patient_id"))
        record = flagged["position"].map(lambda p: ids.get(keys[p]))
        flagged = flagged.assign(record_id=record)[record.notna().to_numpy()]
        if flagged.empty:
            return
        flagged["record_id"] = flagged["record_id"].astype(int)
        flagged["patient_id"] = flagged["record_id"].map(patient_of)
        flagged["site_id"] = self.site.pk
        opened = queries_open_bulk(flagged, record_model=model._meta.model_name,
                                   acting_user=self.user, reason=self.reason)
        self.counts.setdefault("queries", {"created": 0, "updated": 0, "unchanged": 0})
        self.counts["queries"]["created"] += opened

    # -- helpers -------------------------------------------------------------------------------

    def _stored(self, model):
        return model.objects.filter(patient_id__in=self.patient_ids)

    def _count(self, table: str, kind: str, n: int = 1) -> None:
        self.counts.setdefault(table, {"created": 0, "updated": 0, "unchanged": 0})
        self.counts[table][kind] += n

    @staticmethod
    def _text(frame: pd.DataFrame, column: str, default: str = "") -> pd.Series:
        """A text column as read (missing column or empty cell: `default`)."""
        if column not in frame:
            return pd.Series(default, index=frame.index, dtype=object)
        return frame[column].where(frame[column] != "", default)

    @staticmethod
    def _parsed(frame: pd.DataFrame, column: str) -> pd.Series:
        if column not in frame:
            return pd.Series(None, index=frame.index, dtype=object)
        return frame[column]

    def _words(self, domain: str, words: pd.Series) -> tuple[pd.Series, pd.Series]:
        """The site term ids and concept ids of a column of local words (empty: None)."""
        terms = {w: ids[0] for (d, w), ids in self.ids.items() if d == domain}
        concepts = {w: ids[1] for (d, w), ids in self.ids.items() if d == domain}
        return (words.map(terms).astype("Int64"), words.map(concepts).astype("Int64"))

    def _cycle_ids(self, patient: pd.Series, parsed: pd.DataFrame) -> pd.Series:
        """The cycle each row names by (line_no, cycle_no), None where it names none."""
        keys = zip(patient.tolist(), _python(self._parsed(parsed, "line_no")),
                   _python(self._parsed(parsed, "cycle_no")), strict=True)
        return pd.Series([self.cycles[k] if k[1] is not None and k[2] is not None else None
                          for k in keys], index=parsed.index, dtype="Int64")

    def _table(self, kind: RecordKind, values_for: Callable, stored=None) -> None:
        """Write one kind's file: new natural keys by COPY, matching stored rows compared and
        updated where they differ."""
        model, key, natural = kind.model, kind.extract_file, list(kind.natural_key)
        if key not in self.files:
            return
        extract = self.files[key]
        values = values_for(extract.raw, extract.parsed)
        keys = list(zip(*(_python(values[c]) for c in natural), strict=True))
        stored = {tuple(getattr(m, c) for c in natural): m
                  for m in (stored if stored is not None else self._stored(model))}
        matched, seen, repeated = [], {}, []
        for position, natural_key in enumerate(keys):
            if natural_key in seen:  # e.g. the same date written two ways
                columns = [c for c in NATURAL_KEYS[key] if c in extract.raw]
                repeated.append(Problem(
                    extract.filename, position + 2, ", ".join(columns),
                    " / ".join(str(extract.raw[c].iloc[position]) for c in columns),
                    f"this row repeats the key of row {seen[natural_key] + 2} once read"))
            seen.setdefault(natural_key, position)
            if natural_key in stored:
                matched.append(position)
        if repeated:  # nothing of this extract may be written
            raise _Refused(self.problems + repeated)
        if key in self.soft:
            self.queued_queries.append((model, key, natural, keys))
        is_new = pd.Series(True, index=values.index)
        is_new.iloc[matched] = False
        new = values[is_new.to_numpy()].assign(
            site_id=self.site.pk, status=RecordStatus.SUBMITTED, import_batch_id=self.batch.pk)
        for start in range(0, len(new), CHUNK_ROWS):
            copy_frame_audited(model, new.iloc[start:start + CHUNK_ROWS],
                               acting_user=self.user, reason=self.reason)
        self._count(key, "created", len(new))
        if not matched:
            return
        rows = values.iloc[matched]
        columns = {c: _python(rows[c]) for c in rows.columns}
        changed = []
        for n, position in enumerate(matched):
            obj = stored[keys[position]]
            if self._apply(obj, {c: columns[c][n] for c in columns}, key, position + 2):
                changed.append(obj)
            else:
                self._count(key, "unchanged")
        if changed:
            names = {f.attname: f.name for f in model._meta.concrete_fields}
            bulk_update_audited(model, changed, [*(names[c] for c in rows.columns),
                                                 "version", "import_batch", "status"],
                                acting_user=self.user, reason=self.reason)
        self._count(key, "updated", len(changed))

    def _apply(self, obj, values: dict, table: str, line: int) -> bool:
        differs = {k: v for k, v in values.items() if getattr(obj, k) != v}
        if not differs:
            return False
        if obj.status == RecordStatus.LOCKED:
            self.problems.append(Problem(f"{table}.csv", line, ", ".join(differs), "",
                                         "this record is locked; a monitor must unlock it "
                                         "before an import can change it"))
            return False
        for k, v in differs.items():
            setattr(obj, k, v)
        version_bump(obj)
        obj.import_batch = self.batch
        if obj.status == RecordStatus.VERIFIED:
            obj.status = RecordStatus.SUBMITTED
        return True

    # -- per table: every row's column values, vectorised ---------------------------------------

    def _patients(self) -> dict[str, int]:
        """Write patients.csv; return the database id of every patient number the extract names."""
        numbers = set()
        for extract in self.files.values():
            numbers |= set(extract.raw["patient_no"])
        both = {n: hospital_number_hashes(self.site.code, n) for n in numbers}
        stored = Patient.objects.filter(site=self.site, hospital_number_hash__in=[
            h for pair in both.values() for h in pair])
        # A patient stored under the legacy hash keeps it (the registry cannot rehash without
        # the number); every other row is matched and written under the normalised hash.
        known = set(stored.values_list("hospital_number_hash", flat=True))
        self.hashes = hashes = {n: (legacy if legacy in known and normal not in known
                                    else normal) for n, (normal, legacy) in both.items()}
        if "patients" in self.files:
            raw = self.files["patients"].raw
            departments = {d.name: d.pk for d in Department.objects.filter(site=self.site)}
            for name in sorted(set(raw.get("department", pd.Series(dtype=object))) - {""}):
                if name not in departments:
                    departments[name] = audited_save(
                        Department(site=self.site, name=name), acting_user=self.user,
                        reason=self.reason).pk
            self.departments = departments
            self._table(KINDS[PATIENT], self._patient_values, stored=stored)
            _pause_for_tests()
        else:
            self._count("patients", "created", 0)  # the report always lists patients
        pk_of = {h: pk for pk, h in stored.values_list("pk", "hospital_number_hash")}
        return {n: pk_of[h] for n, h in hashes.items() if h in pk_of}

    def _patient_values(self, raw, parsed):
        birth_year = self._parsed(parsed, "birth_year").astype(object)
        birth_date = self._parsed(parsed, "birth_date")
        birth_year = birth_year.where(birth_year.notna(), birth_date.map(
            lambda d: d.year if d is not None and not pd.isna(d) else None))
        return pd.DataFrame({
            "site_id": self.site.pk, "hospital_number_hash": raw["patient_no"].map(self.hashes),
            "sex": parsed["sex"], "birth_year": birth_year.astype("Int64"),
            "department_id": self._text(raw, "department").map(self.departments).astype("Int64"),
            "consent_scope": self._parsed(parsed, "consent_scope").fillna("academic")
            .replace("", "academic"),
            "consent_date": self._parsed(parsed, "consent_date"),
            "withdrawn_date": self._parsed(parsed, "withdrawn_date")})

    def _frame(self, raw, columns: dict) -> pd.DataFrame:
        return pd.DataFrame({"patient_id": raw["patient_no"].map(self.patient_of), **columns},
                            index=raw.index)

    def _line_values(self, raw, parsed):
        term, concept = self._words("regimen", self._text(raw, "regimen"))
        return self._frame(raw, {
            "line_no": parsed["line_no"], "regimen_term_id": term, "regimen_id": concept,
            "intent": self._parsed(parsed, "intent").fillna(""),
            "start_date": parsed["start_date"], "end_date": self._parsed(parsed, "end_date")})

    def _diagnosis_values(self, raw, parsed):
        cancer_term, cancer = self._words("condition", raw["cancer"])
        morphology_term, morphology = self._words("morphology", self._text(raw, "morphology"))
        biomarkers = self._text(raw, "biomarkers")
        parsed_biomarkers = {text: parse_biomarkers(text) for text in biomarkers.unique()}
        return self._frame(raw, {
            "diagnosis_date": parsed["diagnosis_date"], "cancer_term_id": cancer_term,
            "cancer_id": cancer, "morphology_term_id": morphology_term,
            "morphology_id": morphology,
            **{c: self._text(raw, c) for c in ("stage_system", "stage_group", "t", "n", "m")},
            "ecog": self._parsed(parsed, "ecog"), "biomarkers": biomarkers.map(parsed_biomarkers)})

    def _cycle_values(self, raw, parsed):
        patient = raw["patient_no"].map(self.patient_of)
        bsa = self._parsed(parsed, "bsa_m2")
        return self._frame(raw, {
            "line_id": pd.Series([self.lines[k] for k in zip(
                patient.tolist(), _python(parsed["line_no"]), strict=True)],
                index=raw.index, dtype="Int64"),
            "cycle_no": parsed["cycle_no"], "start_date": parsed["start_date"],
            "length_days": self._parsed(parsed, "length_days"),
            "bsa_m2": pd.Series([None if v is None else Decimal(f"{v:.2f}")
                                 for v in _python(bsa)], index=raw.index, dtype=object)})

    def _drug_values(self, raw, parsed):
        term, concept = self._words("drug", raw["drug"])
        dose = self._parsed(parsed, "dose")
        return self._frame(raw, {
            "cycle_id": self._cycle_ids(raw["patient_no"].map(self.patient_of), parsed),
            "day": (pd.Series(1, index=raw.index, dtype="Int64") if "day" not in parsed
                    else parsed["day"].astype("Int64").fillna(1)),
            "drug_term_id": term, "drug_id": concept,
            "dose": pd.Series([None if v is None else Decimal(str(v)).quantize(Decimal("0.001"))
                               for v in _python(dose)], index=raw.index, dtype=object),
            "dose_unit": self._parsed(parsed, "dose_unit").fillna(""),
            "route": self._parsed(parsed, "route").fillna(""),
            "purpose": self._parsed(parsed, "purpose").fillna("antineoplastic")})

    def _ae_values(self, raw, parsed):
        term, concept = self._words("adverse_event", raw["term"])
        serious = self._parsed(parsed, "serious")
        return self._frame(raw, {
            "ae_term_id": term, "ae_id": concept, "grade": parsed["grade"],
            "onset_date": parsed["onset_date"],
            "resolved_date": self._parsed(parsed, "resolved_date"),
            "serious": serious.where(serious.notna(), False).astype(bool),
            "cycle_id": self._cycle_ids(raw["patient_no"].map(self.patient_of), parsed)})

    def _lab_values(self, raw, parsed):
        tests, units = raw["test"], self._text(raw, "unit")
        test_term, lab = self._words("lab", tests)
        unit_term, unit = self._words("unit", units)
        value = parsed["value_value"]
        # The one rule for the canonical form (lab_canonical), once per (test, unit) word pair:
        # the factor is the canonical value of 1 in the unit as written.
        rules = {}
        for pair in set(zip(tests, units, strict=True)):
            factor, canonical_unit, flag = lab_canonical(
                lab=self.concepts[("lab", pair[0])],
                unit=self.concepts.get(("unit", pair[1])), value=1.0,
                unit_given=bool(pair[1]), convert=self._conversion)
            rules[pair] = (factor, canonical_unit.pk if canonical_unit else None, flag)
        rule = [rules[pair] for pair in zip(tests, units, strict=True)]
        values = _python(value)
        return self._frame(raw, {
            "test_term_id": test_term, "lab_id": lab, "collected_date": parsed["collected_date"],
            "value_text": raw["value"], "comparator": parsed["value_comparator"].fillna(""),
            "value": value, "unit_term_id": unit_term, "unit_id": unit,
            "value_canonical": pd.Series(
                [round(v * r[0], 9) if v is not None and r[0] is not None else None
                 for v, r in zip(values, rule, strict=True)], index=raw.index, dtype=float),
            "canonical_unit_id": pd.Series(
                [r[1] if v is not None else None for v, r in zip(values, rule, strict=True)],
                index=raw.index, dtype="Int64"),
            "unit_flag": pd.Series(
                [r[2] if v is not None else lab_canonical(lab=None, unit=None, value=None,
                                                          unit_given=bool(u))[2]
                 for v, r, u in zip(values, rule, units, strict=True)], index=raw.index),
            "cycle_id": self._cycle_ids(raw["patient_no"].map(self.patient_of), parsed)})

    def _conversion(self, *, lab: Concept, unit: Concept, value: float):
        """convert_to_canonical, each (lab, unit) factor looked up once per import."""
        key = (lab.pk, unit.pk)
        if key not in self.factors:
            self.factors[key] = convert_to_canonical(lab=lab, unit=unit, value=1.0)
        factor, canonical = self.factors[key]
        if factor is None:
            return None, None
        return value * factor, canonical

    def _followup_values(self, raw, parsed):
        return self._frame(raw, {
            "followup_date": parsed["followup_date"], "vital_status": parsed["vital_status"],
            "progression": self._parsed(parsed, "progression"),
            "progression_date": self._parsed(parsed, "progression_date"),
            "ecog": self._parsed(parsed, "ecog"),
            "cause_of_death": self._text(raw, "cause_of_death")})
