from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.models import Site
from registry.services.organisation import site_upsert


class Command(BaseCommand):
    help = "Register a site (hospital), or update its name, province and tier. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("code")
        parser.add_argument("name")
        parser.add_argument("--province", default="")
        parser.add_argument("--tier", default=Site.Tier.TERTIARY, choices=Site.Tier.values)

    def handle(self, *args, **opts):
        try:
            site, created = site_upsert(
                code=opts["code"], name=opts["name"], province=opts["province"],
                tier=opts["tier"], acting_user=None, reason="add_site command",
            )
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        self.stdout.write(f"{'created' if created else 'up to date'}: {site}")
