"""Benchmarks of the registry app (see registry/benchmarking.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.db import connection, transaction

from registry.benchmarking import Figure, Stopwatch, benchmark, peak_rss_mib, scratch_database
from registry.models import SiteTerm
from registry.services.terminology import starter_vocabulary_load
from registry.synth.load import CLINICAL_MODELS, foreign_keys_restore, foreign_keys_suspend
from registry.synth.run import seed


def _tables() -> list[str]:
    tables = []
    for model in CLINICAL_MODELS:
        tables += [model._meta.db_table, model.history.model._meta.db_table]
    return tables


def _rows_stored(tables: list[str]) -> int:
    with connection.cursor() as cursor:
        total = 0
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (our own table names)
            total += cursor.fetchone()[0]
    return total


def copy_baseline(tables: list[str], folder: Path, *, foreign_keys: bool = False) -> float:
    """Export what is in `tables`, empty them, and time a raw COPY of the same rows back into
    the same indexed tables: foreign keys suspended and re-validated in one pass as the seed
    does, or with `foreign_keys` checked row by row at commit as any writer that must not
    lock the tables against other sites has them."""
    connection.ensure_connection()
    raw = connection.connection
    for table in tables:
        with (
            open(folder / f"{table}.csv", "wb") as out,
            raw.cursor() as cursor,
            cursor.copy(f"COPY {table} TO STDOUT WITH (FORMAT csv)") as copy,
        ):
            for chunk in copy:
                out.write(chunk)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    watch = Stopwatch()
    with watch.running(), transaction.atomic():
        keys = [] if foreign_keys else foreign_keys_suspend(tables)
        for table in tables:
            with (
                open(folder / f"{table}.csv", "rb") as source,
                raw.cursor() as cursor,
                cursor.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy,
            ):
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        foreign_keys_restore(keys)
    return watch.seconds


@benchmark("seed")
def seed_benchmark(
    *, patients: int, sites: int | None = None, seed_value: int = 42, progress=print
) -> list[Figure]:
    """The generator's load of N patients against a raw COPY of the same rows."""
    sites = sites or max(1, min(300, patients // 1500))
    with scratch_database():
        starter_vocabulary_load(acting_user=None)
        watch = Stopwatch()
        with watch.running():
            report = seed(patients=patients, sites=sites, seed=seed_value, progress=progress)
        rows = report.total_rows
        ours_rss = peak_rss_mib()
        with tempfile.TemporaryDirectory() as folder:
            baseline = copy_baseline(_tables(), Path(folder))
    return [
        Figure(
            name="seed",
            ours_s=watch.seconds,
            baseline="postgres_copy",
            baseline_s=baseline,
            rows=rows,
            peak_rss_mib=ours_rss,
        )
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure_page(client, url: str, repeats: int) -> tuple[list[float], list[float], int]:
    """Server time of the page through Django, and the time of its SQL alone (the physical
    limit: the same statements straight on the database connection)."""
    import time

    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches and connection
    ours, database = [], []
    rows = 0
    for _ in range(repeats):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            ours.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for query in captured.captured_queries:
                sql = query["sql"]
                if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                    cursor.execute(sql)
                    rows += len(cursor.fetchall())
        database.append(time.perf_counter() - started)
    return ours, database, rows // repeats


@benchmark("pages")
def pages_benchmark(*, patients: int, progress=print, repeats: int = 20,
                    keepdb: bool = False) -> list[Figure]:
    """Server time of the work queue, patient list and chart (median and p95) against the
    time of the same SQL run directly."""
    import random

    from django.test import Client, override_settings

    from registry.models import Patient, Role, Site
    from registry.services.organisation import user_add

    figures = []
    with scratch_database(keep=keepdb), override_settings(
            ALLOWED_HOSTS=["testserver"], SECURE_SSL_REDIRECT=False, DEBUG=False):
        if Patient.objects.count() != patients:
            with connection.cursor() as cursor:
                tables = ", ".join(_tables())
                cursor.execute(f"TRUNCATE {tables}, registry_siteterm, registry_termmapping, "
                               f"registry_department, registry_site CASCADE")
            starter_vocabulary_load(acting_user=None)
            seed(patients=patients, sites=max(1, min(300, patients // 1500)), seed=42,
                 progress=progress)
        biggest = max(Site.objects.all(), key=lambda s: Patient.objects.filter(site=s).count())
        clerk, _ = user_add(username="bench_clerk", role=Role.CLERK, site_codes=[biggest.code],
                            acting_user=None)
        client = Client()
        client.force_login(clerk)
        ids = list(Patient.objects.filter(site=biggest).values_list("registry_id", flat=True))
        sample = random.Random(1).sample(ids, min(repeats, len(ids)))
        pages = {"queue": ["/"], "patient_list": ["/patients/", "/patients/?status=locked",
                                                  "/patients/?cancer=C34&page=2"],
                 "search": [f"/patients/?q={i}" for i in sample[:5]],
                 "chart": [f"/patients/{i}/" for i in sample]}
        for name, urls in pages.items():
            ours, database, rows = [], [], 0
            for url in urls:
                o, d, r = _measure_page(client, url, max(1, repeats // len(urls)))
                ours += o
                database += d
                rows += r
            figures.append(Figure(
                name=f"pages:{name}", ours_s=_percentile(ours, 0.5), baseline="sql_only",
                baseline_s=_percentile(database, 0.5), rows=rows, peak_rss_mib=peak_rss_mib(),
                extra={"p95_s": round(_percentile(ours, 0.95), 4),
                       "sql_p95_s": round(_percentile(database, 0.95), 4),
                       "requests": len(ours), "site_patients": len(ids)}))
    return figures


@benchmark("import")
def import_benchmark(*, patients: int, progress=print, keepdb: bool = False) -> list[Figure]:
    """Importing the cohort's site extracts (all words pre-mapped), each uploaded by a clerk of
    its site as on the web, against a raw COPY of the same final rows into the same indexed
    tables; and a 1,000-row extract a clerk waits for. Rows are counted as `benchmark seed`
    counts them: the clinical rows, their history rows and the site words written."""
    import time

    from registry.models import ImportBatch, Role
    from registry.services.imports import batch_create, extract_import
    from registry.services.mapping_files import mappings_import
    from registry.services.organisation import site_upsert, user_add
    from registry.synth import generator as g
    from registry.synth.extracts import write_site_extract

    sites = max(1, min(300, patients // 1500))
    figures = []
    written = [*_tables(), SiteTerm._meta.db_table]

    def clerk_of(code: str):
        return user_add(username=f"bench_clerk_{code.lower()}", role=Role.CLERK,
                        site_codes=[code], acting_user=None)[0]

    with tempfile.TemporaryDirectory() as folder, scratch_database():
        root = Path(folder)
        starter_vocabulary_load(acting_user=None)
        specs = g.plan_sites(n_sites=sites, n_patients=patients, seed=42)
        progress(f"writing {sites} site extracts and their mapping files")
        for spec in specs:
            cohort = g.generate_site(spec)
            write_site_extract(cohort, root / "extracts")
            mapping = root / f"{spec.code}-mappings.csv"
            cohort.terms[["domain", "text", "vocabulary", "code"]].rename(
                columns={"text": "local_term"}).to_csv(mapping, index=False)
            site, _ = site_upsert(code=spec.code, name=spec.name, acting_user=None)
            mappings_import(site=site, path=mapping, acting_user=None)
        clerks = {spec.code: clerk_of(spec.code) for spec in specs}
        watch = Stopwatch()
        clinical_rows = 0
        stored_before = _rows_stored(written)
        for number, spec in enumerate(specs, 1):
            site = site_upsert(code=spec.code, name=spec.name, acting_user=None)[0]
            with watch.running():
                batch = extract_import(batch_create(site=site, path=root / "extracts" / spec.code,
                                                    acting_user=clerks[spec.code]))
            if batch.status != ImportBatch.Status.IMPORTED:
                raise RuntimeError(f"{spec.code}: {batch.status} {batch.errors[:3]} "
                                   f"{batch.unmapped[:3]}")
            clinical_rows += sum(c["created"] for c in batch.counts.values())
            progress(f"[{number}/{len(specs)}] {spec.code} imported, {clinical_rows:,} clinical "
                     f"rows, {watch.seconds:.1f} s")
        rows = _rows_stored(written) - stored_before
        ours_rss = peak_rss_mib()
        # Each path is compared with the raw COPY under its own locking regime. The import is a
        # live writer: other sites import and clerks type while it runs, so it cannot drop the
        # tables' foreign keys (ALTER TABLE takes an ACCESS EXCLUSIVE lock); its physical limit
        # is a COPY of the same rows into the same tables as they stand, each foreign key
        # checked by PostgreSQL. The offline bulk load (suspend the keys, COPY, re-validate each
        # key in one pass, as the seed does) is reported beside it.
        bulk_load = copy_baseline(_tables(), root)
        checked = copy_baseline(_tables(), root, foreign_keys=True)
        figures.append(Figure(name="import", ours_s=watch.seconds,
                              baseline="postgres_copy_foreign_keys_checked",
                              baseline_s=checked, rows=rows, peak_rss_mib=ours_rss,
                              extra={"copy_foreign_keys_suspended_s": round(bulk_load, 3),
                                     "ratio_vs_copy_foreign_keys_suspended":
                                         round(watch.seconds / bulk_load, 3),
                                     "clinical_rows": clinical_rows,
                                     "acting_user_role": Role.CLERK.value}))
        # A clerk's extract of about 1,000 rows, into a new site, once the reloaded tables
        # have statistics again (as autovacuum gives them after a bulk load; with none the
        # planner takes millions of rows for an empty table).
        with connection.cursor() as cursor:
            for table in _tables():
                cursor.execute(f"ANALYZE {table}")
        small = g.plan_sites(n_sites=1, n_patients=10, seed=7)[0]
        small.code = "CLERK1"
        cohort = g.generate_site(small)
        write_site_extract(cohort, root / "small")
        site = site_upsert(code=small.code, name="clerk extract", acting_user=None)[0]
        clerk = clerk_of(small.code)
        mapping = root / "small-mappings.csv"
        cohort.terms[["domain", "text", "vocabulary", "code"]].rename(
            columns={"text": "local_term"}).to_csv(mapping, index=False)
        mappings_import(site=site, path=mapping, acting_user=None)
        stored_before = _rows_stored(written)
        started = time.perf_counter()
        batch = extract_import(batch_create(site=site, path=root / "small" / small.code,
                                            acting_user=clerk))
        seconds = time.perf_counter() - started
        small_rows = _rows_stored(written) - stored_before
        figures.append(Figure(name="import:clerk_extract", ours_s=seconds, baseline="none",
                              baseline_s=0.0, rows=small_rows, peak_rss_mib=peak_rss_mib()))
    return figures
