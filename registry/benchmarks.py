"""Benchmarks of the registry app (see registry/benchmarking.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.db import connection, transaction

from registry.benchmarking import Figure, Stopwatch, benchmark, peak_rss_mib, scratch_database
from registry.services.terminology import starter_vocabulary_load
from registry.synth.load import CLINICAL_MODELS, foreign_keys_restore, foreign_keys_suspend
from registry.synth.run import seed


def _tables() -> list[str]:
    tables = []
    for model in CLINICAL_MODELS:
        tables += [model._meta.db_table, model.history.model._meta.db_table]
    return tables


def copy_baseline(tables: list[str], folder: Path) -> float:
    """Export what is in `tables`, empty them, and time a raw COPY of the same rows back into
    the same indexed tables (foreign keys suspended and re-validated as the seed does)."""
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
        keys = foreign_keys_suspend(tables)
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
