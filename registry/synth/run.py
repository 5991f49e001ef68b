"""The seed run: plan sites, generate each, and load it or write it as extracts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import User

from registry.synth.extracts import TruthWriter, write_site_extract
from registry.synth.generator import SiteCohort, generate_site, plan_sites


@dataclass
class SeedReport:
    sites: int = 0
    patients: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    truth_path: Path | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _cohorts(
    specs, report: SeedReport, truth: TruthWriter | None, progress: Callable[[str], None]
) -> Iterator[SiteCohort]:
    started = time.perf_counter()
    total = sum(s.n_patients for s in specs)
    for number, spec in enumerate(specs, 1):
        cohort = generate_site(spec)
        if truth is not None:
            truth.add(cohort)
        for name, count in cohort.row_counts().items():
            report.rows[name] = report.rows.get(name, 0) + count
        report.sites += 1
        report.patients += spec.n_patients
        yield cohort
        elapsed = time.perf_counter() - started
        progress(
            f"[{number:>4}/{len(specs)}] {spec.code} {spec.n_patients:>6} patients  "
            f"{100 * report.patients / max(total, 1):5.1f}%  "
            f"{report.total_rows / max(elapsed, 1e-9):>10,.0f} rows/s"
        )


def seed(
    *,
    patients: int,
    sites: int,
    seed: int,
    extracts_dir: Path | None = None,
    truth_path: Path | None = None,
    acting_user: User | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> SeedReport:
    """Generate the cohort; load it into the registry, or write site extracts (then the
    database is not touched). The truth side file is written when a path is given."""
    report = SeedReport(truth_path=truth_path)
    specs = plan_sites(n_sites=sites, n_patients=patients, seed=seed)
    truth = TruthWriter(truth_path) if truth_path else None
    started = time.perf_counter()
    try:
        cohorts = _cohorts(specs, report, truth, progress)
        if extracts_dir is not None:
            for cohort in cohorts:
                write_site_extract(cohort, extracts_dir)
        else:
            from registry.synth.load import load_cohorts

            stats = load_cohorts(
                cohorts, acting_user=acting_user, reason=f"synthetic cohort (seed {seed})"
            )
            report.rows = {k: v for k, v in stats.rows.items()}
    finally:
        if truth is not None:
            truth.close()
    report.seconds = time.perf_counter() - started
    return report
