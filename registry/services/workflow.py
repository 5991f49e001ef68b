"""The clerk workflow: draft -> submitted -> verified -> locked, edits with a reason and without
lost updates, data queries, and the edit checks that raise them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from django.contrib.auth.models import User
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from registry import limits
from registry.audit import audited_save, copy_frame_audited, version_bump
from registry.errors import NotPermitted, StaleEdit, ValidationFailed
from registry.kinds import KINDS
from registry.models import (
    DataQuery,
    Patient,
    RecordStatus,
)
from registry.models.organisation import DATA_ENTRY_ROLES, REVIEW_ROLES
from registry.services.mapping import record_recode
from registry.services.organisation import require_site_role
from registry.signals import records_changed_on_commit

# The kinds of clinical record a clerk edits, by the short name used in URLs and queries.
RECORD_MODELS: dict[str, type[models.Model]] = {k.name: k.model for k in KINDS.values()}

# Bookkeeping columns that are not part of what a person edits.
_NOT_CONTENT = {"id", "version", "status", "created_at", "updated_at", "site",
                "last_followup_date", "followup_closed"}  # derived, see followup_summary_refresh


def reason_check(reason: str | None, *, field: str) -> str:
    """The reason a person gave, stripped; refused when longer than the registry keeps."""
    reason = (reason or "").strip()
    if len(reason) > limits.REASON_MAX_LENGTH:
        raise ValidationFailed(
            f"A reason is at most {limits.REASON_MAX_LENGTH} characters, not {len(reason)}.",
            field=field,
        )
    return reason


def save_or_refuse(obj: models.Model, *, acting_user: User | None, reason: str) -> models.Model:
    """Save with an audit row, turning a natural-key collision into a clear error."""
    try:
        with transaction.atomic():
            saved = audited_save(obj, acting_user=acting_user, reason=reason)
    except IntegrityError as exc:
        raise ValidationFailed(
            f"This {obj._meta.verbose_name} already exists (same natural key) or breaks a "
            f"database rule: {exc.__cause__ or exc}"
        ) from exc
    patient_id = saved.pk if isinstance(saved, Patient) else saved.patient_id
    records_changed_on_commit(kind=record_kind(saved), site_ids=[saved.site_id],
                              patient_ids=[patient_id])
    return saved


def record_kind(instance: models.Model) -> str:
    return instance._meta.model_name


def content_fields(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if f.name not in _NOT_CONTENT]


def changes_since(instance: models.Model, version: int) -> list[dict[str, Any]]:
    """What was changed after `version`, by whom and when (from the audit trail)."""
    history = instance.history.order_by("history_date", "history_id")
    before = history.filter(version=version).last()
    if before is None:
        return []
    out = []
    previous = before
    for row in history.filter(version__gt=version):
        for field in content_fields(type(instance)):
            old, new = getattr(previous, field.attname), getattr(row, field.attname)
            if old != new:
                out.append(
                    {
                        "field": field.name,
                        "old": old,
                        "new": new,
                        "user": row.history_user.username if row.history_user else "system",
                        "date": row.history_date,
                        "reason": row.history_change_reason,
                    }
                )
        previous = row
    return out


def edit_guard(
    instance: models.Model, *, acting_user: User, expected_version: int | None, change_reason: str
) -> str:
    """Refuse an edit that may not happen, and return the reason to record for it.

    Locked records are read-only. An edit made on an older version than the stored one is
    refused, naming what changed since, so nothing silently overwrites another person's edit.
    After submission every change needs a reason.
    """
    require_site_role(acting_user, instance.site, DATA_ENTRY_ROLES)
    current = type(instance).objects.select_for_update().get(pk=instance.pk)
    if current.status == RecordStatus.LOCKED:
        raise NotPermitted(
            "This record is locked; a monitor must unlock it (with a reason) before it can change."
        )
    if expected_version is None:
        raise ValidationFailed(
            "The version being edited is missing; reload the record.", field="version"
        )
    if current.version != expected_version:
        changed = changes_since(current, expected_version)
        lines = [f"{c['field']}: {c['old']!s} -> {c['new']!s} by {c['user']}" for c in changed]
        error = StaleEdit(
            "Someone else saved this record since you opened it; your changes were not saved. "
            + ("Changed since: " + "; ".join(lines) if lines else "Reload to see the record.")
        )
        error.changes = changed
        raise error
    reason = reason_check(change_reason, field="change_reason")
    if current.status != RecordStatus.DRAFT and not reason:
        raise ValidationFailed(
            "This record has been submitted: give a reason for the change.", field="change_reason"
        )
    return reason or "edited while draft"


def store(
    model: type[models.Model],
    instance: models.Model | None,
    fields: dict[str, Any],
    *,
    acting_user: User,
    reason: str,
    warnings: Iterable[tuple[str, str]] = (),
) -> models.Model:
    """Create a record, or apply an edit already cleared by `edit_guard` (version + 1; a
    verified record goes back to submitted for review); open a query for each of the soft
    rules' `warnings` (field, message)."""
    if instance is None:
        obj = model(**fields)
    else:
        obj = type(instance).objects.get(pk=instance.pk)
        for name, value in fields.items():
            setattr(obj, name, value)
        version_bump(obj)
        if obj.status == RecordStatus.VERIFIED:
            obj.status = RecordStatus.SUBMITTED
    obj = save_or_refuse(obj, acting_user=acting_user, reason=reason)
    queries_from_edit_checks(obj, acting_user=acting_user, warnings=warnings)
    return obj


# -- status transitions -------------------------------------------------------------------------


def _check_password(user: User, password: str) -> None:
    if not password or not user.check_password(password):
        raise NotPermitted(
            "The password is not correct; the signature was not applied.", field="password"
        )


def _transition(
    instance: models.Model, *, to: str, allowed_from: Iterable[str], acting_user: User, reason: str
) -> models.Model:
    obj = type(instance).objects.select_for_update().get(pk=instance.pk)
    if obj.status not in allowed_from:
        raise ValidationFailed(
            f"A {obj.get_status_display().lower()} record cannot become {to}.", field="status"
        )
    obj.status = to
    version_bump(obj)
    return audited_save(obj, acting_user=acting_user, reason=reason)


@transaction.atomic
def record_submit(instance: models.Model, *, acting_user: User) -> models.Model:
    require_site_role(acting_user, instance.site, DATA_ENTRY_ROLES)
    return _transition(
        instance,
        to=RecordStatus.SUBMITTED,
        allowed_from=[RecordStatus.DRAFT],
        acting_user=acting_user,
        reason="submitted",
    )


@transaction.atomic
def patient_submit(patient: Patient, *, acting_user: User) -> int:
    """Submit the patient and every draft record of theirs; returns how many were submitted."""
    require_site_role(acting_user, patient.site, DATA_ENTRY_ROLES)
    count = 0
    for record in patient_records(patient):
        if record.status == RecordStatus.DRAFT:
            _transition(
                record,
                to=RecordStatus.SUBMITTED,
                allowed_from=[RecordStatus.DRAFT],
                acting_user=acting_user,
                reason="submitted",
            )
            count += 1
    return count


def patient_records(patient: Patient) -> list[models.Model]:
    records: list[models.Model] = [Patient.objects.get(pk=patient.pk)]
    for model in RECORD_MODELS.values():
        if model is not Patient:
            records.extend(model.objects.filter(patient=patient).order_by("pk"))
    return records


def _open_queries(instance: models.Model) -> int:
    return DataQuery.objects.filter(
        record_model=record_kind(instance),
        record_id=instance.pk,
        status__in=[DataQuery.Status.OPEN, DataQuery.Status.ANSWERED],
    ).count()


@transaction.atomic
def record_verify(instance: models.Model, *, acting_user: User, password: str) -> models.Model:
    """A monitor's e-signature: 'I have reviewed this record against the source'."""
    require_site_role(acting_user, instance.site, REVIEW_ROLES)
    _check_password(acting_user, password)
    if _open_queries(instance):
        raise ValidationFailed(
            "Close the record's open queries before verifying it.", field="status"
        )
    return _transition(
        instance,
        to=RecordStatus.VERIFIED,
        allowed_from=[RecordStatus.SUBMITTED],
        acting_user=acting_user,
        reason=f"e-signature by {acting_user.username}: verified against source "
        f"at {timezone.now().isoformat(timespec='seconds')}",
    )


@transaction.atomic
def record_lock(instance: models.Model, *, acting_user: User, password: str) -> models.Model:
    require_site_role(acting_user, instance.site, REVIEW_ROLES)
    _check_password(acting_user, password)
    return _transition(
        instance,
        to=RecordStatus.LOCKED,
        allowed_from=[RecordStatus.VERIFIED],
        acting_user=acting_user,
        reason=f"e-signature by {acting_user.username}: locked "
        f"at {timezone.now().isoformat(timespec='seconds')}",
    )


@transaction.atomic
def record_unlock(instance: models.Model, *, acting_user: User, reason: str) -> models.Model:
    require_site_role(acting_user, instance.site, REVIEW_ROLES)
    reason = reason_check(reason, field="reason")
    if not reason:
        raise ValidationFailed("Unlocking needs a reason.", field="reason")
    record = _transition(
        instance,
        to=RecordStatus.SUBMITTED,
        allowed_from=[RecordStatus.LOCKED],
        acting_user=acting_user,
        reason=f"unlocked: {reason}",
    )
    # Words re-mapped while it was locked (the re-code left it alone) are re-coded now.
    record_recode(record, acting_user=acting_user)
    return record


# -- data queries -------------------------------------------------------------------------------


def _patient_of(instance: models.Model) -> Patient:
    return instance if isinstance(instance, Patient) else instance.patient


@transaction.atomic
def query_open(
    instance: models.Model,
    *,
    field: str,
    text: str,
    acting_user: User | None,
    automatic: bool = False,
) -> DataQuery:
    if not automatic:
        require_site_role(acting_user, instance.site, REVIEW_ROLES)
        if instance.status == RecordStatus.DRAFT:
            raise ValidationFailed("Queries are opened on submitted records.", field="status")
    if not (text or "").strip():
        raise ValidationFailed("The query needs a question.", field="text")
    if len(text) > limits.QUERY_TEXT_MAX_LENGTH:
        raise ValidationFailed(
            f"A question is at most {limits.QUERY_TEXT_MAX_LENGTH} characters.", field="text")
    valid = {f.name for f in content_fields(type(instance))} | {""}
    if field not in valid:
        raise ValidationFailed(f"{field!r} is not a field of this record.", field="field")
    query = DataQuery(
        site=instance.site,
        patient=_patient_of(instance),
        record_model=record_kind(instance),
        record_id=instance.pk,
        field=field,
        text=text.strip(),
        automatic=automatic,
        opened_by=acting_user,
    )
    return audited_save(
        query, acting_user=acting_user, reason="edit check" if automatic else "query opened"
    )


@transaction.atomic
def query_answer(query: DataQuery, *, answer: str, acting_user: User) -> DataQuery:
    require_site_role(acting_user, query.site, DATA_ENTRY_ROLES)
    query = DataQuery.objects.select_for_update().get(pk=query.pk)
    if query.status == DataQuery.Status.CLOSED:
        raise ValidationFailed("This query is closed.", field="status")
    if not (answer or "").strip():
        raise ValidationFailed("The answer is empty.", field="answer")
    if len(answer) > limits.QUERY_TEXT_MAX_LENGTH:
        raise ValidationFailed(
            f"An answer is at most {limits.QUERY_TEXT_MAX_LENGTH} characters.", field="answer")
    query.answer, query.status = answer.strip(), DataQuery.Status.ANSWERED
    query.answered_by, query.answered_at = acting_user, timezone.now()
    return audited_save(query, acting_user=acting_user, reason="query answered")


@transaction.atomic
def query_close(query: DataQuery, *, acting_user: User) -> DataQuery:
    require_site_role(acting_user, query.site, REVIEW_ROLES)
    query = DataQuery.objects.select_for_update().get(pk=query.pk)
    if query.status == DataQuery.Status.CLOSED:
        return query
    query.status = DataQuery.Status.CLOSED
    query.closed_by, query.closed_at = acting_user, timezone.now()
    return audited_save(query, acting_user=acting_user, reason="query closed")


# -- soft rules: accepted, each opens a query for the monitor ------------------------------------


def queries_from_edit_checks(instance: models.Model, *, acting_user: User | None,
                             warnings: Iterable[tuple[str, str]] = ()) -> list:
    """Open an automatic query for each (field, message) the rulebook's soft rules gave for
    the saved record, unless one is already open on that field (a form's path, one record)."""
    opened = []
    existing = set(
        DataQuery.objects.filter(
            record_model=record_kind(instance),
            record_id=instance.pk,
            automatic=True,
            status__in=[DataQuery.Status.OPEN, DataQuery.Status.ANSWERED],
        ).values_list("field", flat=True)
    )
    for field, text in warnings:
        if field not in existing:
            existing.add(field)
            opened.append(
                query_open(
                    instance, field=field, text=text, acting_user=acting_user, automatic=True
                )
            )
    return opened


def queries_open_bulk(frame: pd.DataFrame, *, record_model: str, acting_user: User | None,
                      reason: str) -> int:
    """Open the automatic queries of many records in one INSERT (COPY, with their history
    rows): the import's path. `frame` has site_id, patient_id, record_id, field and text; a
    record that already has an open automatic query on the field gets no second one, nor
    does a (record, field) repeated in the frame. Returns how many were opened."""
    if frame.empty:
        return 0
    frame = frame.drop_duplicates(["record_id", "field"])
    open_now = pd.DataFrame(
        DataQuery.objects.filter(
            record_model=record_model, record_id__in=frame["record_id"].tolist(),
            automatic=True,
            status__in=[DataQuery.Status.OPEN, DataQuery.Status.ANSWERED],
        ).values_list("record_id", "field"), columns=["record_id", "field"])
    if not open_now.empty:
        known = frame.merge(open_now.drop_duplicates(), how="left", indicator=True)
        frame = frame[(known["_merge"] == "left_only").to_numpy()]
    text = frame["text"].str.slice(0, limits.QUERY_TEXT_MAX_LENGTH)
    rows = pd.DataFrame({
        "site_id": frame["site_id"].to_numpy(), "patient_id": frame["patient_id"].to_numpy(),
        "record_model": record_model, "record_id": frame["record_id"].to_numpy(),
        "field": frame["field"].to_numpy(), "text": text.to_numpy(), "automatic": True,
        "status": DataQuery.Status.OPEN,
        "opened_by_id": acting_user.pk if acting_user is not None else None,
        "answer": "", "opened_at": timezone.now()})
    copy_frame_audited(DataQuery, rows, acting_user=acting_user, reason=reason)
    return len(rows)
