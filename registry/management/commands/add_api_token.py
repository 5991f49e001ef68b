import sys

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from registry.api.scopes import Scope
from registry.errors import RegistryError
from registry.models.api import API_TOKEN_EXPIRES_DAYS_MAX, API_TOKEN_EXPIRES_DAYS_MIN
from registry.selectors.api_tokens import api_token_by_prefix
from registry.services.api_tokens import api_token_create, api_token_revoke

DEFAULT_NAME = "command line"


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME and print it, once, alone on standard output "
        "(TOKEN=$(manage.py add_api_token ...)); what it is goes to standard error. Or revoke "
        "a token with --revoke PREFIX. Scopes: " + ", ".join(Scope.values) + "."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?")
        parser.add_argument("--scopes", default="",
                            help="comma-separated, e.g. aggregates,feasibility")
        parser.add_argument("--expires", type=int, default=None, metavar="DAYS",
                            help=f"days until it expires ({API_TOKEN_EXPIRES_DAYS_MIN}-"
                                 f"{API_TOKEN_EXPIRES_DAYS_MAX}); default: never")
        parser.add_argument("--name", default=DEFAULT_NAME, help="what the token is for")
        parser.add_argument("--revoke", metavar="PREFIX",
                            help="revoke the token with this prefix instead")
        parser.add_argument("--reason", default="", help="why it is revoked (with --revoke)")

    def handle(self, *args, **opts):
        if opts["revoke"] is not None:
            if opts["username"]:
                raise CommandError("--revoke takes a token prefix and no username.")
            return self._revoke(opts["revoke"], opts["reason"])
        if not opts["username"]:
            raise CommandError("Name the user the token is for (or --revoke PREFIX).")
        user = User.objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"No user is named {opts['username']!r}.")
        scopes = [s.strip() for s in opts["scopes"].split(",") if s.strip()]
        try:
            token, text = api_token_create(user=user, name=opts["name"], scopes=scopes,
                                           expires_days=opts["expires"], acting_user=None)
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        expiry = token.expires_at.isoformat() if token.expires_at else "never"
        sys.stderr.write(
            f"API token {token.name!r} for {user.username}, prefix {token.prefix}, scopes "
            f"{', '.join(token.scopes)}, expires {expiry}. It is printed once, below; only "
            "its digest is kept.\n")
        self.stdout.write(text)

    def _revoke(self, prefix: str, reason: str) -> None:
        token = api_token_by_prefix(prefix)
        if token is None:
            raise CommandError(f"No API token has the prefix {prefix!r}.")
        was_revoked = token.revoked_at is not None
        try:
            token = api_token_revoke(token=token, acting_user=None, reason=reason)
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        state = "was already revoked" if was_revoked else "is revoked"
        self.stdout.write(f"API token {token.prefix} ({token.name!r} of {token.user.username}) "
                          f"{state}.")
