import csv
import sys
from pathlib import Path

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from registry.csvsafe import spreadsheet_safe
from registry.errors import RegistryError
from registry.extracts import PROBLEM_COLUMNS
from registry.models import ImportBatch, Site
from registry.services.imports import batch_create, extract_import

EXIT_ERRORS = 2
EXIT_NEEDS_MAPPING = 3


class Command(BaseCommand):
    help = ("Import a site extract (folder, .zip, or one .csv/.xlsx; docs/extract-format.md). "
            "All-or-nothing. Exit status 0 imported (or checked with --dry-run), 2 refused with "
            "errors, 3 stopped for words that need mapping (resume with --resume BATCH).")

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", type=Path)
        parser.add_argument("--site")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--resume", type=int, metavar="BATCH")
        parser.add_argument("--user", default=None, help="the acting user for the audit trail")
        parser.add_argument("--report", type=Path, default=None,
                            help="write the error report here as CSV")

    def handle(self, *args, **opts):
        if opts["resume"]:
            batch = ImportBatch.objects.filter(pk=opts["resume"]).first()
            if batch is None:
                raise CommandError(f"No import batch {opts['resume']}.")
        else:
            if not opts["path"] or not opts["site"]:
                raise CommandError("Give --site CODE and the extract's PATH (or --resume).")
            site = Site.objects.filter(code=opts["site"]).first()
            if site is None:
                raise CommandError(f"Unknown site code {opts['site']!r}.")
            user = None
            if opts["user"]:
                user = User.objects.filter(username=opts["user"]).first()
                if user is None:
                    raise CommandError(f"Unknown user {opts['user']!r}.")
            batch = batch_create(site=site, path=opts["path"].resolve(), acting_user=user,
                                 dry_run=opts["dry_run"])
        try:
            batch = extract_import(batch, progress=self.stderr.write)
        except RegistryError as error:  # e.g. a worker is running this batch now
            raise CommandError(error.summary()) from None
        self.stdout.write(f"import {batch.pk}: {batch.get_status_display()}")
        for table, counts in batch.counts.items():
            self.stdout.write(f"  {table:<16} " + ", ".join(f"{k} {v:,}"
                                                           for k, v in counts.items()))
        if batch.status == ImportBatch.Status.FAILED:
            for error in batch.errors[:200]:
                self.stdout.write("  {file} row {row} {column} {value!r}: {message}"
                                  .format(**error))
            if len(batch.errors) > 200:
                self.stdout.write(f"  ... and {len(batch.errors) - 200:,} more")
            if opts["report"]:
                with open(opts["report"], "w", newline="", encoding="utf-8-sig") as handle:
                    writer = csv.DictWriter(handle, PROBLEM_COLUMNS)
                    writer.writeheader()
                    writer.writerows({k: spreadsheet_safe(v) for k, v in error.items()}
                                     for error in batch.errors)
            sys.exit(EXIT_ERRORS)
        if batch.status == ImportBatch.Status.NEEDS_MAPPING:
            for word in batch.unmapped:
                top = word["suggestions"][0] if word["suggestions"] else None
                hint = f" (suggested: {top['code']} {top['name_en']} {top['score']:.2f})" \
                    if top else ""
                self.stdout.write(f"  needs mapping: {word['domain']} {word['text']!r} "
                                  f"in {word['rows']} row(s){hint}")
            self.stdout.write(f"Map these words (review page or import_mappings), then run "
                              f"import_extract --resume {batch.pk}.")
            sys.exit(EXIT_NEEDS_MAPPING)
