from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.models import Domain, Site
from registry.services.mapping_files import mappings_import


class Command(BaseCommand):
    help = ("Approve a site's mappings from a file: the registry's CSV (domain, local_term, "
            "vocabulary, code), a Usagi mapping file (with --domain) or an OMOP "
            "SOURCE_TO_CONCEPT_MAP. All-or-nothing; stored rows are re-coded.")

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--site", required=True)
        parser.add_argument("--domain", choices=Domain.values, default=None)

    def handle(self, *args, **opts):
        site = Site.objects.filter(code=opts["site"]).first()
        if site is None:
            raise CommandError(f"Unknown site code {opts['site']!r}.")
        if not opts["file"].exists():
            raise CommandError(f"{opts['file']} not found.")
        try:
            count = mappings_import(site=site, path=opts["file"], acting_user=None,
                                    domain=opts["domain"])
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        self.stdout.write(f"{count} mapping(s) approved for {site.code}.")
