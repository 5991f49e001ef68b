"""Benchmarks of the registry app (see registry/benchmarking.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.db import connection, transaction

from registry.benchmarking import Figure, Stopwatch, benchmark, peak_rss_mib, scratch_database
from registry.kinds import CLINICAL_MODELS
from registry.models import SiteTerm
from registry.services.terminology import starter_vocabulary_load
from registry.synth.load import foreign_keys_restore, foreign_keys_suspend
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


# Requests per page: below this a p95 (let alone a p99) is one or two requests on a noisy
# shared machine, not a percentile.
PAGE_SAMPLES = 100


def _spread(samples: int, urls: list[str]) -> list[tuple[str, int]]:
    """`samples` requests over `urls`, as evenly as they divide (the first take the rest)."""
    each, rest = divmod(samples, len(urls))
    return [(url, each + (i < rest)) for i, url in enumerate(urls) if each + (i < rest)]


def _measure_page(client, url: str, repeats: int) -> tuple[list[float], list[float], int]:
    """Server time of the page through Django, and the time of its SQL alone (the physical
    limit: the same statements straight on the database connection), `repeats` times after
    one warm-up request; the rows are those its SQL read, summed."""
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
    return ours, database, rows


@benchmark("pages")
def pages_benchmark(*, patients: int, progress=print, samples: int = PAGE_SAMPLES,
                    keepdb: bool = False) -> list[Figure]:
    """Server time of the work queue, patient list, search and chart (p50, p95, p99 of at
    least 100 requests each) against the time of the same SQL run directly."""
    import random

    from django.test import Client, override_settings

    from registry.models import Patient, Role, Site
    from registry.services.organisation import user_add

    if samples < PAGE_SAMPLES:
        raise ValueError(f"--samples {samples} is too few: p95 and p99 need at least "
                         f"{PAGE_SAMPLES} requests per page.")
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
        # Charts of as many different patients as there are samples (each is then read once;
        # a site with fewer patients has each read more than once).
        chosen = random.Random(1).sample(ids, min(samples, len(ids)))
        pages = {"queue": ["/"], "patient_list": ["/patients/", "/patients/?status=locked",
                                                  "/patients/?cancer=C34&page=2"],
                 "search": [f"/patients/?q={i}" for i in chosen[:5]],
                 "chart": [f"/patients/{i}/" for i in chosen]}
        for name, urls in pages.items():
            ours, database, rows = [], [], 0
            for url, repeats in _spread(samples, urls):
                o, d, r = _measure_page(client, url, repeats)
                ours += o
                database += d
                rows += r
            progress(f"pages:{name}: {len(ours)} requests")
            figures.append(Figure(
                name=f"pages:{name}", ours_s=_percentile(ours, 0.5), baseline="sql_only",
                baseline_s=_percentile(database, 0.5), rows=rows // len(ours),
                peak_rss_mib=peak_rss_mib(),
                extra={"requests": len(ours), "distinct_urls": len(urls),
                       "p50_s": round(_percentile(ours, 0.5), 4),
                       "p95_s": round(_percentile(ours, 0.95), 4),
                       "p99_s": round(_percentile(ours, 0.99), 4),
                       "sql_p50_s": round(_percentile(database, 0.5), 4),
                       "sql_p95_s": round(_percentile(database, 0.95), 4),
                       "sql_p99_s": round(_percentile(database, 0.99), 4),
                       "site_patients": len(ids)}))
    return figures


@benchmark("import")
def import_benchmark(*, patients: int, progress=print, keepdb: bool = False) -> list[Figure]:
    """Importing the cohort's site extracts (all words pre-mapped), each uploaded by a clerk of
    its site as on the web, against a raw COPY of the same final rows into the same indexed
    tables; and a 1,000-row extract a clerk waits for. Rows are counted as `benchmark seed`
    counts them: the clinical rows, their history rows and the site words written. The
    term-frequency refresh every import pays is timed on its own (part of the import's time),
    beside a full recount of the site's words after each import (not part of it), which
    must find the same counts."""
    import time
    from unittest import mock

    from registry.models import ImportBatch, Role
    from registry.services import imports as import_service
    from registry.services.imports import batch_create, extract_import
    from registry.services.mapping_files import mappings_import
    from registry.services.organisation import site_upsert, user_add
    from registry.services.terminology import site_term_frequencies_refresh
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
        watch, refresh, recount = Stopwatch(), Stopwatch(), Stopwatch()
        add_frequencies = import_service.site_term_frequencies_import_add

        def frequencies_added(**kwargs):
            with refresh.running():
                return add_frequencies(**kwargs)

        def frequencies(site) -> dict:
            return dict(SiteTerm.objects.filter(site=site).values_list("pk", "frequency"))

        clinical_rows = 0
        stored_before = _rows_stored(written)
        for number, spec in enumerate(specs, 1):
            site = site_upsert(code=spec.code, name=spec.name, acting_user=None)[0]
            with watch.running(), mock.patch.object(
                    import_service, "site_term_frequencies_import_add", frequencies_added):
                batch = extract_import(batch_create(site=site, path=root / "extracts" / spec.code,
                                                    acting_user=clerks[spec.code]))
            if batch.status != ImportBatch.Status.IMPORTED:
                raise RuntimeError(f"{spec.code}: {batch.status} {batch.errors[:3]} "
                                   f"{batch.unmapped[:3]}")
            clinical_rows += sum(c["created"] for c in batch.counts.values())
            # What the refresh cost when each import recounted its site's stored rows; it must
            # find the counts the import left.
            added = frequencies(site)
            with recount.running():
                site_term_frequencies_refresh(site_id=site.pk)
            if frequencies(site) != added:
                raise RuntimeError(f"{spec.code}: the import's term frequencies differ from a "
                                   "full recount")
            progress(f"[{number}/{len(specs)}] {spec.code} imported, {clinical_rows:,} clinical "
                     f"rows, {watch.seconds:.1f} s (term frequencies {refresh.seconds:.2f} s, "
                     f"full recounts {recount.seconds:.2f} s)")
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
                                     "term_frequencies_s": round(refresh.seconds, 3),
                                     "ratio_without_term_frequencies":
                                         round((watch.seconds - refresh.seconds) / checked, 3),
                                     "term_frequencies_full_recount_s":
                                         round(recount.seconds, 3),
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
        # The first site sends its whole extract again, unchanged, as hospitals do: nothing is
        # written, so the term frequencies have nothing to add, where a recount of the site
        # reads every row it holds.
        first = specs[0]
        site = site_upsert(code=first.code, name=first.name, acting_user=None)[0]
        refresh.seconds = recount.seconds = 0.0
        started = time.perf_counter()
        with mock.patch.object(
                import_service, "site_term_frequencies_import_add", frequencies_added):
            batch = extract_import(batch_create(site=site, path=root / "extracts" / first.code,
                                                acting_user=clerks[first.code]))
        seconds = time.perf_counter() - started
        if batch.status != ImportBatch.Status.IMPORTED:
            raise RuntimeError(f"{first.code} again: {batch.status}")
        with recount.running():
            site_term_frequencies_refresh(site_id=site.pk)
        figures.append(Figure(
            name="import:same_extract_again", ours_s=seconds, baseline="none", baseline_s=0.0,
            rows=sum(c["created"] + c["updated"] for c in batch.counts.values()),
            peak_rss_mib=peak_rss_mib(),
            extra={"term_frequencies_s": round(refresh.seconds, 3),
                   "term_frequencies_full_recount_s": round(recount.seconds, 3),
                   "site_clinical_rows": sum(c["unchanged"] for c in batch.counts.values())}))
    return figures


RECODE_ROWS = 1_000_000


@benchmark("recode")
def recode_benchmark(*, patients: int, rows: int = RECODE_ROWS, progress=print,
                     repeats: int = 3) -> list[Figure]:
    """Re-coding one site word used by N lab rows (`--rows`, default 1,000,000) after its
    mapping changes, by a monitor, against a plain UPDATE of the same rows' concept."""
    import itertools
    import time

    import pandas as pd

    from registry.audit import copy_frame_audited, history_columns
    from registry.models import Concept, LabResult, Patient, Role
    from registry.services.mapping import RECODE_BATCH_IDS, mapping_approve, term_resolve
    from registry.services.organisation import site_upsert, user_add

    if rows < 1:
        raise RuntimeError("--rows must be at least 1.")
    patients = max(1, min(patients, rows))
    with scratch_database():
        starter_vocabulary_load(acting_user=None)
        site, _ = site_upsert(code="RECODE", name="Re-coding benchmark", acting_user=None)
        monitor, _ = user_add(username="bench_monitor", role=Role.MONITOR,
                              site_codes=[site.code], acting_user=None)
        term, old = term_resolve(site=site, domain="lab", text="ANC", acting_user=monitor)
        unit, unit_concept = term_resolve(site=site, domain="unit", text="/mm3",
                                          acting_user=monitor)
        new = Concept.objects.get(code="6690-2")  # the word meant white cells after all
        if old is None or unit_concept is None or old == new:
            raise RuntimeError("the starter vocabulary no longer maps ANC and /mm3")
        progress(f"building {patients:,} patients and {rows:,} lab rows with their history")
        started = time.perf_counter()
        patient_ids = copy_frame_audited(Patient, pd.DataFrame({
            "site_id": site.pk, "sex": "F", "birth_year": 1960,
            "hospital_number_hash": [f"{i:064x}" for i in range(patients)]}),
            acting_user=monitor, reason="benchmark patients")
        table = LabResult._meta.db_table
        history = LabResult.history.model._meta.db_table
        columns = ", ".join(history_columns(LabResult))
        canonical = Concept.objects.get(code=old.attributes["canonical_unit"])
        with transaction.atomic(), connection.cursor() as cursor:
            # Lab rows spread over the patients, one a day per patient, built in the database.
            # Names come from the model, values are bound.
            cursor.execute(
                f"INSERT INTO {table} (site_id, status, version, created_at, updated_at, "  # noqa: S608
                "patient_id, test_term_id, lab_id, collected_date, value_text, comparator, "
                "value, unit_term_id, unit_id, value_canonical, canonical_unit_id, unit_flag) "
                "SELECT %s, 'draft', 1, now(), now(), %s + (i %% %s), %s, %s, "
                "DATE '2020-01-01' + (i / %s)::int, (1000 + i %% 3000)::text, '', "
                "1000 + i %% 3000, %s, %s, (1000 + i %% 3000) * 0.001, %s, '' "
                "FROM generate_series(0, %s - 1) AS i",
                [site.pk, patient_ids[0], patients, term.pk, old.pk, patients, unit.pk,
                 unit_concept.pk, canonical.pk, rows])
            cursor.execute(
                f"INSERT INTO {history} ({columns}, history_date, history_change_reason, "  # noqa: S608
                f"history_type, history_user_id) SELECT {columns}, now(), 'benchmark rows', "
                f"'+', %s FROM {table}", [monitor.pk])
        if patient_ids != list(range(patient_ids[0], patient_ids[0] + patients)):
            raise RuntimeError("patient ids are not contiguous")
        progress(f"built in {time.perf_counter() - started:.1f} s")

        def fresh() -> None:
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {table}")
                cursor.execute(f"VACUUM ANALYZE {history}")

        # The machine is shared: each path is timed `repeats` times, alternately, each after a
        # VACUUM, and the best of each is the figure (every sample is reported beside it).
        rss_before = peak_rss_mib()
        ours, baseline = [], []
        third = Concept.objects.get(code="777-3")
        for round_no, target in enumerate(
                itertools.islice(itertools.cycle([new, old]), repeats), 1):
            # The physical limit: changing the same rows' concept in one statement. It changes
            # it for real (an unchanged value lets PostgreSQL skip every index), to a third
            # concept, so that the re-code still has all the rows to change.
            fresh()
            started = time.perf_counter()
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"UPDATE {table} SET lab_id = %s "  # noqa: S608
                               "WHERE test_term_id = %s", [third.pk, term.pk])
                if cursor.rowcount != rows:
                    raise RuntimeError(f"the plain UPDATE changed {cursor.rowcount} rows")
            baseline.append(time.perf_counter() - started)
            fresh()
            history_before = LabResult.history.count()
            started = time.perf_counter()
            mapping_approve(site_term=term, concept=target, acting_user=monitor,
                            reason=f"benchmark: the word meant {target.name_en}")
            ours.append(time.perf_counter() - started)
            written = LabResult.history.count() - history_before
            recoded = LabResult.objects.filter(test_term=term, lab=target,
                                               version=round_no + 1).count()
            if (written, recoded) != (rows, rows):
                raise RuntimeError(f"re-coded {recoded} rows with {written} history rows, "
                                   f"expected {rows}")
            progress(f"round {round_no}: re-code {ours[-1]:.2f} s, plain UPDATE "
                     f"{baseline[-1]:.2f} s")
        ours_rss = peak_rss_mib()
    return [Figure(name="recode", ours_s=min(ours), baseline="plain_update",
                   baseline_s=min(baseline), rows=rows, peak_rss_mib=ours_rss,
                   extra={"history_rows_per_run": rows, "patients": patients,
                          "batch_ids": RECODE_BATCH_IDS,
                          "peak_rss_before_recode_mib": round(rss_before, 1),
                          "ours_samples_s": [round(x, 3) for x in ours],
                          "baseline_samples_s": [round(x, 3) for x in baseline]})]


@benchmark("dq")
def dq_benchmark(*, patients: int, progress=print, keepdb: bool = False) -> list[Figure]:
    """The whole data-quality run (every check, every site, results stored) against a
    sequential read of the same tables in the same run (COPY of each table the run reads to
    nowhere)."""
    import os

    from django.utils import timezone

    from registry.models import Patient, QualityResult, QualityRun
    from registry.selectors.bulk import KIND_MODELS
    from registry.services.quality import COHORT, all_checks, quality_run_execute

    with scratch_database(keep=keepdb):
        if Patient.objects.count() != patients:
            with connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {', '.join(_tables())}, registry_siteterm, "
                               f"registry_termmapping, registry_department, registry_site "
                               f"CASCADE")
            starter_vocabulary_load(acting_user=None)
            seed(patients=patients, sites=max(1, min(300, patients // 1500)), seed=42,
                 progress=progress)
        with connection.cursor() as cursor:
            for table in _tables():
                cursor.execute(f"ANALYZE {table}")
        checks = all_checks(as_of=timezone.localdate())[0]
        kinds = {c.kind for c in checks} - {COHORT}
        kinds |= {"patient", "diagnosis", "followup", "treatmentline"}  # the cohort view's
        tables = sorted(KIND_MODELS[k]._meta.db_table for k in kinds)

        def scan() -> float:
            raw = connection.connection
            watch = Stopwatch()
            with watch.running(), open(os.devnull, "wb") as sink:
                for table in tables:
                    with raw.cursor() as cursor, cursor.copy(
                            f"COPY {table} TO STDOUT WITH (FORMAT csv)") as copy:
                        for chunk in copy:
                            sink.write(chunk)
            return watch.seconds

        connection.ensure_connection()
        scan()  # the same warm cache for both
        run = QualityRun.objects.create()
        watch = Stopwatch()
        with watch.running():
            quality_run_execute(run_id=run.pk)
        run.refresh_from_db()
        if run.status != QualityRun.Status.DONE:
            raise RuntimeError(f"quality run ended {run.status}: {run.message}")
        ours_rss = peak_rss_mib()
        baseline = scan()
        rows = 0
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
                rows += cursor.fetchone()[0]
        results = QualityResult.objects.filter(run=run).count()
    return [Figure(name="dq", ours_s=watch.seconds, baseline="postgres_copy_scan_of_tables_read",
                   baseline_s=baseline, rows=rows, peak_rss_mib=ours_rss,
                   extra={"checks": len(checks), "results": results, "tables": len(tables),
                          "patients": patients})]
