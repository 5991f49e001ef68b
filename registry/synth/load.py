"""Write generated cohorts into the registry's tables, set-based.

On PostgreSQL every table is filled with COPY and its history with one INSERT ... SELECT per
table, all in one transaction: a failed run leaves nothing behind. On SQLite (the embedded
demo) the same rows go in with executemany. Sites, departments, site terms and mappings are
few and go through the ordinary audited services and bulk helpers.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.contrib.auth.models import User
from django.db import connection, models, transaction

from registry.audit import bulk_create_audited, history_columns, history_user
from registry.errors import ValidationFailed
from registry.kinds import CLINICAL_MODELS
from registry.models import (
    AdverseEvent,
    Concept,
    Cycle,
    Department,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    LabResult,
    MappingStatus,
    Patient,
    SiteTerm,
    TermMapping,
    TreatmentLine,
)
from registry.pseudonyms import hospital_number_hash
from registry.services.organisation import department_get_or_create, site_upsert
from registry.services.terminology import normalise_for_domain
from registry.synth.generator import CENSOR, SiteCohort, biomarkers_json, epoch_dates


@dataclass
class LoadStats:
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int) -> None:
        self.rows[name] = self.rows.get(name, 0) + n

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _dates(days: pd.Series | np.ndarray) -> pd.Series:
    stamps = epoch_dates(days)
    return stamps.dt.strftime("%Y-%m-%d").where(stamps.notna(), None)


def _stamps(days: pd.Series | np.ndarray) -> pd.Series:
    """A record's entry time: two days after its clinical date, 10:00 in China (02:00 UTC)."""
    values = np.minimum(pd.Series(days, dtype="float64").to_numpy() + 2, CENSOR + 30)
    return epoch_dates(values).dt.strftime("%Y-%m-%d 02:00:00+00:00")


def _status(diag_days: np.ndarray) -> np.ndarray:
    age = CENSOR - diag_days
    return np.select(
        [age > 540, age > 180, age > 60], ["locked", "verified", "submitted"], "draft"
    ).astype(object)


class CohortWriter:
    """Loads site cohorts; call `write_site` per site inside `run`, which owns the transaction."""

    def __init__(
        self,
        *,
        acting_user: User | None,
        reason: str,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.acting_user = acting_user
        self.reason = reason
        self.progress = progress or (lambda message: None)
        self.stats = LoadStats()
        self.vendor = connection.vendor
        self._next: dict[str, int] = {}
        self._start: dict[str, int] = {}
        self._concepts: dict[tuple[str, str], int] = {}
        self._foreign_keys: list[tuple[str, str, str]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def begin(self) -> None:
        self._concepts = {
            (v, c): pk for pk, v, c in Concept.objects.values_list("pk", "vocabulary__code", "code")
        }
        if not self._concepts:
            raise ValidationFailed("Load the starter vocabulary first (load_starter_vocabulary).")
        tables = [m._meta.db_table for m in CLINICAL_MODELS]
        with connection.cursor() as cursor:
            if self.vendor == "postgresql":
                # Ids are assigned here, so no other writer may insert while we load.
                # Ids are assigned here, so no other writer may insert while we load.
                cursor.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
                self._foreign_keys = foreign_keys_suspend(tables)
            for table in tables:
                cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608
                self._start[table] = self._next[table] = cursor.fetchone()[0] + 1

    def finish(self) -> None:
        """History rows for everything loaded, then the id sequences moved past our ids."""
        user_id = history_user(self.acting_user).pk
        with connection.cursor() as cursor:
            for model in CLINICAL_MODELS:
                table = model._meta.db_table
                history = model.history.model._meta.db_table
                cols = ", ".join(history_columns(model))
                cursor.execute(
                    f"INSERT INTO {history} ({cols}, history_date, history_change_reason, "  # noqa: S608
                    f"history_type, history_user_id) SELECT {cols}, created_at, %s, '+', %s "
                    f"FROM {table} WHERE id >= %s",
                    [self.reason, user_id, self._start[table]],
                )
                self.stats.add(f"history:{table}", cursor.rowcount)
                if self.vendor == "postgresql":
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                        f"GREATEST((SELECT MAX(id) FROM {table}), 1))"
                    )

        if self.vendor == "postgresql":
            foreign_keys_restore(self._foreign_keys)
            # Fresh statistics, or the planner scans millions of rows it thinks are not there.
            # That includes the site terms every chart joins (tens of thousands after a seed).
            with connection.cursor() as cursor:
                for model in (*CLINICAL_MODELS, SiteTerm, TermMapping, Department):
                    cursor.execute(f"ANALYZE {model._meta.db_table}")

    def _ids(self, model: type[models.Model], n: int) -> np.ndarray:
        table = model._meta.db_table
        first = self._next[table]
        self._next[table] = first + n
        return np.arange(first, first + n, dtype=np.int64)

    # -- one site ------------------------------------------------------------------------------

    def write_site(self, cohort: SiteCohort) -> None:
        spec = cohort.spec
        site, _ = site_upsert(
            code=spec.code,
            name=spec.name,
            province=spec.province,
            tier=spec.tier,
            acting_user=self.acting_user,
            reason=self.reason,
        )
        if Patient.objects.filter(site=site).exists():
            raise ValidationFailed(
                f"Site {site.code} already has patients: seed an empty registry (or other "
                f"site codes); nothing was written."
            )
        departments = {
            name: department_get_or_create(site=site, name=name, acting_user=self.acting_user).pk
            for name in cohort.patients["department"].unique()
        }
        terms = self._terms(site, cohort.terms)
        common = {"site_id": site.pk}

        def term_ids(domain: str, words: pd.Series) -> np.ndarray:
            return words.map({w: ids[0] for w, ids in terms[domain].items()}).to_numpy()

        def concept_ids(domain: str, words: pd.Series) -> np.ndarray:
            return words.map({w: ids[1] for w, ids in terms[domain].items()}).to_numpy()

        p = cohort.patients
        patient_ids = self._ids(Patient, len(p))
        diag_day = (
            cohort.diagnoses.set_index("pidx")["diagnosis_date"].reindex(p["pidx"]).to_numpy()
        )
        patient_status = _status(diag_day)
        # The derived follow-up columns (as followup_summary_refresh computes them).
        fu = cohort.followups
        last_visit = fu.groupby("pidx")["followup_date"].max().reindex(p["pidx"]).to_numpy()
        closed = (fu["vital_status"].isin(["dead", "lost"]).groupby(fu["pidx"]).any()
                  .reindex(p["pidx"], fill_value=False).to_numpy(dtype=bool))
        self._write(
            Patient,
            pd.DataFrame(
                {
                    "id": patient_ids,
                    **common,
                    "status": patient_status,
                    "version": 1,
                    "created_at": _stamps(p["consent_date"]),
                    "updated_at": _stamps(p["consent_date"]),
                    "registry_id": p["registry_id"],
                    "department_id": p["department"].map(departments),
                    "hospital_number_hash": [
                        hospital_number_hash(spec.code, n) for n in p["patient_no"]
                    ],
                    "sex": p["sex"],
                    "birth_year": p["birth_year"],
                    "consent_scope": p["consent_scope"],
                    "consent_date": _dates(p["consent_date"]),
                    "withdrawn_date": _dates(p["withdrawn_date"]),
                    "last_followup_date": _dates(last_visit),
                    "followup_closed": closed,
                }
            ),
        )

        def patient_of(frame: pd.DataFrame) -> np.ndarray:
            return patient_ids[frame["pidx"].to_numpy()]

        def status_of(frame: pd.DataFrame) -> np.ndarray:
            return patient_status[frame["pidx"].to_numpy()]

        d = cohort.diagnoses
        self._write(
            Diagnosis,
            pd.DataFrame(
                {
                    "id": self._ids(Diagnosis, len(d)),
                    **common,
                    "status": status_of(d),
                    "version": 1,
                    "created_at": _stamps(d["diagnosis_date"]),
                    "updated_at": _stamps(d["diagnosis_date"]),
                    "patient_id": patient_of(d),
                    "diagnosis_date": _dates(d["diagnosis_date"]),
                    "cancer_term_id": term_ids("condition", d["cancer_word"]),
                    "cancer_id": concept_ids("condition", d["cancer_word"]),
                    "morphology_term_id": None,
                    "morphology_id": None,
                    "stage_system": d["stage_system"],
                    "stage_group": d["stage_group"],
                    "t": d["t"],
                    "n": d["n"],
                    "m": d["m"],
                    "ecog": d["ecog"].astype("Int64"),
                    "biomarkers": d["biomarkers"].map(biomarkers_json),
                }
            ),
        )

        lines = cohort.lines
        line_ids = self._ids(TreatmentLine, len(lines))
        self._write(
            TreatmentLine,
            pd.DataFrame(
                {
                    "id": line_ids,
                    **common,
                    "status": status_of(lines),
                    "version": 1,
                    "created_at": _stamps(lines["start_date"]),
                    "updated_at": _stamps(lines["start_date"]),
                    "patient_id": patient_of(lines),
                    "line_no": lines["line_no"],
                    "regimen_term_id": term_ids("regimen", lines["regimen_word"]),
                    "regimen_id": concept_ids("regimen", lines["regimen_word"]),
                    "intent": lines["intent"],
                    "start_date": _dates(lines["start_date"]),
                    "end_date": _dates(lines["end_date"]),
                }
            ),
        )
        line_key = pd.Series(line_ids, index=pd.MultiIndex.from_frame(lines[["pidx", "line_no"]]))

        c = cohort.cycles
        cycle_ids = self._ids(Cycle, len(c))
        self._write(
            Cycle,
            pd.DataFrame(
                {
                    "id": cycle_ids,
                    **common,
                    "status": status_of(c),
                    "version": 1,
                    "created_at": _stamps(c["start_date"]),
                    "updated_at": _stamps(c["start_date"]),
                    "patient_id": patient_of(c),
                    "line_id": line_key.reindex(
                        pd.MultiIndex.from_frame(c[["pidx", "line_no"]])
                    ).to_numpy(),
                    "cycle_no": c["cycle_no"],
                    "start_date": _dates(c["start_date"]),
                    "length_days": c["length_days"],
                    "bsa_m2": c["bsa"].map("{:.2f}".format),
                }
            ),
        )
        cycle_key = pd.Series(
            cycle_ids, index=pd.MultiIndex.from_frame(c[["pidx", "line_no", "cycle_no"]])
        )

        def cycle_of(frame: pd.DataFrame) -> pd.Series:
            key = pd.MultiIndex.from_frame(frame[["pidx", "line_no", "cycle_no"]].astype("Int64"))
            return pd.Series(cycle_key.reindex(key).to_numpy()).astype("Int64")

        cycle_start = pd.Series(c["start_date"].to_numpy(), index=cycle_key.index)
        g = cohort.drugs
        given = (
            cycle_start.reindex(
                pd.MultiIndex.from_frame(g[["pidx", "line_no", "cycle_no"]])
            ).to_numpy()
            + g["day"].to_numpy()
            - 1
        )
        self._write(
            DrugAdministration,
            pd.DataFrame(
                {
                    "id": self._ids(DrugAdministration, len(g)),
                    **common,
                    "status": status_of(g),
                    "version": 1,
                    "created_at": _stamps(given),
                    "updated_at": _stamps(given),
                    "patient_id": patient_of(g),
                    "cycle_id": cycle_of(g),
                    "day": g["day"],
                    "drug_term_id": term_ids("drug", g["drug_word"]),
                    "drug_id": concept_ids("drug", g["drug_word"]),
                    "dose": g["dose"].map("{:.3f}".format),
                    "dose_unit": g["dose_unit"],
                    "route": g["route"],
                    "purpose": g["purpose"],
                }
            ),
        )

        a = cohort.adverse_events
        self._write(
            AdverseEvent,
            pd.DataFrame(
                {
                    "id": self._ids(AdverseEvent, len(a)),
                    **common,
                    "status": status_of(a),
                    "version": 1,
                    "created_at": _stamps(a["onset_date"]),
                    "updated_at": _stamps(a["onset_date"]),
                    "patient_id": patient_of(a),
                    "ae_term_id": term_ids("adverse_event", a["term_word"]),
                    "ae_id": concept_ids("adverse_event", a["term_word"]),
                    "ctcae_version": "5.0",
                    "grade": a["grade"],
                    "onset_date": _dates(a["onset_date"]),
                    "resolved_date": _dates(a["resolved_date"]),
                    "serious": a["serious"].astype(bool),
                    "cycle_id": cycle_of(a),
                }
            ),
        )

        labs = cohort.labs
        canonical = labs["canonical_unit"].map(lambda code: self._concepts[("UCUM", code)])
        self._write(
            LabResult,
            pd.DataFrame(
                {
                    "id": self._ids(LabResult, len(labs)),
                    **common,
                    "status": status_of(labs),
                    "version": 1,
                    "created_at": _stamps(labs["collected_date"]),
                    "updated_at": _stamps(labs["collected_date"]),
                    "patient_id": patient_of(labs),
                    "test_term_id": term_ids("lab", labs["test_word"]),
                    "lab_id": concept_ids("lab", labs["test_word"]),
                    "collected_date": _dates(labs["collected_date"]),
                    "value_text": labs["value_text"],
                    "comparator": labs["comparator"],
                    "value": labs["value"],
                    "unit_term_id": term_ids("unit", labs["unit_word"]),
                    "unit_id": concept_ids("unit", labs["unit_word"]),
                    "value_canonical": labs["value_canonical"].round(6),
                    "canonical_unit_id": canonical,
                    "unit_flag": "",
                    "cycle_id": cycle_of(labs),
                }
            ),
        )

        f = cohort.followups
        self._write(
            FollowUp,
            pd.DataFrame(
                {
                    "id": self._ids(FollowUp, len(f)),
                    **common,
                    "status": status_of(f),
                    "version": 1,
                    "created_at": _stamps(f["followup_date"]),
                    "updated_at": _stamps(f["followup_date"]),
                    "patient_id": patient_of(f),
                    "followup_date": _dates(f["followup_date"]),
                    "vital_status": f["vital_status"],
                    "progression": f["progression"],
                    "progression_date": _dates(f["progression_date"]),
                    "ecog": f["ecog"].astype("Int64"),
                    "cause_of_death": f["cause_of_death"],
                }
            ),
        )

    def _terms(self, site, terms: pd.DataFrame) -> dict[str, dict[str, tuple[int, int]]]:
        """Site terms and their approved mappings (the generator knows each word's meaning)."""
        existing = {(t.domain, t.text): t for t in SiteTerm.objects.filter(site=site)}
        new = [
            SiteTerm(
                site=site,
                domain=row.domain,
                text=row.text,
                normalised=normalise_for_domain(row.domain, row.text),
                frequency=int(row.frequency),
            )
            for row in terms.itertuples()
            if (row.domain, row.text) not in existing
        ]
        for term in bulk_create_audited(
            SiteTerm, new, acting_user=self.acting_user, reason=self.reason
        ):
            existing[(term.domain, term.text)] = term
        if self.vendor != "postgresql":  # SQLite's bulk_create may not return ids
            existing = {(t.domain, t.text): t for t in SiteTerm.objects.filter(site=site)}
        approved = set(
            TermMapping.objects.filter(
                site_term__site=site, status=MappingStatus.APPROVED
            ).values_list("site_term_id", flat=True)
        )
        mappings = []
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for row in terms.itertuples():
            term = existing[(row.domain, row.text)]
            concept_id = self._concepts[(row.vocabulary, row.code)]
            out.setdefault(row.domain, {})[row.text] = (term.pk, concept_id)
            if term.pk not in approved:
                approved.add(term.pk)
                mappings.append(
                    TermMapping(
                        site_term=term,
                        concept_id=concept_id,
                        status=MappingStatus.APPROVED,
                        score=1.0,
                        method=TermMapping.Method.MANUAL,
                        reviewed_by=self.acting_user,
                        reviewed_at=dt.datetime.now(tz=dt.UTC),
                    )
                )
        bulk_create_audited(TermMapping, mappings, acting_user=self.acting_user, reason=self.reason)
        self.stats.add("site_terms", len(new))
        return out

    # -- writing -------------------------------------------------------------------------------

    def _write(self, model: type[models.Model], frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        columns = [f.column for f in model._meta.concrete_fields]
        for column in columns:
            if column not in frame:
                frame[column] = None  # e.g. import_batch_id: a seed is not an import
        frame = frame[columns]
        table = model._meta.db_table
        if self.vendor == "postgresql":
            copy_frame(table, columns, frame)
        else:
            insert_frame(table, columns, frame)
        self.stats.add(table, len(frame))


def foreign_keys_suspend(tables: list[str]) -> list[tuple[str, str, str]]:
    """Drop the foreign keys of `tables`, returning what restores them.

    PostgreSQL checks a foreign key row by row during COPY; re-adding the constraint after the
    load validates all rows in one join instead (the bulk-loading advice of PostgreSQL's
    manual). Both happen in the caller's transaction, so the constraints are never absent for
    anyone else, and a row that breaks one fails the whole load.
    """
    with connection.cursor() as cursor:
        # Deferred checks already queued in this transaction must run before an ALTER.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)",
            [tables],
        )
        keys = cursor.fetchall()
        for table, name, _ in keys:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return keys


def foreign_keys_restore(keys: list[tuple[str, str, str]]) -> None:
    with connection.cursor() as cursor:
        for table, name, definition in keys:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def copy_frame(table: str, columns: list[str], frame: pd.DataFrame) -> None:
    """COPY a frame into `table` through Django's connection (inside its transaction)."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="\\N")
    connection.ensure_connection()
    with (
        connection.connection.cursor() as cursor,
        cursor.copy(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        ) as copy,
    ):
        copy.write(buffer.getvalue())


def insert_frame(table: str, columns: list[str], frame: pd.DataFrame) -> None:
    rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
    placeholders = ", ".join(["%s"] * len(columns))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
            list(rows),
        )


def load_cohorts(
    cohorts: Iterable[SiteCohort],
    *,
    acting_user: User | None,
    reason: str,
    progress: Callable[[str], None] | None = None,
) -> LoadStats:
    """Load every site's cohort in one transaction; on any error nothing is written."""
    writer = CohortWriter(acting_user=acting_user, reason=reason, progress=progress)
    with transaction.atomic():
        writer.begin()
        for cohort in cohorts:
            writer.write_site(cohort)
            writer.progress(f"{cohort.spec.code}: {cohort.spec.n_patients} patients")
        writer.finish()
    return writer.stats
