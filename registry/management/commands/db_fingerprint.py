import json

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from registry.backup import conninfo_for, fingerprint


class Command(BaseCommand):
    help = (
        "Print a fingerprint of the database as JSON: the row count of every table, a hash of "
        "every history table and the id sequences. Take it of the source and of a restored "
        "backup (--dbname) and compare (docs/backup.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dbname", default=None,
                            help="another database on the same server, e.g. a restored copy")

    def handle(self, *args, **opts):
        if connections["default"].vendor != "postgresql":
            raise CommandError("Fingerprints need PostgreSQL.")
        result = fingerprint(conninfo_for(dbname=opts["dbname"]))
        self.stdout.write(json.dumps(result, indent=1, sort_keys=True))
