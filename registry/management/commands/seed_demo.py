from pathlib import Path

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.synth.run import seed


class Command(BaseCommand):
    help = (
        "Generate a deterministic synthetic multi-centre cohort (docs/synthetic-cohort.md) and "
        "load it into the registry, or with --as-extracts write one site extract per site "
        "without touching the database."
    )

    def add_arguments(self, parser):
        parser.add_argument("--patients", type=int, default=2000)
        parser.add_argument("--sites", type=int, default=6)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--as-extracts", type=Path, default=None, metavar="DIR")
        parser.add_argument("--truth", type=Path, default=None, metavar="FILE",
                            help="write the true per-cycle probabilities here (.csv.gz); "
                                 "default with --as-extracts: DIR/truth.csv.gz")
        parser.add_argument("--user", default=None, help="the acting user for the audit trail")

    def handle(self, *args, **opts):
        if opts["patients"] < 1 or opts["sites"] < 1:
            raise CommandError("--patients and --sites must be at least 1.")
        if opts["sites"] > opts["patients"]:
            raise CommandError("--sites cannot exceed --patients (every site enrols someone).")
        extracts = opts["as_extracts"]
        if extracts is not None and extracts.exists() and any(extracts.iterdir()):
            raise CommandError(f"{extracts} is not empty; give a new or empty folder.")
        truth = opts["truth"] or (extracts / "truth.csv.gz" if extracts else None)
        user = None
        if opts["user"]:
            user = User.objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"Unknown user {opts['user']!r}.")
        try:
            report = seed(patients=opts["patients"], sites=opts["sites"], seed=opts["seed"],
                          extracts_dir=extracts, truth_path=truth, acting_user=user,
                          progress=lambda m: self.stdout.write(m))
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        where = f"extracts in {extracts}" if extracts else "the registry"
        self.stdout.write(
            f"Seeded {report.patients:,} patients at {report.sites} sites into {where}: "
            f"{report.total_rows:,} rows in {report.seconds:.1f} s"
            + (f"; truth in {truth}" if truth else ""))
        for name, count in sorted(report.rows.items()):
            self.stdout.write(f"  {name:<40} {count:>12,}")
