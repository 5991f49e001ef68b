"""Write generated cohorts into the registry's tables, set-based.

Each site's rows are checked by the rulebook (hard rules refuse the load, soft rules open data
queries, as on an import) and written through the one bulk writer (registry.audit
`copy_frame_audited`: COPY with their history rows on PostgreSQL, executemany on SQLite), with
ids from the tables' sequences, all in one transaction: a failed run leaves nothing behind.
Sites, departments, site terms and mappings are few and go through the ordinary audited
services and bulk helpers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.contrib.auth.models import User
from django.db import connection, models, transaction

from registry.audit import bulk_create_audited, copy_frame_audited, ids_reserve
from registry.errors import ValidationFailed
from registry.kinds import CLINICAL_MODELS, kind_of
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
from registry.rules import Severity, allowed_grades_text, evaluate, rules_for
from registry.services.organisation import department_get_or_create, site_upsert
from registry.services.terminology import normalise_for_domain
from registry.services.workflow import queries_open_bulk
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
    return (epoch_dates(values) + pd.Timedelta(hours=2)).dt.tz_localize("UTC")


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
        self._staged: list[tuple[type[models.Model], pd.DataFrame]] = []
        self._concepts: dict[tuple[str, str], int] = {}
        self._foreign_keys: list[tuple[str, str, str]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def begin(self) -> None:
        self._concepts = {
            (v, c): pk for pk, v, c in Concept.objects.values_list("pk", "vocabulary__code", "code")
        }
        if not self._concepts:
            raise ValidationFailed("Load the starter vocabulary first (load_starter_vocabulary).")
        if self.vendor == "postgresql":
            self._foreign_keys = foreign_keys_suspend([m._meta.db_table for m in CLINICAL_MODELS])

    def finish(self) -> None:
        """Foreign keys back (validated over every loaded row at once), fresh statistics."""
        if self.vendor == "postgresql":
            foreign_keys_restore(self._foreign_keys)
            # Fresh statistics, or the planner scans millions of rows it thinks are not there.
            # That includes the site terms every chart joins (tens of thousands after a seed).
            with connection.cursor() as cursor:
                for model in (*CLINICAL_MODELS, SiteTerm, TermMapping, Department):
                    cursor.execute(f"ANALYZE {model._meta.db_table}")

    def _ids(self, model: type[models.Model], n: int) -> np.ndarray:
        return ids_reserve(model, n)

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
        self._check_and_write(site)

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
        """Stage one kind's rows; `_check_and_write` checks and writes the site's rows."""
        self._staged.append((model, frame))

    def _check_and_write(self, site) -> None:
        """The rulebook over the site's rows, then the rows through the one bulk writer.

        A hard rule broken by any row refuses the load (nothing is written: one transaction);
        a soft rule opens a data query on each row that breaks it, as an import does."""
        staged, self._staged = self._staged, []
        frames = {kind_of(model).name: frame for model, frame in staged}
        context = _RuleContext(frames, self._concepts_by_id(frames))
        soft = []
        for model, frame in staged:
            kind = kind_of(model).name
            checked = context.frame(kind, frame)
            violations, skipped = evaluate(kind, checked)
            if skipped:  # the loader must feed every rule; a new rule needs its context here
                raise RuntimeError(f"The cohort loader cannot feed rules {skipped}.")
            hard = violations[violations["severity"] == Severity.HARD.value]
            if not hard.empty:
                first = hard.iloc[0]
                raise ValidationFailed(
                    f"Site {site.code}: {len(hard)} {kind} rows break the rulebook, e.g. "
                    f"{first['code']}: {first['message']}; nothing was written.")
            flagged = violations[violations["severity"] == Severity.SOFT.value]
            if not flagged.empty:
                rows = frame.loc[flagged["row"]]
                soft.append((kind, pd.DataFrame({
                    "site_id": site.pk, "patient_id": rows["patient_id"].to_numpy(),
                    "record_id": rows["id"].to_numpy(), "field": flagged["field"].to_numpy(),
                    "text": flagged["message"].to_numpy()})))
        for model, frame in staged:
            recorded_at = frame.pop("created_at")
            frame = frame.drop(columns=["updated_at"])
            copy_frame_audited(model, frame, acting_user=self.acting_user, reason=self.reason,
                               recorded_at=recorded_at)
            self.stats.add(model._meta.db_table, len(frame))
            self.stats.add(f"history:{model._meta.db_table}", len(frame))
        for kind, flagged in soft:
            opened = queries_open_bulk(flagged, record_model=kind,
                                       acting_user=self.acting_user, reason=self.reason)
            self.stats.add("queries", opened)

    def _concepts_by_id(self, frames: dict[str, pd.DataFrame]) -> dict[int, Concept]:
        wanted = set()
        for kind, column in (("adverseevent", "ae_id"), ("labresult", "lab_id")):
            if kind in frames:
                wanted |= set(frames[kind][column].dropna().astype(int))
        return Concept.objects.in_bulk(wanted)


class _RuleContext:
    """The facts about a patient that rules read (``ctx_`` columns), from the site's frames:
    the loader writes a new site, so its frames are the whole record."""

    def __init__(self, frames: dict[str, pd.DataFrame], concepts: dict[int, Concept]) -> None:
        def day(series: pd.Series) -> pd.Series:
            return pd.to_datetime(series, errors="coerce")

        p, d = frames["patient"], frames["diagnosis"]
        self.birth = p.set_index("id")["birth_year"]
        self.first_dx = day(d["diagnosis_date"]).groupby(d["patient_id"].to_numpy()).min()
        f = frames["followup"]
        dead = f[f["vital_status"] == "dead"]
        self.death = day(dead["followup_date"]).groupby(dead["patient_id"].to_numpy()).min()
        c, lines = frames["cycle"], frames["treatmentline"]
        self.last_event = pd.concat([
            pd.Series(day(d["diagnosis_date"]).to_numpy(), index=d["patient_id"].to_numpy()),
            pd.Series(day(c["start_date"]).to_numpy(), index=c["patient_id"].to_numpy()),
        ]).groupby(level=0).max()
        self.line_start = pd.Series(day(lines["start_date"]).to_numpy(), index=lines["id"])
        self.grades = {pk: allowed_grades_text(x.allowed_grades()) for pk, x in concepts.items()}
        self.terms = {pk: x.name_en for pk, x in concepts.items()}
        self.low = {pk: x.attributes.get("reference_low") for pk, x in concepts.items()}
        self.high = {pk: x.attributes.get("reference_high") for pk, x in concepts.items()}

    def frame(self, kind: str, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        patient = frame["id"] if kind == "patient" else frame["patient_id"]
        wanted = {c for r in rules_for(kind) for c in r.columns if c.startswith("ctx_")}
        lookups = {
            "ctx_birth_year": lambda: patient.map(self.birth),
            "ctx_first_diagnosis_date": lambda: patient.map(self.first_dx),
            "ctx_death_date": lambda: patient.map(self.death),
            "ctx_last_event_date": lambda: patient.map(self.last_event),
            "ctx_line_start_date": lambda: frame["line_id"].map(self.line_start),
            "ctx_allowed_grades": lambda: frame["ae_id"].map(self.grades),
            "ctx_term": lambda: frame["ae_id"].map(self.terms),
            "ctx_reference_low": lambda: frame["lab_id"].map(self.low),
            "ctx_reference_high": lambda: frame["lab_id"].map(self.high),
        }
        for column in wanted & set(lookups):
            out[column] = lookups[column]().to_numpy()
        return out


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
