"""The bulk reader: a record kind (or the joined cohort) as a pandas frame, in one SQL query.

This is the one door through which risk models, releases, aggregates and the data-quality
dashboard read the clinical record in bulk. Rows are read set-based with PostgreSQL
``COPY (SELECT ...) TO STDOUT`` (streamed in chunks, never ORM row by row), scoped by sites, and
optionally as they stood at a snapshot time ``as_of``: for each id the latest history row with
``history_date <= as_of``, unless that row records the deletion.

Scope is never implied: pass the acting ``user`` (their visible sites, through
registry.access), or ``sites`` (an explicit list of site ids, or ALL_SITES for a system job that
reads the whole registry); both given means the sites of the list the user may see.

Besides the model's own columns (named as the model's field attnames: ``patient_id``,
``start_date``...), a frame carries the context columns that rules read (see CONTEXT_COLUMNS):
``ctx_birth_year``, ``ctx_first_diagnosis_date``, ``ctx_death_date`` (the first follow-up that
records death) for every kind, ``ctx_line_start_date`` for cycles and drugs,
``ctx_cycle_start_date`` for drugs, adverse events and labs (empty when not linked to a cycle),
``ctx_allowed_grades`` and ``ctx_term`` for adverse events (the grades the mapped CTCAE term
defines, its name; the site's word when not mapped), ``ctx_reference_low``/``_high`` for labs
(the mapped lab's reference range, in its canonical unit) and ``ctx_last_event_date`` (the last
diagnosis or cycle) for follow-ups. Context is taken from the same snapshot as the rows, so the
dashboard runs every rule of the rulebook (a test keeps it so).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Iterator, Sequence

import pandas as pd
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, models

from registry import access
from registry.kinds import KINDS
from registry.models import Concept, Cycle, Diagnosis, FollowUp, Patient, SiteTerm, TreatmentLine


class _AllSites:
    def __repr__(self) -> str:
        return "ALL_SITES"


# A system job's explicit scope: every site. (None is not accepted, so that forgetting the
# scope fails loudly instead of reading everything.)
ALL_SITES = _AllSites()

# The record kinds the reader serves, by name (the model's name: "labresult", "cycle", ...).
KIND_MODELS: dict[str, type[models.Model]] = {k.name: k.model for k in KINDS.values()}

_PATIENT_CONTEXT = ("ctx_birth_year", "ctx_first_diagnosis_date", "ctx_death_date")

# The context columns each kind's frame carries, for rules that look beyond their own row.
CONTEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": _PATIENT_CONTEXT,
    "diagnosis": _PATIENT_CONTEXT,
    "treatmentline": _PATIENT_CONTEXT,
    "cycle": (*_PATIENT_CONTEXT, "ctx_line_start_date"),
    "drugadministration": (*_PATIENT_CONTEXT, "ctx_cycle_start_date", "ctx_line_start_date"),
    "adverseevent": (*_PATIENT_CONTEXT, "ctx_cycle_start_date", "ctx_allowed_grades",
                     "ctx_term"),
    "labresult": (*_PATIENT_CONTEXT, "ctx_cycle_start_date", "ctx_reference_low",
                  "ctx_reference_high"),
    "followup": (*_PATIENT_CONTEXT, "ctx_last_event_date"),
}

# Every other context column is a date.
_CONTEXT_TYPES = {"ctx_birth_year": "int", "ctx_allowed_grades": "text", "ctx_term": "text",
                  "ctx_reference_low": "float", "ctx_reference_high": "float"}

# The cohort view: one row per patient with their first diagnosis and follow-up summary.
COHORT_COLUMNS: tuple[str, ...] = (
    "patient_id", "registry_id", "site_id", "status", "sex", "birth_year", "consent_scope",
    "consent_date", "withdrawn_date",
    "first_diagnosis_id", "first_diagnosis_date", "cancer_id", "cancer_term_id", "morphology_id",
    "stage_system", "stage_group", "t", "n", "m", "diagnosis_ecog", "diagnosis_count",
    "followup_count", "last_followup_date", "last_vital_status", "death_date",
    "first_progression_date", "line_count", "first_line_start_date",
)
_COHORT_TYPES = {
    "patient_id": "int", "site_id": "int", "birth_year": "int", "consent_date": "date",
    "withdrawn_date": "date", "first_diagnosis_id": "int", "first_diagnosis_date": "date",
    "cancer_id": "int", "cancer_term_id": "int", "morphology_id": "int", "diagnosis_ecog": "int",
    "diagnosis_count": "int", "followup_count": "int", "last_followup_date": "date",
    "death_date": "date", "first_progression_date": "date", "line_count": "int",
    "first_line_start_date": "date",
}

_NULL = r"\N"
_CHUNK_BYTES = 1 << 20


class UnknownKind(ValueError):
    pass


def _model(kind: str) -> type[models.Model]:
    try:
        return KIND_MODELS[kind]
    except KeyError:
        raise UnknownKind(f"Unknown record kind {kind!r}; known: {', '.join(KIND_MODELS)}.") \
            from None


def _type_of(field: models.Field) -> str:
    if isinstance(field, models.DateTimeField):
        return "datetime"
    if isinstance(field, models.DateField):
        return "date"
    if isinstance(field, models.BooleanField):
        return "bool"
    if isinstance(field, models.ForeignKey | models.AutoField | models.BigAutoField
                  | models.IntegerField | models.SmallIntegerField
                  | models.PositiveIntegerField | models.PositiveSmallIntegerField):
        return "int"
    if isinstance(field, models.FloatField | models.DecimalField):
        return "float"
    return "text"


def model_columns(model: type[models.Model], *, as_of: dt.datetime | None = None
                  ) -> dict[str, str]:
    """The model's columns the reader returns (attname: type); with `as_of`, only those the
    history table keeps (fields excluded from history cannot be reconstructed)."""
    fields = {f.attname: _type_of(f) for f in model._meta.concrete_fields}
    if as_of is not None:
        kept = {f.attname for f in model.history.model._meta.concrete_fields}
        fields = {name: kind for name, kind in fields.items() if name in kept}
    return fields


def _resolve_sites(user: User | AnonymousUser | None, sites) -> list[int] | None:
    """The site ids to read (None: every site)."""
    if user is None and sites is None:
        raise ValueError("Give the acting user or the sites to read (ALL_SITES for every site).")
    wanted = None if sites is None or sites is ALL_SITES else sorted({int(s) for s in sites})
    if user is None:
        return wanted
    visible = access.site_ids_for(user)
    if visible is None:
        return wanted
    return visible if wanted is None else sorted(set(visible) & set(wanted))


# Identifiers in the SQL below come from model metadata (and requested columns are checked
# against it); every value is a bound parameter.
def _snapshot(model: type[models.Model], columns: Iterable[str], *, as_of, sites,
              params: list, patients: Sequence[int] | None = None) -> str:
    """SQL of `model`'s rows (current, or as they stood at `as_of`) at `sites` (and of
    `patients`, when given); appends its parameters to `params` in order."""
    cols = ", ".join(f'"{c}"' for c in columns)
    filters: list[tuple[str, list[int]]] = []
    if sites is not None:
        filters.append(("site_id", list(sites)))
    if patients is not None:
        filters.append(("id" if model is Patient else "patient_id", list(patients)))
    if as_of is None:
        sql = f"SELECT {cols} FROM {model._meta.db_table}"  # noqa: S608
        where = []
    else:
        history = model.history.model._meta.db_table
        # The site is filtered after the latest version is found: a row's site is the one it
        # had at `as_of`, not one it had before.
        params.append(as_of)
        extra = [f'"{c}"' for c, _ in filters if f'"{c}"' not in cols.split(", ")]
        inner = ", ".join([cols, *extra])
        sql = (f"SELECT {cols} FROM (SELECT DISTINCT ON (id) {inner}, history_type FROM {history}"  # noqa: S608
               f" WHERE history_date <= %s ORDER BY id, history_date DESC, history_id DESC) h")
        where = ["history_type <> '-'"]
    for column, values in filters:
        where.append(f'"{column}" = ANY(%s)')
        params.append(values)
    return sql + (" WHERE " + " AND ".join(where) if where else "")


# How each type crosses the wire: dates as days since 1970, times as microseconds (exact in a
# float64 until the year 2255), booleans as 0/1,
# so pandas parses numbers (fast, in C) instead of text it must then convert.
_WIRE = {
    "date": "(q.\"{c}\" - DATE '1970-01-01')",
    "datetime": "(extract(epoch FROM q.\"{c}\") * 1000000)::bigint",
    "bool": "q.\"{c}\"::int",
}


def _outer_sql(sql: str, types: dict[str, str]) -> str:
    outer = ", ".join(
        f'{_WIRE[kind].format(c=name)} AS "{name}"' if kind in _WIRE else f'q."{name}"'
        for name, kind in types.items())
    return f"SELECT {outer} FROM ({sql}) q"  # noqa: S608 (names from the models, never input)


def _copy_frame(sql: str, params: Sequence, types: dict[str, str]) -> pd.DataFrame:
    """Run `sql` (its rows in their order) through COPY TO STDOUT and read it with pandas."""
    connection.ensure_connection()
    buffer = io.BytesIO()
    with connection.connection.cursor() as cursor:
        statement = (f"COPY ({_outer_sql(sql, types)}) TO STDOUT WITH (FORMAT csv, HEADER, "
                     f"NULL '{_NULL}')")
        with cursor.copy(statement, params) as copy:
            for chunk in copy:
                buffer.write(chunk)
    buffer.seek(0)
    return _parse(buffer, types)


def _copy_chunks(sql: str, params: Sequence, types: dict[str, str], *, chunk_bytes: int
                 ) -> Iterator[pd.DataFrame]:
    """Like _copy_frame, yielding a frame each time about `chunk_bytes` of whole rows arrived.
    (Rows are cut at a newline outside quotes: text values can hold newlines.)"""
    connection.ensure_connection()
    parts: list[bytes] = []
    size = 0
    yielded = False
    with connection.connection.cursor() as cursor:
        statement = (f"COPY ({_outer_sql(sql, types)}) TO STDOUT WITH (FORMAT csv, HEADER, "
                     f"NULL '{_NULL}')")
        with cursor.copy(statement, params) as copy:
            header = bytes(next(iter(copy), b""))  # COPY sends the header as its first row
            for chunk in copy:
                parts.append(chunk)
                size += len(chunk)
                if size >= chunk_bytes:
                    data = b"".join(parts)
                    cut = _last_row_end(data)
                    if cut > 0:
                        yield _parse(io.BytesIO(header + data[:cut]), types)
                        yielded = True
                        data = data[cut:]
                    parts, size = [data], len(data)
    rest = b"".join(parts)
    if rest or not yielded:  # the rest; an empty frame when there were no rows at all
        yield _parse(io.BytesIO((header or (",".join(types) + "\n").encode()) + rest), types)


def _last_row_end(data: bytes) -> int:
    """The offset just after the last newline that ends a row (an even number of quotes
    before it), or 0."""
    end = data.rfind(b"\n")
    while end >= 0:
        if data.count(b'"', 0, end) % 2 == 0:
            return end + 1
        end = data.rfind(b"\n", 0, end)
    return 0


def _parse(buffer: io.BytesIO, types: dict[str, str]) -> pd.DataFrame:
    # Numbers are parsed as float64 (pandas' fast path) and integers made Int64 after.
    read_types = {name: object if kind == "text" else "float64" for name, kind in types.items()}
    frame = pd.read_csv(buffer, dtype=read_types, na_values=[_NULL], keep_default_na=False,
                        engine="c")
    for name, kind in types.items():
        if kind == "int":
            frame[name] = frame[name].astype("Int64")
        elif kind == "date":
            frame[name] = pd.to_datetime(frame[name], unit="D").astype("datetime64[s]")
        elif kind == "datetime":
            frame[name] = pd.to_datetime(frame[name].astype("Int64"), unit="us", utc=True)
        elif kind == "bool":
            frame[name] = frame[name].map({1.0: True, 0.0: False}).astype("boolean")
        elif kind == "text":  # NULL is None, "" stays ""
            frame[name] = frame[name].where(frame[name].notna(), None)
    return frame


# A JSON attribute of a concept as a number (a number, or a string holding one; else NULL).
def _json_number(attributes: str, key: str) -> str:
    value = f"{attributes}->'{key}'"
    return (f"CASE WHEN jsonb_typeof({value}) = 'number' THEN ({attributes}->>'{key}')::float8 "
            f"WHEN jsonb_typeof({value}) = 'string' AND btrim({attributes}->>'{key}') "
            f"~ '^[-+]?[0-9]+(\\.[0-9]+)?$' THEN btrim({attributes}->>'{key}')::float8 END")


# The grades a CTCAE term defines ("1, 2, 3"), as rules.allowed_grades_text writes them.
_ALLOWED_GRADES = (
    "(SELECT string_agg(g::text, ', ' ORDER BY g) FROM (SELECT DISTINCT btrim(k)::int AS g "
    "FROM jsonb_object_keys(CASE WHEN jsonb_typeof(attributes->'grades') = 'object' "
    "THEN attributes->'grades' END) k WHERE btrim(k) ~ '^[0-9]+$') gs)")


def _context_sql(kind: str, wanted: Sequence[str], *, as_of, sites, params: list,
                 patients: Sequence[int] | None = None
                 ) -> tuple[list[str], list[str], list[str], list[str]]:
    """The WITH clauses, joins and select items that add the context columns `wanted` to a
    kind's rows `r`, and the row's own columns the joins read."""
    patient_key = "r.id" if kind == "patient" else "r.patient_id"
    specs: dict[str, tuple[type[models.Model], list[str], bool]] = {}
    joins, selects, keys = [], [], []
    derived: dict[str, str] = {}  # CTEs computed from the CTEs above, once per row of theirs

    def cte(name: str, model, columns, scoped: bool = True) -> None:
        """Read `model`'s `columns` as CTE `name` (defined once, with every column asked);
        a patient's records are scoped as the rows are, the shared vocabulary is not."""
        known = specs.get(name, (model, [], scoped))[1]
        specs[name] = (model, list(dict.fromkeys([*known, *columns])), scoped)

    if kind != "patient":
        keys.append("patient_id")
    if "ctx_birth_year" in wanted:
        cte("ctx_p", Patient, ["id", "birth_year"])
        joins.append(f"LEFT JOIN ctx_p ON ctx_p.id = {patient_key}")
        selects.append("ctx_p.birth_year AS ctx_birth_year")
    if "ctx_first_diagnosis_date" in wanted:
        cte("ctx_d", Diagnosis, ["patient_id", "diagnosis_date", "site_id"])
        joins.append("LEFT JOIN (SELECT patient_id, min(diagnosis_date) AS first FROM ctx_d "  # noqa: S608
                     f"GROUP BY patient_id) ctx_fd ON ctx_fd.patient_id = {patient_key}")
        selects.append("ctx_fd.first AS ctx_first_diagnosis_date")
    if "ctx_death_date" in wanted:
        cte("ctx_f", FollowUp, ["patient_id", "followup_date", "vital_status", "site_id"])
        joins.append("LEFT JOIN (SELECT patient_id, min(followup_date) AS death FROM ctx_f "  # noqa: S608
                     "WHERE vital_status = 'dead' GROUP BY patient_id) ctx_dd "
                     f"ON ctx_dd.patient_id = {patient_key}")
        selects.append("ctx_dd.death AS ctx_death_date")
    if "ctx_last_event_date" in wanted:
        # The last diagnosis or cycle, as the form's and the import's facts take it.
        cte("ctx_d", Diagnosis, ["patient_id", "diagnosis_date", "site_id"])
        cte("ctx_c", Cycle, ["id", "patient_id", "start_date", "site_id"])
        joins.append("LEFT JOIN (SELECT patient_id, max(day) AS last FROM ("  # noqa: S608
                     "SELECT patient_id, diagnosis_date AS day FROM ctx_d UNION ALL "
                     "SELECT patient_id, start_date FROM ctx_c) events GROUP BY patient_id) "
                     f"ctx_le ON ctx_le.patient_id = {patient_key}")
        selects.append("ctx_le.last AS ctx_last_event_date")
    needs_cycle = "ctx_cycle_start_date" in wanted or (
        kind == "drugadministration" and "ctx_line_start_date" in wanted)
    if needs_cycle:
        cte("ctx_c", Cycle, ["id", "line_id", "start_date", "site_id"])
        joins.append("LEFT JOIN ctx_c AS ctx_rc ON ctx_rc.id = r.cycle_id")
        keys.append("cycle_id")
        if "ctx_cycle_start_date" in wanted:
            selects.append("ctx_rc.start_date AS ctx_cycle_start_date")
    if "ctx_line_start_date" in wanted:
        cte("ctx_l", TreatmentLine, ["id", "start_date", "site_id"])
        if kind == "drugadministration":
            line_key = "ctx_rc.line_id"
        else:
            line_key = "r.line_id"
            keys.append("line_id")
        joins.append(f"LEFT JOIN ctx_l ON ctx_l.id = {line_key}")
        selects.append("ctx_l.start_date AS ctx_line_start_date")
    # The meanings of the row's words, from the standard concepts (shared by every site) and
    # the site's own words: a word not mapped yet has no grades and no reference range.
    if {"ctx_allowed_grades", "ctx_term"} & set(wanted):
        cte("ctx_ae", Concept, ["id", "name_en", "attributes"], scoped=False)
        # Worked out once per concept (materialised), not once per event.
        derived["ctx_aec"] = f"SELECT id, name_en, {_ALLOWED_GRADES} AS grades FROM ctx_ae"  # noqa: S608
        joins.append("LEFT JOIN ctx_aec ON ctx_aec.id = r.ae_id")
        keys.append("ae_id")
        if "ctx_allowed_grades" in wanted:
            selects.append("ctx_aec.grades AS ctx_allowed_grades")
        if "ctx_term" in wanted:
            cte("ctx_t", SiteTerm, ["id", "text"], scoped=False)
            joins.append("LEFT JOIN ctx_t ON ctx_t.id = r.ae_term_id")
            keys.append("ae_term_id")
            selects.append("coalesce(ctx_aec.name_en, ctx_t.text) AS ctx_term")
    if {"ctx_reference_low", "ctx_reference_high"} & set(wanted):
        cte("ctx_lab", Concept, ["id", "attributes"], scoped=False)
        # Worked out once per concept (materialised), not once per lab value.
        low, high = (_json_number("attributes", f"reference_{b}") for b in ("low", "high"))
        derived["ctx_labr"] = f"SELECT id, {low} AS low, {high} AS high FROM ctx_lab"  # noqa: S608
        joins.append("LEFT JOIN ctx_labr ON ctx_labr.id = r.lab_id")
        keys.append("lab_id")
        for bound in ("low", "high"):
            if f"ctx_reference_{bound}" in wanted:
                selects.append(f"ctx_labr.{bound} AS ctx_reference_{bound}")
    ctes = []
    for name, (model, columns, scoped) in specs.items():
        body = _snapshot(model, columns, as_of=as_of, params=params,
                         sites=sites if scoped else None, patients=patients if scoped else None)
        ctes.append(f"{name} AS ({body})")
    ctes += [f"{name} AS MATERIALIZED ({body})" for name, body in derived.items()]
    return ctes, joins, selects, keys


def records_frame(kind: str, *, user: User | AnonymousUser | None = None, sites=None,
                  as_of: dt.datetime | None = None, columns: Iterable[str] | None = None,
                  patients: Iterable[int] | None = None) -> pd.DataFrame:
    """The rows of record kind `kind` as a frame, one SQL query.

    `columns` chooses among the model's columns and the kind's CONTEXT_COLUMNS (default: all
    of both); an unknown column is a ValueError naming it. `id` and `site_id` are always read.
    `patients` (patient ids) narrows the rows, and the context read for them, to those
    patients' records (within the scope of `user`/`sites`): a form's recheck of one patient.
    Dates are datetime64[s], booleans the nullable "boolean" dtype, integers "Int64".
    """
    sql, params, types = _records_sql(kind, user=user, sites=sites, as_of=as_of,
                                      columns=columns, patients=patients)
    return _copy_frame(sql, params, types)


def records_chunks(kind: str, *, user: User | AnonymousUser | None = None, sites=None,
                   as_of: dt.datetime | None = None, columns: Iterable[str] | None = None,
                   patients: Iterable[int] | None = None,
                   chunk_bytes: int = 64 << 20) -> Iterator[pd.DataFrame]:
    """The frame records_frame returns, as consecutive frames of about `chunk_bytes` of rows
    each (in id order), read from one streamed COPY: memory holds one chunk, never the whole
    kind. For exports of the whole cohort (releases)."""
    sql, params, types = _records_sql(kind, user=user, sites=sites, as_of=as_of,
                                      columns=columns, patients=patients)
    yield from _copy_chunks(sql, params, types, chunk_bytes=chunk_bytes)


def copy_sql(kind: str, **options) -> tuple[str, list]:
    """The statement and parameters of `COPY (records query) TO STDOUT` for `kind`: what
    benchmarks time the reader against."""
    sql, params, types = _records_sql(kind, **options)
    return (f"COPY ({_outer_sql(sql, types)}) TO STDOUT WITH (FORMAT csv, HEADER, "
            f"NULL '{_NULL}')"), list(params)


def _records_sql(kind: str, *, user=None, sites=None, as_of=None, columns=None, patients=None
                 ) -> tuple[str, list, dict[str, str]]:
    model = _model(kind)
    site_ids = _resolve_sites(user, sites)
    patient_ids = None if patients is None else sorted({int(p) for p in patients})
    own = model_columns(model, as_of=as_of)
    context = CONTEXT_COLUMNS[kind]
    if columns is None:
        wanted_own, wanted_context = list(own), list(context)
    else:
        columns = list(dict.fromkeys(columns))
        unknown = [c for c in columns if c not in own and c not in context]
        if unknown:
            raise ValueError(f"{kind} has no column {', '.join(unknown)}.")
        wanted_own = list(dict.fromkeys(["id", "site_id", *[c for c in columns if c in own]]))
        wanted_context = [c for c in columns if c in context]
    params: list = []
    ctes, joins, selects, keys = _context_sql(kind, wanted_context, as_of=as_of,
                                              sites=site_ids, params=params,
                                              patients=patient_ids)
    # The join keys the context needs are read even when the caller did not ask for them.
    keys = [k for k in keys if k in own] if wanted_context else []
    rows = _snapshot(model, list(dict.fromkeys([*wanted_own, *keys])), as_of=as_of,
                     sites=site_ids, params=params, patients=patient_ids)
    select = ", ".join([*(f'r."{c}"' for c in wanted_own), *selects])
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    sql = f"{with_clause}SELECT {select} FROM ({rows}) r {' '.join(joins)} ORDER BY r.id"  # noqa: S608
    types = {c: own[c] for c in wanted_own}
    types.update({c: _CONTEXT_TYPES.get(c, "date") for c in wanted_context})
    return sql, params, types


def cohort_frame(*, user: User | AnonymousUser | None = None, sites=None,
                 as_of: dt.datetime | None = None) -> pd.DataFrame:
    """One row per patient: the patient, their first diagnosis (earliest date, then lowest id)
    and their follow-up summary (count, last visit and its vital status, first death date,
    first progression date) and lines (count, first start), one SQL query, same scoping and
    snapshot rules as records_frame."""
    site_ids = _resolve_sites(user, sites)
    params: list = []
    p = _snapshot(Patient, ["id", "registry_id", "site_id", "status", "sex", "birth_year",
                            "consent_scope", "consent_date", "withdrawn_date"],
                  as_of=as_of, sites=site_ids, params=params)
    d = _snapshot(Diagnosis, ["id", "patient_id", "diagnosis_date", "cancer_id", "cancer_term_id",
                              "morphology_id", "stage_system", "stage_group", "t", "n", "m",
                              "ecog", "site_id"], as_of=as_of, sites=site_ids, params=params)
    f = _snapshot(FollowUp, ["id", "patient_id", "followup_date", "vital_status",
                             "progression_date", "site_id"], as_of=as_of, sites=site_ids,
                  params=params)
    t = _snapshot(TreatmentLine, ["id", "patient_id", "start_date", "site_id"], as_of=as_of,
                  sites=site_ids, params=params)
    sql = f"""
        WITH p AS ({p}), d AS ({d}), f AS ({f}), t AS ({t}),
        fd AS (SELECT DISTINCT ON (patient_id) * FROM d ORDER BY patient_id, diagnosis_date, id),
        dc AS (SELECT patient_id, count(*) AS n FROM d GROUP BY patient_id),
        fs AS (SELECT patient_id, count(*) AS n, max(followup_date) AS last,
                      min(followup_date) FILTER (WHERE vital_status = 'dead') AS death,
                      min(progression_date) AS progression FROM f GROUP BY patient_id),
        fl AS (SELECT DISTINCT ON (patient_id) patient_id, vital_status FROM f
               ORDER BY patient_id, followup_date DESC, id DESC),
        ts AS (SELECT patient_id, count(*) AS n, min(start_date) AS first FROM t
               GROUP BY patient_id)
        SELECT p.id AS patient_id, p.registry_id, p.site_id, p.status, p.sex, p.birth_year,
               p.consent_scope, p.consent_date, p.withdrawn_date,
               fd.id AS first_diagnosis_id, fd.diagnosis_date AS first_diagnosis_date,
               fd.cancer_id, fd.cancer_term_id, fd.morphology_id, fd.stage_system,
               fd.stage_group, fd.t, fd.n, fd.m, fd.ecog AS diagnosis_ecog,
               coalesce(dc.n, 0) AS diagnosis_count, coalesce(fs.n, 0) AS followup_count,
               fs.last AS last_followup_date, fl.vital_status AS last_vital_status,
               fs.death AS death_date, fs.progression AS first_progression_date,
               coalesce(ts.n, 0) AS line_count, ts.first AS first_line_start_date
        FROM p LEFT JOIN fd ON fd.patient_id = p.id LEFT JOIN dc ON dc.patient_id = p.id
        LEFT JOIN fs ON fs.patient_id = p.id LEFT JOIN fl ON fl.patient_id = p.id
        LEFT JOIN ts ON ts.patient_id = p.id
        ORDER BY p.id"""  # noqa: S608
    types = {c: _COHORT_TYPES.get(c, "text") for c in COHORT_COLUMNS}
    return _copy_frame(sql, params, types)


__all__ = [
    "ALL_SITES", "COHORT_COLUMNS", "CONTEXT_COLUMNS", "KIND_MODELS", "UnknownKind",
    "cohort_frame", "copy_sql", "model_columns", "records_chunks", "records_frame",
]
