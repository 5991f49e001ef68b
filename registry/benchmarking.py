"""The benchmark harness behind `python manage.py benchmark NAME`.

A benchmark measures the project's path and, in the same run, the physical-limit baseline for
the same work (PostgreSQL COPY of the same rows, bare scikit-learn on the same matrix), and
reports both and their ratio. Apps register benchmarks in their `benchmarks` module with
`@benchmark("name")`; the command discovers them.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from django.db import connection

REGISTRY: dict[str, Callable] = {}

FIELD_SCALE_PATIENTS = 450_000


def benchmark(name: str):
    def register(function: Callable) -> Callable:
        REGISTRY[name] = function
        return function

    return register


@dataclass
class Figure:
    name: str
    ours_s: float
    baseline: str
    baseline_s: float
    rows: int
    peak_rss_mib: float
    extra: dict | None = None

    @property
    def ratio(self) -> float:
        return self.ours_s / self.baseline_s if self.baseline_s else float("inf")

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.ours_s if self.ours_s else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ratio"] = round(self.ratio, 3) if self.baseline_s else None  # no baseline
        out["rows_per_s"] = round(self.rows_per_s, 1)
        out["ours_s"] = round(self.ours_s, 3)
        out["baseline_s"] = round(self.baseline_s, 3)
        out["peak_rss_mib"] = round(self.peak_rss_mib, 1)
        out.update(out.pop("extra") or {})
        return out

    def as_json(self) -> str:
        return json.dumps(self.as_dict())

    def as_text(self) -> str:
        extra = "".join(f"; {k} {v}" for k, v in (self.extra or {}).items())
        return (
            f"{self.name}: ours {self.ours_s:.4f} s, {self.baseline} {self.baseline_s:.4f} s, "
            f"ratio {self.ratio:.2f}x; {self.rows:,} rows, {self.rows_per_s:,.0f} rows/s; "
            f"peak memory {self.peak_rss_mib:,.0f} MiB{extra}"
        )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self):
        started = time.perf_counter()
        try:
            yield self
        finally:
            self.seconds += time.perf_counter() - started


@contextmanager
def scratch_database(verbosity: int = 0, keep: bool = False):
    """A throwaway PostgreSQL database (created, migrated, then dropped), so a benchmark never
    touches the registry's own data. With `keep`, an existing one is reused and kept."""
    if connection.vendor != "postgresql":
        raise RuntimeError(
            "Benchmarks measure against PostgreSQL COPY: set DATABASE_URL to a PostgreSQL server."
        )
    creation = connection.creation
    original = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{original}_bench"
    creation.create_test_db(verbosity=verbosity, autoclobber=True, serialize=False, keepdb=keep)
    try:
        yield connection.settings_dict["NAME"]
    finally:
        creation.destroy_test_db(original, verbosity=verbosity, keepdb=keep)
