"""Benchmarks of the committee's releases (see registry/benchmarking.py).

`benchmark release`: build a release of every clinical variable for the whole seeded cohort
(every site opted in), as the worker builds it, against the raw `COPY (same query) TO STDOUT`
of the same reads in the same run. Memory is sampled while the release builds: the build
streams each record kind in chunks, so its peak should not grow with the cohort.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from django.db import connection
from django.test import override_settings
from django.utils import timezone

from registry.benchmarking import Figure, Stopwatch, benchmark, scratch_database
from registry.benchmarks import _tables
from registry.kinds import KINDS
from registry.models import Role, Site
from registry.selectors.bulk import copy_sql
from registry.services.organisation import user_add
from registry.services.terminology import starter_vocabulary_load
from registry.synth.run import seed
from research import catalog
from research.models import DataRequest, Release, SiteParticipation
from research.services.committee import decision_record, vote_cast
from research.services.releases import (
    COHORT_READS,
    kind_columns,
    release_build,
    selected_variables,
)
from research.services.requests import request_create, request_submit

BENCH_PASSWORD = "benchmark-only-password-0123456789"  # noqa: S105 (scratch database only)


def _research_tables() -> list[str]:
    from django.apps import apps

    return [m._meta.db_table for m in apps.get_app_config("research").get_models()]


def _cohort(patients: int, progress) -> None:
    sites = max(3, min(300, patients // 1500))
    from registry.models import Patient

    if Patient.objects.count() != patients or Site.objects.count() != sites:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(_tables() + _research_tables())}, "
                           "registry_siteterm, registry_termmapping, registry_department, "
                           "registry_site CASCADE")
        starter_vocabulary_load(acting_user=None)
        seed(patients=patients, sites=sites, seed=42, progress=progress)
    with connection.cursor() as cursor:
        for table in _tables():
            cursor.execute(f"ANALYZE {table}")


def _person(username: str, role: str):
    from django.contrib.auth.models import User

    user = User.objects.filter(username=username).first()
    return user or user_add(username=username, role=role, site_codes=[],
                            password=BENCH_PASSWORD, acting_user=None)[0]


def _approved_request() -> DataRequest:
    """A request of every clinical variable for every site, approved, every site opted in."""
    investigator = _person("bench-investigator", Role.INVESTIGATOR)
    members = [_person(f"bench-member-{i}", Role.COMMITTEE) for i in (1, 2)]
    chair = _person("bench-chair", Role.CHAIR)
    variables = [v.name for v in catalog.variables() if v.klass == catalog.CLINICAL]
    request = request_create(
        acting_user=investigator, title="Benchmark: every clinical variable",
        question="How fast is a release of the whole cohort?", purpose="academic",
        access_days=30, criteria={}, variables=variables,
        site_codes=list(Site.objects.values_list("code", flat=True)))
    request_submit(request=request, acting_user=investigator)
    for member in members:
        vote_cast(request=request, acting_user=member, choice="approve")
    decision_record(request=request, acting_user=chair)
    # The harness answers for every site at once (a PI per site would answer in the app).
    SiteParticipation.objects.filter(request=request).update(
        answer=SiteParticipation.Answer.OPTED_IN, answered_at=timezone.now())
    request.refresh_from_db()
    return request


class _RssSampler:
    """Peak resident memory of this process while a block runs (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()

    @staticmethod
    def rss_kib() -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            time.sleep(0.02)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[_RssSampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak_kib = max(self.peak_kib, self.rss_kib())


def _raw_copy(release: Release, progress) -> tuple[float, int]:
    """Seconds and bytes of COPY (same query) TO STDOUT for every read the build makes."""
    request = release.request
    decision = request.decisions.get(revision=request.revision)
    variables = selected_variables(request, decision)
    site_ids = sorted(request.participations.filter(
        answer=SiteParticipation.Answer.OPTED_IN).values_list("site_id", flat=True))
    by_kind: dict[str, list] = {}
    for variable in variables:
        by_kind.setdefault(variable.kind, []).append(variable)
    reads = list(COHORT_READS) + [
        (kind.name, kind_columns(kind, by_kind[kind.name]))
        for kind in KINDS.values() if kind.parent and kind.name in by_kind]
    clock, size = Stopwatch(), 0
    connection.ensure_connection()
    for kind, columns in reads:
        statement, params = copy_sql(kind, sites=site_ids, as_of=release.snapshot_at,
                                     columns=columns)
        with clock.running(), connection.connection.cursor() as cursor, \
                cursor.copy(statement, params) as copy:
            for chunk in copy:
                size += len(chunk)
        progress(f"COPY {kind}: {clock.seconds:.1f} s so far")
    return clock.seconds, size


@benchmark("release")
def release_benchmark(*, patients: int, progress=print, keepdb: bool = False) -> list[Figure]:
    """A release of every clinical variable for the whole cohort (every site opted in) as the
    worker builds it, against a raw COPY (same queries) TO STDOUT; wall time and peak memory
    of the build."""
    folder = Path(tempfile.mkdtemp(prefix="release-bench-"))
    try:
        with (scratch_database(keep=keepdb),
              override_settings(RELEASE_DIR=folder, COMMITTEE_QUORUM=2,
                                EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")):
            _cohort(patients, progress)
            request = _approved_request()
            release = Release.objects.create(
                request=request, number=1, snapshot_at=timezone.now(),
                key="ab" * 32, requested_by=request.requester,
                expires_at=timezone.now() + timezone.timedelta(days=30))
            before_kib = _RssSampler.rss_kib()
            sampler = _RssSampler()
            started = time.perf_counter()
            with sampler.sampling():
                release = release_build(
                    release_id=release.pk,
                    progress=lambda pct, note: progress(f"release {pct}% {note}"))
            ours_s = time.perf_counter() - started
            baseline_s, copied = _raw_copy(release, progress)
            rows = sum(release.manifest["tables"].values())
            written = sum(f["bytes"] for f in release.manifest["files"])
            return [Figure(
                name="release", ours_s=ours_s, baseline="COPY (same queries) TO STDOUT",
                baseline_s=baseline_s, rows=rows, peak_rss_mib=sampler.peak_kib / 1024,
                extra={"patients": patients, "released_patients": release.patients,
                       "rss_before_mib": round(before_kib / 1024, 1),
                       "build_rss_growth_mib": round((sampler.peak_kib - before_kib) / 1024, 1),
                       "copy_mib": round(copied / 2**20, 1),
                       "files_mib": round(written / 2**20, 1),
                       "tables": release.manifest["tables"]})]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
