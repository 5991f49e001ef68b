from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from registry.demo import DEMO_PASSWORD, demo_setup


class Command(BaseCommand):
    help = "Create the demo sites, one login per role and a small cohort. For local demos only."

    def add_arguments(self, parser):
        parser.add_argument("--patients-per-site", type=int, default=8)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--allow-production", action="store_true",
            help="Run even with DEBUG off (creates logins with a published password).",
        )

    def handle(self, *args, **opts):
        if not settings.DEBUG and not opts["allow_production"]:
            raise CommandError(
                "demo_setup creates logins with a published password; it runs only with "
                "DEBUG on (or --allow-production on a throwaway database)."
            )
        logins = demo_setup(patients_per_site=opts["patients_per_site"], seed=opts["seed"])
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for login in logins:
            where = ", ".join(login.sites) if login.sites else "registry-wide"
            self.stdout.write(f"  {login.username:<13} {login.role:<17} {where}")
