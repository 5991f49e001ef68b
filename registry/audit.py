"""Writes that leave an audit row: who, when, what changed, and why.

django-simple-history records a row per save() and delete(), taking the user and reason from
attributes set on the instance. It does not see bulk_create/bulk_update, so bulk paths use the
functions here, which write the history rows in the same transaction.

Every history row names a user and a reason. A reason is required here; a write with no acting
user (a management command, a Celery task, a loader run by an operator) is recorded as the
named system account (`SYSTEM_USERNAME`), never as nobody, so the trail reads
"system: starter vocabulary" rather than an empty user.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.db.models import ForeignKey, IntegerField, Model
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from registry.errors import ValidationFailed

# The account unattended jobs write as. It cannot log in (inactive, no usable password).
SYSTEM_USERNAME = "system"


def system_user() -> User:
    """The system account, created on first use (idempotent, safe under concurrent callers)."""
    user, _ = User.objects.get_or_create(
        username=SYSTEM_USERNAME,
        defaults={"is_active": False, "password": make_password(None),
                  "first_name": "System", "last_name": "(unattended jobs)"},
    )
    return user


def version_bump(obj: Model) -> int:
    """Count one more change of a versioned record (in memory; the caller saves it). The only
    place a version moves: the no-lost-update check of an edit and the audit's "changed since
    version N" rely on every change counting exactly one."""
    obj.version += 1
    return obj.version


# The same step for a set of rows in SQL (the target table aliased `t`), used by set-based
# writers: one change, one more version.
VERSION_BUMP_SQL = "version = t.version + 1"


def history_user(acting_user: User | None) -> User:
    """Who a history row names: the acting user, else the system account."""
    return acting_user if acting_user is not None else system_user()


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("A reason for the change is required.", field="reason")
    return reason


def audited_save(obj: Model, *, acting_user: User | None, reason: str) -> Model:
    obj._change_reason = _require_reason(reason)
    obj._history_user = history_user(acting_user)
    obj.save()
    return obj


def audited_delete(obj: Model, *, acting_user: User | None, reason: str) -> None:
    obj._change_reason = _require_reason(reason)
    obj._history_user = history_user(acting_user)
    obj.delete()


def bulk_create_audited(
    model: type[Model],
    objs: Sequence[Model],
    *,
    acting_user: User | None,
    reason: str,
    batch_size: int = 2000,
) -> list[Model]:
    return bulk_create_with_history(
        list(objs),
        model,
        batch_size=batch_size,
        default_change_reason=_require_reason(reason),
        default_user=history_user(acting_user),
    )


def bulk_update_audited(
    model: type[Model],
    objs: Sequence[Model],
    fields: Sequence[str],
    *,
    acting_user: User | None,
    reason: str,
    batch_size: int = 2000,
) -> int:
    return bulk_update_with_history(
        list(objs),
        model,
        list(fields),
        batch_size=batch_size,
        default_change_reason=_require_reason(reason),
        default_user=history_user(acting_user),
    )


def history_columns(model: type[Model]) -> list[str]:
    """The model's columns that its history table records (derived columns are excluded)."""
    recorded = {f.column for f in model.history.model._meta.concrete_fields}
    return [f.column for f in model._meta.concrete_fields if f.column in recorded]


def ids_reserve(model: type[Model], n: int) -> np.ndarray:
    """`n` new ids for `model`'s table from its sequence (PostgreSQL's serial sequence, SQLite's
    AUTOINCREMENT counter), so concurrent writers never collide and a frame's children can name
    their parents before anything is written."""
    from django.db import connection

    if n == 0:
        return np.empty(0, dtype=np.int64)
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "  # noqa: S608
                "FROM generate_series(1, %s)", [n])
            return np.fromiter((row[0] for row in cursor.fetchall()), dtype=np.int64, count=n)
        # SQLite: Django's tables use AUTOINCREMENT, whose counter lives in sqlite_sequence.
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608
        highest = cursor.fetchone()[0]
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
        row = cursor.fetchone()
        first = max(highest, row[0] if row else 0) + 1
        if row:
            cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = %s",
                           [first + n - 1, table])
        else:
            cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)",
                           [table, first + n - 1])
        return np.arange(first, first + n, dtype=np.int64)


def copy_frame_audited(
    model: type[Model],
    frame: pd.DataFrame,
    *,
    acting_user: User | None,
    reason: str,
    recorded_at: pd.Series | None = None,
) -> list[int]:
    """The bulk writer: insert new rows given as a frame of {attname: column}, with their
    history rows from the same values, in the caller's transaction. Every path that writes
    clinical rows in bulk (the import, the cohort loader, automatic queries) comes through here.

    Ids are the frame's `id` column if it has one (reserved with `ids_reserve`), else taken
    from the table's sequence. Fields not given take their defaults. The time the rows were
    recorded (auto timestamps and the history rows' date) is now, or `recorded_at` per row for
    records loaded with their original entry time. On PostgreSQL both tables are filled by
    COPY; elsewhere (the embedded SQLite demo) by executemany. Returns the ids in frame order.
    """
    from django.db import connection
    from django.utils import timezone

    reason = _require_reason(reason)
    if frame.empty:
        return []
    acting_user = history_user(acting_user)
    table = model._meta.db_table
    n = len(frame)
    pk = model._meta.pk.attname
    ids = (frame[pk].to_numpy(dtype=np.int64) if pk in frame else ids_reserve(model, n))
    if recorded_at is None:
        stamps = pd.Series(timezone.now(), index=frame.index)
    else:
        stamps = pd.Series(pd.to_datetime(recorded_at, utc=True).to_numpy(), index=frame.index)
    columns = {}
    for f in model._meta.concrete_fields:
        if f.attname == pk:
            values = pd.Series(ids, index=frame.index)
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            values = stamps
        elif f.attname in frame:
            values = frame[f.attname]
        elif callable(f.default):  # e.g. a fresh registry id per row
            values = pd.Series([f.get_default() for _ in range(n)], index=frame.index,
                               dtype=object)
        else:
            values = pd.Series([f.get_default()] * n, index=frame.index, dtype=object)
        if f.get_internal_type() == "JSONField":
            values = values.map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
        elif isinstance(f, IntegerField | ForeignKey) and values.dtype != "Int64":
            values = values.astype(object).where(values.notna(), None).astype("Int64")
        columns[f.column] = values
    history = {
        "history_date": stamps,
        "history_change_reason": pd.Series(reason, index=frame.index),
        "history_type": pd.Series("+", index=frame.index),
        "history_user_id": pd.Series(acting_user.pk, index=frame.index)}
    recorded = history_columns(model)
    if connection.vendor == "postgresql":
        # Each column turned to COPY text once, for the table and its history rows alike.
        text = {column: copy_text(values) for column, values in columns.items()}
        _copy(table, text)
        _copy(model.history.model._meta.db_table, {
            **{column: text[column] for column in recorded},
            **{column: copy_text(values) for column, values in history.items()}})
    else:
        _insert(table, columns)
        _insert(model.history.model._meta.db_table,
                {**{column: columns[column] for column in recorded}, **history})
    return ids.tolist()


def _insert(table: str, columns: dict[str, pd.Series]) -> None:
    """executemany of columns, each value as the database driver takes it (the SQLite path)."""
    from django.db import connection

    def plain(value):
        if value is None or (not isinstance(value, list | dict) and pd.isna(value)):
            return None
        if isinstance(value, dt.datetime):  # Django keeps SQLite's times as naive UTC text
            if value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return value.isoformat(sep=" ")
        if isinstance(value, np.generic):
            return value.item()
        return value

    rows = zip(*(map(plain, values.tolist()) for values in columns.values()), strict=True)
    placeholders = ", ".join(["%s"] * len(columns))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
            list(rows))


def _copy(table: str, columns: dict[str, list[str]]) -> None:
    """COPY columns of text-format fields (see `copy_text`) into `table` on Django's
    connection, inside the caller's transaction."""
    from django.db import connection

    body = "".join(f"{line}\n" for line in map("\t".join, zip(*columns.values(), strict=True)))
    connection.ensure_connection()
    with connection.connection.cursor() as cursor, cursor.copy(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    ) as copy:
        copy.write(body)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text_value(value) -> str:
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, bool | np.bool_):
        return "t" if value else "f"
    if isinstance(value, dt.datetime | pd.Timestamp):
        return value.isoformat(sep=" ")
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value).translate(_ESCAPES)


def copy_text(series: pd.Series) -> list[str]:
    """A column as COPY text-format fields (NULL is \\N; backslashes and control characters
    escaped), converting each distinct value once."""
    missing = series.isna().to_numpy()
    out = np.full(len(series), "\\N", dtype=object)
    present = series[~missing]
    if present.empty:
        return out.tolist()
    if present.dtype.kind in "iu" or str(present.dtype) == "Int64":
        out[~missing] = present.astype("int64").astype(str).to_numpy()
    else:
        mapping = {v: _text_value(v) for v in present.unique()}
        out[~missing] = present.map(mapping).to_numpy()
    return out.tolist()


def update_audited(
    model: type[Model],
    *,
    assignments: str,
    where: str,
    acting_user: User | None,
    reason: str,
    set_params: Sequence = (),
    where_params: Sequence = (),
    from_sql: str = "",
    from_params: Sequence = (),
) -> int:
    """One set-based UPDATE of `model`'s table (aliased `t`) and, in the same statement, the
    history row of every row it changed, as django-simple-history writes for a save(): the
    row's new values, history_type "~", the acting user (else the system account), the
    reason and the time of the statement (as `timezone.now()`, not the transaction's start).
    Auto-updated timestamps take the same time, as save() sets them.

    `assignments` is the SET list (e.g. "drug_id = %s, " + VERSION_BUMP_SQL),
    `from_sql` an optional FROM clause and `where` the condition, each with its own
    parameters. Returns the number of rows changed. PostgreSQL only (a data-modifying WITH)."""
    from django.db import connection
    from django.utils import timezone

    reason = _require_reason(reason)
    user = history_user(acting_user)
    now = timezone.now()
    table = model._meta.db_table
    history = model.history.model._meta.db_table
    columns = ", ".join(history_columns(model))
    stamped = [f.column for f in model._meta.concrete_fields if getattr(f, "auto_now", False)]
    stamps = "".join(f", {column} = %s" for column in stamped)
    # Table and column names come from the model; values are always bound parameters.
    sql = (
        f"WITH changed AS (UPDATE {table} AS t SET {assignments}{stamps} {from_sql} "  # noqa: S608
        f"WHERE {where} RETURNING t.*) "
        f"INSERT INTO {history} ({columns}, history_date, history_change_reason, "
        f"history_type, history_user_id) "
        f"SELECT {columns}, %s, %s, '~', %s FROM changed"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*set_params, *[now] * len(stamped), *from_params, *where_params,
                             now, reason, user.pk])
        return cursor.rowcount
