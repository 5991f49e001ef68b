from django.core.management.base import BaseCommand, CommandError

from registry.models import Site
from registry.services.mapping_files import mappings_export


class Command(BaseCommand):
    help = "Write a site's approved mappings as an OMOP SOURCE_TO_CONCEPT_MAP (tab-delimited)."

    def add_arguments(self, parser):
        parser.add_argument("--site", required=True)
        parser.add_argument("--output", default="-")

    def handle(self, *args, **opts):
        site = Site.objects.filter(code=opts["site"]).first()
        if site is None:
            raise CommandError(f"Unknown site code {opts['site']!r}.")
        text, missing = mappings_export(site=site)
        if opts["output"] == "-":
            self.stdout.write(text, ending="")
        else:
            with open(opts["output"], "w", encoding="utf-8") as handle:
                handle.write(text)
        if missing:
            self.stderr.write(f"{missing} target(s) have no OMOP concept id (exported as 0); "
                              "load the Athena vocabulary files to fill them.")
