"""What the risk models do when the registry says records changed (registry.signals): queue
the scoring of the cycles the change may have moved. Connected in PredictionsConfig.ready."""

from __future__ import annotations

from predictions.services.scoring import changed_cycles


def rescore_changed_records(sender, *, kind: str, site_ids: list[int],
                            patient_ids: list[int] | None, **kwargs) -> None:
    """Sent after the commit: queue score_cycles_task for the cycles touched (nothing while
    no risk model has a champion)."""
    from predictions.tasks import score_cycles_task

    cycle_ids = changed_cycles(kind=kind, site_ids=site_ids, patient_ids=patient_ids)
    if cycle_ids:
        score_cycles_task.delay(cycle_ids)
