"""Model versions and the champion alias.

A version is written once (`version_record`, inside the training service's final transaction)
and never changed: the model refuses a second save and PostgreSQL refuses an UPDATE of its row
(a trigger, migration 0002). Its artifact and its held-out predictions are files of the
"models" storage named by their SHA-256; loading either re-hashes the bytes and refuses a
mismatch.

The promotion rule (`promotion_judge`), read by the training service for every new version:

- no champion yet: the version becomes champion if it is well calibrated (below);
- otherwise it is compared with the champion **paired, on the cycles both were evaluated on**:
  each version keeps its leave-site-out held-out prediction per cycle id; the two are joined on
  cycle id and scored against the newer version's targets (the registry's current truth), so
  both AUROCs come from the same cycles and the same outcomes. The challenger is promoted when
  its AUROC there is not below the champion's (PROMOTION_AUROC_MARGIN), its calibration slope
  lies in PROMOTION_SLOPE and its E-avg is at most PROMOTION_MAX_E_AVG (both leave-site-out);
- otherwise it stays a challenger, with the reasons kept; an admin may promote it, or roll the
  champion back to an earlier version, by hand with a reason (`champion_move`).

Every move of the alias is an AliasMove row; the alias itself keeps its history.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from sklearn.metrics import roc_auc_score

from predictions.ml.training import ArtifactIntegrityError, RiskPredictor, artifact_loads
from predictions.models import Alias, AliasMove, ModelVersion, PromotionCheck
from predictions.storage import model_storage
from registry import access
from registry.audit import history_user
from registry.errors import NotPermitted, ValidationFailed
from registry.services.workflow import reason_check

PROMOTION_AUROC_MARGIN = 0.0  # the challenger's paired AUROC may not be lower than this
PROMOTION_SLOPE = (0.8, 1.2)
PROMOTION_MAX_E_AVG = 0.05
# Fewer shared cycles (or events among them) than this and the paired comparison says nothing:
# the challenger waits for an admin.
PROMOTION_MIN_SHARED_CYCLES = 100
PROMOTION_MIN_SHARED_EVENTS = 10

_HOLDOUT_DTYPE = np.dtype([("cycle", "<i8"), ("y", "i1"), ("p", "<f8")])


# --- Files ------------------------------------------------------------------------------------

def file_store(folder: str, data: bytes, sha256: str, suffix: str) -> str:
    """Store bytes under their SHA-256 (the same bytes twice: one file) and return the name.

    A process killed after this and before its version is committed leaves a file no version
    names: `orphan_files_purge` deletes it later. Nothing reads a file no version names."""
    storage = model_storage()
    name = f"{folder}/{sha256}{suffix}"
    if not storage.exists(name):
        saved = storage.save(name, ContentFile(data))
        if saved != name:  # written concurrently by another process: keep one
            storage.delete(saved)
    return name


def _read_verified(name: str, sha256: str) -> bytes:
    import hashlib

    with model_storage().open(name, "rb") as handle:
        data = handle.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"{name} refused: its SHA-256 is {actual}, the version records {sha256}.")
    return data


def holdout_dumps(cycle_ids, y, p) -> tuple[bytes, str]:
    """Held-out predictions as .npy bytes (deterministic: no timestamps) and their SHA-256."""
    import hashlib

    rows = np.empty(len(cycle_ids), dtype=_HOLDOUT_DTYPE)
    rows["cycle"], rows["y"], rows["p"] = cycle_ids, y, p
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def version_holdout(version: ModelVersion) -> pd.DataFrame:
    """The version's held-out predictions (cycle, y, p), refused on a hash mismatch."""
    data = _read_verified(version.holdout, version.holdout_sha256)
    rows = np.load(io.BytesIO(data), allow_pickle=False)
    return pd.DataFrame({"cycle": rows["cycle"], "y": rows["y"].astype(int), "p": rows["p"]})


def version_load(version: ModelVersion) -> RiskPredictor:
    """The version's fitted model. Raises ArtifactIntegrityError when the stored bytes do not
    hash to the recorded SHA-256 (a changed or corrupted file is never unpickled)."""
    data = _read_verified(version.artifact, version.artifact_sha256)
    return artifact_loads(data, version.artifact_sha256)


# --- Versions ---------------------------------------------------------------------------------

def version_record(**fields) -> ModelVersion:
    """Create a version with the next number of its risk model (caller's transaction). The
    row is created once; ModelVersion.save refuses to save it again."""
    risk_model = fields["risk_model"]
    # Numbers are taken under the alias row's lock when there is one, else the unique
    # constraint refuses a concurrent duplicate (the training run is then failed and retried).
    last = (ModelVersion.objects.filter(risk_model=risk_model)
            .order_by("-number").values_list("number", flat=True).first()) or 0
    version = ModelVersion(number=last + 1, **fields)
    version.save()
    return version


def champion_of(risk_model: str) -> ModelVersion | None:
    alias = (Alias.objects.select_related("version")
             .filter(risk_model=risk_model, name=Alias.Name.CHAMPION).first())
    return alias.version if alias else None


# --- Promotion --------------------------------------------------------------------------------

@dataclass
class Verdict:
    promoted: bool
    reasons: list[str]
    figures: dict


def _calibration_reasons(metrics: dict) -> list[str]:
    reasons = []
    lo, hi = PROMOTION_SLOPE
    slope, e_avg = metrics.get("calibration_slope"), metrics.get("e_avg")
    if slope is None or not lo <= slope <= hi:
        reasons.append(f"Calibration slope {slope!r} is outside {lo}-{hi}.")
    if e_avg is None or e_avg > PROMOTION_MAX_E_AVG:
        reasons.append(f"E-avg {e_avg!r} is above {PROMOTION_MAX_E_AVG}.")
    return reasons


def paired_auroc(challenger: pd.DataFrame, champion: pd.DataFrame) -> dict:
    """Both versions' AUROC on the cycles both predicted held-out, against the challenger's
    targets (the current ones)."""
    shared = challenger.merge(champion[["cycle", "p"]], on="cycle", suffixes=("", "_champion"))
    figures = {"shared_cycles": len(shared), "shared_events": int(shared["y"].sum()),
               "challenger_auroc": None, "champion_auroc": None}
    if len(shared) and 0 < shared["y"].sum() < len(shared):
        figures["challenger_auroc"] = float(roc_auc_score(shared["y"], shared["p"]))
        figures["champion_auroc"] = float(roc_auc_score(shared["y"], shared["p_champion"]))
    return figures


def promotion_judge(version: ModelVersion, champion: ModelVersion | None, *,
                    holdout: pd.DataFrame | None = None) -> Verdict:
    """The automatic promotion rule (module docstring). `holdout`: the version's held-out
    predictions when the caller has them (else read from storage)."""
    reasons = _calibration_reasons(version.metrics)
    figures = {"loso_auroc": version.metrics.get("loso_auroc"),
               "calibration_slope": version.metrics.get("calibration_slope"),
               "e_avg": version.metrics.get("e_avg")}
    if champion is not None:
        challenger = holdout if holdout is not None else version_holdout(version)
        try:
            paired = paired_auroc(challenger, version_holdout(champion))
        except (ArtifactIntegrityError, OSError) as error:
            paired = {"shared_cycles": 0, "shared_events": 0, "challenger_auroc": None,
                      "champion_auroc": None}
            reasons.append(f"The champion's held-out predictions could not be read ({error}).")
        figures.update(paired, champion_version=champion.number)
        if (paired["shared_cycles"] < PROMOTION_MIN_SHARED_CYCLES
                or paired["shared_events"] < PROMOTION_MIN_SHARED_EVENTS
                or paired["challenger_auroc"] is None):
            reasons.append(
                f"Only {paired['shared_cycles']} cycles ({paired['shared_events']} events) were "
                "evaluated by both versions: too few for a paired comparison.")
        elif paired["challenger_auroc"] < paired["champion_auroc"] - PROMOTION_AUROC_MARGIN:
            reasons.append(
                f"Leave-site-out AUROC on the {paired['shared_cycles']} shared cycles is "
                f"{paired['challenger_auroc']:.4f}, below the champion's "
                f"{paired['champion_auroc']:.4f}.")
    return Verdict(promoted=not reasons, reasons=reasons, figures=figures)


def promotion_apply(version: ModelVersion, *, holdout: pd.DataFrame | None = None
                    ) -> PromotionCheck:
    """Judge a new version, keep the verdict, and move the champion to it when the rule says
    so (atomic; inside the training run's final transaction)."""
    with transaction.atomic():
        champion = champion_of(version.risk_model)
        verdict = promotion_judge(version, champion, holdout=holdout)
        check = PromotionCheck.objects.create(version=version, against=champion,
                                              promoted=verdict.promoted,
                                              reasons=verdict.reasons, figures=verdict.figures)
        if verdict.promoted:
            reason = ("First calibrated version." if champion is None else
                      f"Not worse than v{champion.number} on the shared cycles, calibrated.")
            _alias_move(version.risk_model, version, kind=AliasMove.Kind.AUTOMATIC,
                        acting_user=None, reason=reason, metrics=verdict.figures)
    return check


def _alias_move(risk_model: str, to: ModelVersion, *, kind: str, acting_user: User | None,
                reason: str, metrics: dict) -> AliasMove:
    now = timezone.now()
    alias = (Alias.objects.select_for_update()
             .filter(risk_model=risk_model, name=Alias.Name.CHAMPION).first())
    from_version = alias.version if alias else None
    if alias is None:
        alias = Alias(risk_model=risk_model, name=Alias.Name.CHAMPION)
    alias.version, alias.moved_at = to, now
    alias._history_user = history_user(acting_user)
    alias._change_reason = reason
    alias.save()
    move = AliasMove.objects.create(
        risk_model=risk_model, kind=kind, from_version=from_version, to_version=to,
        moved_by=acting_user, moved_at=now, reason=reason,
        metrics={**metrics, "to": to.metrics,
                 "from": from_version.metrics if from_version else None})
    transaction.on_commit(lambda: _queue_rescore(to.pk))
    return move


def _queue_rescore(version_id: int) -> None:
    from predictions.tasks import score_all_task

    score_all_task.delay(version_id)


def champion_move(*, risk_model: str, version_number: int, acting_user: User,
                  reason: str) -> AliasMove:
    """A registry admin moves the champion by hand, with a reason: to a newer version
    (promote) or an older one (rollback). Every scored cycle is rescored after the commit."""
    if not access.is_registry_admin(acting_user):
        raise NotPermitted("Only a registry admin moves a risk model's champion.")
    reason = reason_check(reason, field="reason")
    if not reason:
        raise ValidationFailed("Give the reason for moving the champion.", field="reason")
    with transaction.atomic():
        target = ModelVersion.objects.filter(risk_model=risk_model,
                                             number=version_number).first()
        if target is None:
            raise ValidationFailed(f"{risk_model} has no version {version_number}.",
                                   field="version")
        current = champion_of(risk_model)
        if current is not None and current.pk == target.pk:
            raise ValidationFailed(f"Version {version_number} is already the champion.",
                                   field="version")
        kind = (AliasMove.Kind.ROLLBACK if current is not None and target.number < current.number
                else AliasMove.Kind.PROMOTE)
        figures = {"loso_auroc": target.metrics.get("loso_auroc"),
                   "calibration_slope": target.metrics.get("calibration_slope"),
                   "e_avg": target.metrics.get("e_avg")}
        return _alias_move(risk_model, target, kind=kind, acting_user=acting_user,
                           reason=reason, metrics=figures)
