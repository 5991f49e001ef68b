from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from registry.demo import DEMO_PASSWORD, demo_setup


class Command(BaseCommand):
    help = ("Seed a synthetic multi-centre cohort (if the registry has none) and create one "
            "login per role. For local demos only.")

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, default=2000)
        parser.add_argument("--sites", type=int, default=6)
        parser.add_argument("--seed", type=int, default=42)
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
        logins = demo_setup(patients=opts["patients"], sites=opts["sites"],
                            seed_value=opts["seed"], progress=self.stdout.write)
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for login in logins:
            where = ", ".join(login.sites) if login.sites else "registry-wide"
            self.stdout.write(f"  {login.username:<13} {login.role:<17} {where}")
