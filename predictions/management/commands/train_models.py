"""python manage.py train_models [--sync] [--json]: train every risk model now."""

import json
import time

from django.core.management.base import BaseCommand, CommandError

from predictions.models import TrainingRun
from predictions.services.training import (
    training_run_execute,
    training_run_request,
    version_summary,
)


class Command(BaseCommand):
    help = ("Train every risk model now: queue a training run for the worker (default), or run "
            "it in this process with --sync. --json prints one JSON object per line per risk "
            "model (waiting for a queued run to end).")

    def add_arguments(self, parser):
        parser.add_argument("--sync", action="store_true", help="train in this process")
        parser.add_argument("--json", action="store_true", help="one JSON line per risk model")
        parser.add_argument("--timeout", type=int, default=6 * 3600,
                            help="seconds to wait for a queued run with --json")

    def handle(self, *args, **opts):
        run = training_run_request(trigger=TrainingRun.Trigger.MANUAL, queue=not opts["sync"])
        if opts["sync"]:
            run = training_run_execute(run_id=run.pk)
            if run is None:
                raise CommandError("Another process is running this training run.")
        elif opts["json"]:
            run = self._wait(run.pk, opts["timeout"])
        else:
            self.stdout.write(f"Training run {run.pk} queued.")
            return
        if run.status != TrainingRun.Status.DONE:
            raise CommandError(f"Training run {run.pk} {run.status}: {run.error}")
        for version in run.versions.order_by("risk_model"):
            if opts["json"]:
                self.stdout.write(json.dumps(version_summary(version)))
            else:
                check = getattr(version, "promotion_check", None)
                state = "champion" if check and check.promoted else "challenger"
                self.stdout.write(
                    f"{version}: {version.algorithm}, leave-site-out AUROC "
                    f"{version.metrics['loso_auroc']:.3f}, {state}")

    def _wait(self, run_id: int, timeout: int) -> TrainingRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = TrainingRun.objects.get(pk=run_id)
            if run.status in (TrainingRun.Status.DONE, TrainingRun.Status.FAILED):
                return run
            time.sleep(2)
        raise CommandError(f"Training run {run_id} did not end within {timeout} s.")
