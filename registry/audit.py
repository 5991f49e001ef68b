"""Writes that leave an audit row: who, when, what changed, and why.

django-simple-history records a row per save() and delete(), taking the user and reason from
attributes set on the instance. It does not see bulk_create/bulk_update, so bulk paths use the
functions here, which write the history rows in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User
from django.db.models import Model
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from registry.errors import ValidationFailed


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("A reason for the change is required.", field="reason")
    return reason


def audited_save(obj: Model, *, acting_user: User | None, reason: str) -> Model:
    obj._history_user = acting_user
    obj._change_reason = _require_reason(reason)
    obj.save()
    return obj


def audited_delete(obj: Model, *, acting_user: User | None, reason: str) -> None:
    obj._history_user = acting_user
    obj._change_reason = _require_reason(reason)
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
        default_user=acting_user,
        default_change_reason=_require_reason(reason),
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
        default_user=acting_user,
        default_change_reason=_require_reason(reason),
    )


def history_columns(model: type[Model]) -> list[str]:
    """The model's columns that its history table records (derived columns are excluded)."""
    recorded = {f.column for f in model.history.model._meta.concrete_fields}
    return [f.column for f in model._meta.concrete_fields if f.column in recorded]


def copy_create_audited(
    model: type[Model],
    objs: Sequence[Model],
    *,
    acting_user: User | None,
    reason: str,
) -> list[Model]:
    """Insert new model instances with PostgreSQL COPY and write their history rows set-based,
    in the caller's transaction; elsewhere the same as `bulk_create_audited`."""
    from django.db import connection

    reason = _require_reason(reason)
    objs = list(objs)
    if not objs:
        return objs
    if connection.vendor != "postgresql":
        return bulk_create_audited(model, objs, acting_user=acting_user, reason=reason)
    fields = model._meta.concrete_fields
    rows = [{f.attname: getattr(obj, f.attname) for f in fields} for obj in objs]
    ids, now = _copy_insert(model, rows, acting_user=acting_user, reason=reason)
    stamped = [f.attname for f in fields if getattr(f, "auto_now", False)
               or getattr(f, "auto_now_add", False)]
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        for attname in stamped:
            setattr(obj, attname, now)
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def copy_insert_audited(
    model: type[Model],
    rows: Sequence[dict],
    *,
    acting_user: User | None,
    reason: str,
) -> list[int]:
    """Insert new rows given as {attname: value} (no model instances: the fast path of bulk
    imports) and write their history; fields not given take their defaults, timestamps are
    now. Returns the new ids in order. Elsewhere than PostgreSQL, `bulk_create_audited`."""
    from django.db import connection

    reason = _require_reason(reason)
    if not rows:
        return []
    if connection.vendor != "postgresql":
        objs = [model(**row) for row in rows]
        bulk_create_audited(model, objs, acting_user=acting_user, reason=reason)
        return [obj.pk for obj in objs]
    return _copy_insert(model, rows, acting_user=acting_user, reason=reason)[0]


def _copy_insert(model, rows, *, acting_user, reason):
    """COPY `rows` into the model's table with ids taken from its sequence (so concurrent
    writers never collide), then one INSERT ... SELECT of their history rows."""
    import json

    from django.db import connection
    from django.utils import timezone

    table = model._meta.db_table
    fields = model._meta.concrete_fields
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "  # noqa: S608
            "FROM generate_series(1, %s)", [len(rows)])
        ids = [row[0] for row in cursor.fetchall()]
    pk = model._meta.pk.attname
    stamped = {f.attname for f in fields if getattr(f, "auto_now", False)
               or getattr(f, "auto_now_add", False)}
    json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    defaults = {f.attname: f.get_default() for f in fields
                if f.attname not in stamped and f.attname != pk}
    # Per column: where its value comes from (0 id, 1 now, 2 the row or its default).
    plan = [(f.attname, 0 if f.attname == pk else 1 if f.attname in stamped else 2,
             f.attname in json_fields) for f in fields]

    def value(row, attname, json_field):
        v = row[attname] if attname in row else defaults[attname]
        return json.dumps(v, ensure_ascii=False) if json_field else v

    connection.ensure_connection()
    columns = [f.column for f in fields]
    with connection.connection.cursor() as raw, raw.copy(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    ) as copy:
        for new_id, row in zip(ids, rows, strict=True):
            copy.write_row([new_id if source == 0 else now if source == 1
                            else value(row, attname, json_field)
                            for attname, source, json_field in plan])
    history = model.history.model._meta.db_table
    cols = ", ".join(history_columns(model))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {history} ({cols}, history_date, history_change_reason, "  # noqa: S608
            f"history_type, history_user_id) SELECT {cols}, %s, %s, '+', %s FROM {table} "
            f"WHERE id = ANY(%s)",
            [now, reason, acting_user.pk if acting_user else None, ids])
    return ids, now
