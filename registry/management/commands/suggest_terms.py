import json

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.models import Domain, Site
from registry.services.mapping import suggest


class Command(BaseCommand):
    help = "Ranked concept suggestions for local words (vocabulary, code, name, score, method)."

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="+")
        parser.add_argument("--domain", required=True, choices=Domain.values)
        parser.add_argument("--site", default=None,
                            help="the asking site (its own approvals are not 'learned')")
        parser.add_argument("--limit", type=int, default=5)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts):
        site = None
        if opts["site"]:
            site = Site.objects.filter(code=opts["site"]).first()
            if site is None:
                raise CommandError(f"Unknown site code {opts['site']!r}.")
        try:
            results = {word: [s.as_dict() for s in suggest(opts["domain"], word, site=site,
                                                           limit=opts["limit"])]
                       for word in opts["words"]}
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        if opts["json"]:
            self.stdout.write(json.dumps(results, ensure_ascii=False, indent=1))
            return
        for word, suggestions in results.items():
            self.stdout.write(f"{word}:")
            for s in suggestions or [{"vocabulary": "-", "code": "-", "name_en": "(none)",
                                      "name_zh": "", "score": 0, "method": ""}]:
                self.stdout.write(f"  {s['score']:.3f} {s['method']:<8} {s['vocabulary']:<9} "
                                  f"{s['code']:<12} {s['name_en']} {s['name_zh']}")
