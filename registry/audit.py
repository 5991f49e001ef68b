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
