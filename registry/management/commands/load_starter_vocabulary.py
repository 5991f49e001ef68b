from django.core.management.base import BaseCommand

from registry.services.terminology import starter_vocabulary_load


class Command(BaseCommand):
    help = "Load the starter vocabulary shipped with the registry (ATC, LOINC, ICD-10, CTCAE, "
    help += "UCUM units and conversions). Idempotent."

    def handle(self, *args, **opts):
        counts = starter_vocabulary_load(acting_user=None)
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
