"""Signals other apps may listen to; the registry imports none of them.

`records_changed` is sent after a clinical write has committed: by the services when a form
saves a record, and by an import once its rows are written. Listeners (the risk models rescore
the cycles the change may touch) receive `kind` (the record kind's model name, or "import"),
`site_ids` and `patient_ids` (None: every patient of those sites). It is sent with
send_robust: a listener's failure is logged and never undoes or fails the committed write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

records_changed = Signal()


def records_changed_on_commit(*, kind: str, site_ids: Iterable[int],
                              patient_ids: Iterable[int] | None = None) -> None:
    """Send `records_changed` once the current transaction commits (now, outside one)."""
    sites = sorted(set(site_ids))
    patients = None if patient_ids is None else sorted(set(patient_ids))

    def send() -> None:
        for receiver, result in records_changed.send_robust(
                sender=kind, kind=kind, site_ids=sites, patient_ids=patients):
            if isinstance(result, Exception):
                logger.error("records_changed: %r failed for %s", receiver, kind,
                             exc_info=result)

    transaction.on_commit(send)
