from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.services.vocabulary import vocabulary_load


class Command(BaseCommand):
    help = ("Load OMOP/Athena vocabulary files (CONCEPT.csv, CONCEPT_SYNONYM.csv) from DIR for "
            "ATC, LOINC, ICD-10, ICD-O-3 and UCUM. Idempotent.")

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)

    def handle(self, *args, **opts):
        try:
            counts = vocabulary_load(opts["directory"], acting_user=None,
                                     progress=self.stdout.write)
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        self.stdout.write(", ".join(f"{k}: {v:,}" for k, v in counts.items()))
