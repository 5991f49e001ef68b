import os

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.models import Role
from registry.services.organisation import user_add


class Command(BaseCommand):
    help = (
        "Create a user if absent and grant a role, at each --site for site roles "
        "(clerk, monitor, site_pi). Idempotent. The password, if any, is read from the "
        "environment variable named by --password-env, never from the command line."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--site", action="append", default=[], dest="sites")
        parser.add_argument("--email", default="")
        parser.add_argument("--password-env", default=None)

    def handle(self, *args, **opts):
        password = None
        if opts["password_env"]:
            password = os.environ.get(opts["password_env"])
            if not password:
                raise CommandError(f"The environment variable {opts['password_env']} is empty.")
        try:
            user, memberships = user_add(
                username=opts["username"], role=opts["role"], site_codes=opts["sites"],
                email=opts["email"], password=password, acting_user=None,
            )
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        for membership in memberships:
            self.stdout.write(f"{user.username}: {membership}")
