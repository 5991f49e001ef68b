import inspect

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import autodiscover_modules

from registry.benchmarking import FIELD_SCALE_PATIENTS, REGISTRY


class Command(BaseCommand):
    help = ("Measure a path of the registry against its physical limit in the same run "
            "(e.g. `benchmark seed --patients 20000 --json`). Runs in a scratch PostgreSQL "
            "database that is dropped afterwards.")

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?")
        parser.add_argument("--patients", type=int, default=FIELD_SCALE_PATIENTS)
        parser.add_argument("--json", action="store_true",
                            help="print one JSON object per measured figure")
        parser.add_argument("--list", action="store_true")
        parser.add_argument("--rows", type=int,
                            help="rows to work on, for benchmarks that take a count (recode)")
        parser.add_argument("--samples", type=int,
                            help="requests per page or saves, for benchmarks that take "
                                 "percentiles (pages, score; default and minimum 100)")
        parser.add_argument("--keepdb", action="store_true",
                            help="keep the scratch database and reuse it next time "
                                 "(pages, dq, train, score)")

    def handle(self, *args, **opts):
        autodiscover_modules("benchmarks")
        if opts["list"] or not opts["name"]:
            for name, function in sorted(REGISTRY.items()):
                self.stdout.write(f"{name:<12} {(function.__doc__ or '').strip()}")
            return
        function = REGISTRY.get(opts["name"])
        if function is None:
            raise CommandError(f"Unknown benchmark {opts['name']!r}; known: "
                               f"{', '.join(sorted(REGISTRY))}.")
        if opts["patients"] < 1:
            raise CommandError("--patients must be at least 1.")
        progress = (lambda m: self.stderr.write(m)) if opts["json"] else self.stdout.write
        try:
            kwargs = {"keepdb": True} if opts["keepdb"] else {}
            for option in ("rows", "samples"):
                if opts[option] is not None:
                    if option not in inspect.signature(function).parameters:
                        raise CommandError(f"benchmark {opts['name']} takes no --{option}.")
                    kwargs[option] = opts[option]
            figures = function(patients=opts["patients"], progress=progress, **kwargs)
        except (RuntimeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for figure in figures:
            self.stdout.write(figure.as_json() if opts["json"] else figure.as_text())
