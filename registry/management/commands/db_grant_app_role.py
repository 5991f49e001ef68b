import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from registry.dbroles import app_role_ensure, app_role_grant
from registry.errors import RegistryError


class Command(BaseCommand):
    help = (
        "Give the application's database role its privileges: read and write the ordinary "
        "tables, only read and append to the history tables. Run as the owner after every "
        "migrate (new tables are covered when it runs again). Idempotent. With --password-env "
        "the role is created if absent (or its password set) from that environment variable."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", nargs="?", default=None,
                            help="default: DATABASE_APP_ROLE from the environment")
        parser.add_argument("--password-env", default=None, metavar="NAME")
        parser.add_argument("--database", default="default")

    def handle(self, *args, **opts):
        role = opts["role"] or settings.DATABASE_APP_ROLE
        if not role:
            raise CommandError("Name the role (or set DATABASE_APP_ROLE).")
        try:
            if opts["password_env"]:
                password = os.environ.get(opts["password_env"], "")
                if not password:
                    raise CommandError(
                        f"The environment variable {opts['password_env']} is empty.")
                if app_role_ensure(role, password=password, using=opts["database"]):
                    self.stdout.write(f"created role {role}")
            report = app_role_grant(role, using=opts["database"])
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        self.stdout.write(
            f"{role}: read/write {len(report.ordinary)} tables, read/append "
            f"{len(report.history)} history tables, read {len(report.read_only)}")
