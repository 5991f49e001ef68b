"""`manage.py partner_token`: partner organisations' people and their API tokens at the
command line (the partners' page does the same on the web).

    partner_token create --organisation "Acme Pharma" --user lin --scopes aggregates,feasibility \
        [--email lin@acme.example] [--expires 180] [--name "feasibility pipeline"]
    partner_token list [--organisation "Acme Pharma"]
    partner_token revoke PREFIX [--reason "laptop stolen"]

`create` makes the organisation (a company), the person (a partner, without a usable
password), the affiliation and the token in one transaction, and prints the token alone on
standard output, once (TOKEN=$(manage.py partner_token create ...)); what it is goes to
standard error.
"""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from registry.api.scopes import ROLE_SCOPES
from registry.errors import RegistryError
from registry.models import Role
from registry.models.api import API_TOKEN_EXPIRES_DAYS_MAX, API_TOKEN_EXPIRES_DAYS_MIN
from registry.selectors.api_tokens import api_token_by_prefix
from registry.services.api_tokens import api_token_create, api_token_revoke
from research.selectors.partners import partner_organisations
from research.services.partners import partner_organisation_add, partner_person_add

DEFAULT_NAME = "command line"


class Command(BaseCommand):
    help = ("Partner organisations' people and API tokens: create (organisation, person, "
            "affiliation and token at once), list, revoke. Partner scopes: "
            + ", ".join(sorted(ROLE_SCOPES[Role.PARTNER])) + ".")

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="action", required=True)
        create = commands.add_parser("create", help="organisation + partner + token")
        create.add_argument("--organisation", required=True)
        create.add_argument("--user", required=True, help="username (created when new)")
        create.add_argument("--email", default="")
        create.add_argument("--scopes", required=True,
                            help="comma-separated, e.g. aggregates,feasibility")
        create.add_argument("--expires", type=int, default=None, metavar="DAYS",
                            help=f"days until it expires ({API_TOKEN_EXPIRES_DAYS_MIN}-"
                                 f"{API_TOKEN_EXPIRES_DAYS_MAX}); default: never")
        create.add_argument("--name", default=DEFAULT_NAME, help="what the token is for")
        listing = commands.add_parser("list", help="organisations, people, tokens")
        listing.add_argument("--organisation", default=None)
        revoke = commands.add_parser("revoke", help="revoke a token by its prefix")
        revoke.add_argument("prefix")
        revoke.add_argument("--reason", default="")

    def handle(self, *args, **opts):
        try:
            getattr(self, f"_{opts['action']}")(opts)
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc

    def _create(self, opts) -> None:
        scopes = [s.strip() for s in opts["scopes"].split(",") if s.strip()]
        with transaction.atomic():
            organisation = partner_organisation_add(name=opts["organisation"], acting_user=None)
            user, _affiliation = partner_person_add(
                organisation=organisation, username=opts["user"], email=opts["email"],
                acting_user=None)
            token, text = api_token_create(user=user, name=opts["name"], scopes=scopes,
                                           expires_days=opts["expires"], acting_user=None)
        expiry = token.expires_at.isoformat() if token.expires_at else "never"
        sys.stderr.write(
            f"API token {token.name!r} for {user.username} of {organisation.name}, prefix "
            f"{token.prefix}, scopes {', '.join(token.scopes)}, expires {expiry}. It is "
            "printed once, below; only its digest is kept.\n")
        self.stdout.write(text)

    def _list(self, opts) -> None:
        for row in partner_organisations():
            if opts["organisation"] and row.organisation.name != opts["organisation"]:
                continue
            self.stdout.write(row.organisation.name)
            for person in row.people:
                self.stdout.write(f"  {person.user.username}")
                for t in person.tokens:
                    token = t.token
                    expires = token.expires_at.isoformat() if token.expires_at else "never"
                    used = token.last_used_at.isoformat() if token.last_used_at else "never"
                    reason = f" ({token.revoke_reason})" if token.revoke_reason else ""
                    self.stdout.write(
                        f"    {token.prefix}  {token.name!r}  {','.join(token.scopes)}  "
                        f"created {token.created_at.isoformat()}  expires {expires}  "
                        f"last used {used}  {t.state}{reason}")

    def _revoke(self, opts) -> None:
        token = api_token_by_prefix(opts["prefix"])
        if token is None:
            raise CommandError(f"No API token has the prefix {opts['prefix']!r}.")
        was_revoked = token.revoked_at is not None
        token = api_token_revoke(token=token, acting_user=None, reason=opts["reason"])
        state = "was already revoked" if was_revoked else "is revoked"
        self.stdout.write(f"API token {token.prefix} ({token.name!r} of {token.user.username}) "
                          f"{state}.")
