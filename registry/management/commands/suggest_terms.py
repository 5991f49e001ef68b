import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.errors import RegistryError
from registry.models import Domain, Site
from registry.services.mapping import suggest
from registry.suggestion_scoring import (
    LABELLED_SET,
    MIN_MARGIN,
    labelled_set_read,
    suggestion_accuracy,
)


class Command(BaseCommand):
    help = ("Ranked concept suggestions for local words (vocabulary, code, name, score, method), "
            "or with --evaluate their top-1 and top-3 accuracy on the labelled set.")

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="*")
        parser.add_argument("--domain", choices=Domain.values)
        parser.add_argument("--site", default=None,
                            help="the asking site (its own approvals are not 'learned')")
        parser.add_argument("--limit", type=int, default=5)
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--evaluate", action="store_true",
                            help="report top-1 and top-3 accuracy on a labelled set of local "
                                 "words (domain, local_word, expected_code)")
        parser.add_argument("--labelled", default=str(LABELLED_SET),
                            help="the labelled set to evaluate (CSV)")

    def handle(self, *args, **opts):
        site = None
        if opts["site"]:
            site = Site.objects.filter(code=opts["site"]).first()
            if site is None:
                raise CommandError(f"Unknown site code {opts['site']!r}.")
        if opts["evaluate"]:
            return self._evaluate(Path(opts["labelled"]), site, opts["json"])
        if not opts["words"] or not opts["domain"]:
            raise CommandError("Give --domain and one or more words (or --evaluate).")
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

    def _evaluate(self, path: Path, site: Site | None, as_json: bool) -> None:
        try:
            words = labelled_set_read(path)
        except (OSError, KeyError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read the labelled set {path}: {exc}") from exc

        def rank(domain: str, word: str) -> tuple[list[str], float]:
            found = suggest(domain, word, site=site, limit=3)
            return [s.code for s in found], (found[0].margin or 0.0) if found else 0.0

        try:
            accuracy = suggestion_accuracy(rank, words)
        except RegistryError as exc:
            raise CommandError(exc.summary()) from exc
        report = {"words": accuracy.total, "top1": accuracy.top1, "top3": accuracy.top3,
                  "min_margin": MIN_MARGIN, "clear_margin": accuracy.clear,
                  "clear_margin_wrong": accuracy.clear_wrong,
                  "misses": [{"domain": item.domain, "word": item.word,
                              "expected": item.expected, "got": list(codes)}
                             for item, codes in accuracy.misses]}
        if as_json:
            self.stdout.write(json.dumps(report, ensure_ascii=False, indent=1))
            return
        self.stdout.write(
            f"{accuracy.total} labelled words: top-1 {accuracy.top1:.3f}, top-3 "
            f"{accuracy.top3:.3f}; {accuracy.clear} first suggestions lead by >= {MIN_MARGIN} "
            f"(bulk-approvable), {accuracy.clear_wrong} of them wrong")
        for item in report["misses"]:
            self.stdout.write(f"  miss {item['domain']} {item['word']!r}: expected "
                              f"{item['expected']}, got {', '.join(item['got']) or '(none)'}")
