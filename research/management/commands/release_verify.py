from django.core.management.base import BaseCommand, CommandError

from research.models import Release
from research.services.releases import release_verify


class Command(BaseCommand):
    help = ("Rebuild a ready release into a scratch folder and compare its manifest with the "
            "stored one: byte-identical files have identical SHA-256. Exit status 1 if not.")

    def add_arguments(self, parser):
        parser.add_argument("release_id", type=int)

    def handle(self, *args, **opts):
        release = Release.objects.filter(pk=opts["release_id"]).first()
        if release is None:
            raise CommandError(f"No release {opts['release_id']}.")
        if release.status != Release.Status.READY:
            raise CommandError(f"{release} is {release.get_status_display().lower()}, not "
                               "ready: there is nothing to compare.")
        if not release_verify(release=release):
            raise CommandError(f"{release}: a rebuild differs from the stored files (a patient "
                               "may have withdrawn since it was built).")
        self.stdout.write(f"{release}: a rebuild gives byte-identical files.")
