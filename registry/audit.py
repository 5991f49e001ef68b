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


def copy_create_audited(
    model: type[Model],
    objs: Sequence[Model],
    *,
    acting_user: User | None,
    reason: str,
) -> list[Model]:
    """Insert new rows with PostgreSQL COPY and write their history rows set-based, in the
    caller's transaction; elsewhere the same as `bulk_create_audited`.

    Ids come from the table's own sequence, so concurrent writers never collide.
    """
    import json

    from django.db import connection
    from django.utils import timezone

    reason = _require_reason(reason)
    objs = list(objs)
    if not objs:
        return objs
    if connection.vendor != "postgresql":
        return bulk_create_audited(model, objs, acting_user=acting_user, reason=reason)
    table = model._meta.db_table
    fields = model._meta.concrete_fields
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "  # noqa: S608
            "FROM generate_series(1, %s)", [len(objs)])
        ids = [row[0] for row in cursor.fetchall()]
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        for field in fields:
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                setattr(obj, field.attname, now)
    columns = [f.column for f in fields]
    json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    connection.ensure_connection()
    with connection.connection.cursor() as raw, raw.copy(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    ) as copy:
        for obj in objs:
            copy.write_row([
                json.dumps(getattr(obj, f.attname), ensure_ascii=False)
                if f.attname in json_fields else getattr(obj, f.attname) for f in fields])
    history = model.history.model._meta.db_table
    cols = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {history} ({cols}, history_date, history_change_reason, "  # noqa: S608
            f"history_type, history_user_id) SELECT {cols}, %s, %s, '+', %s FROM {table} "
            f"WHERE id = ANY(%s)",
            [now, reason, acting_user.pk if acting_user else None, ids])
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs
