"""The synthetic cohort: deterministic, valid by the registry's own rules, site dialects that
really differ, and ground truth that reproduces what the registry records."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from registry.biomarkers import parse_biomarkers
from registry.models import AdverseEvent, Cycle, LabResult, Patient, SiteTerm
from registry.services import clinical
from registry.services.clinical import followup_summary_refresh
from registry.synth import generator as g
from registry.synth.extracts import format_dates, site_frames
from registry.synth.generator import EPOCH

ROOT = Path(__file__).resolve().parents[2]


def cohort(patients=300, sites=3, seed=5):
    return [g.generate_site(spec) for spec in
            g.plan_sites(n_sites=sites, n_patients=patients, seed=seed)]


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = cohort(seed=5), cohort(seed=5), cohort(seed=6)
    for a, b in zip(first, again, strict=True):
        for name in ("patients", "diagnoses", "lines", "cycles", "drugs", "adverse_events",
                     "labs", "followups", "truth"):
            pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not first[0].patients["patient_no"].equals(other[0].patients["patient_no"])


def test_site_sizes_add_up_and_every_site_enrols():
    specs = g.plan_sites(n_sites=40, n_patients=10_000, seed=3)
    assert sum(s.n_patients for s in specs) == 10_000
    assert min(s.n_patients for s in specs) >= 1
    assert len({s.code for s in specs}) == 40


def test_dialects_really_differ_between_sites():
    specs = g.plan_sites(n_sites=12, n_patients=12, seed=9)
    spellings = {s.dialect[("drug", "L01XA01")][0] for s in specs}
    assert len(spellings) >= 3, spellings
    units = {s.units["count"][0] for s in specs}
    assert len(units) >= 3, units
    date_styles = {s.habits["date_style"] for s in specs}
    assert len(date_styles) >= 3


def test_cohort_looks_like_a_registry():
    sites = cohort(patients=3000, sites=6, seed=11)
    patients = pd.concat([c.patients for c in sites])
    cycles = pd.concat([c.cycles for c in sites])
    drugs = pd.concat([c.drugs for c in sites])
    assert 4 <= len(cycles) / len(patients) <= 9  # 2-3 million cycles at 450,000 patients
    assert {"antineoplastic", "antiemetic", "gcsf"} <= set(drugs["purpose"])
    assert 0.3 < (patients["sex"] == "F").mean() < 0.55
    diagnoses = pd.concat([c.diagnoses for c in sites])
    assert set(diagnoses["cancer_code"]) >= {"C34", "C16", "C50", "C25", "C15"}
    assert all((c.labs["collected_date"] <= g.CENSOR).all() for c in sites)
    assert all((c.cycles["start_date"] >= c.diagnoses.set_index("pidx")["diagnosis_date"]
                .reindex(c.cycles["pidx"]).to_numpy()).all() for c in sites)


def test_truth_probabilities_reproduce_generated_event_rates():
    sites = cohort(patients=6000, sites=8, seed=21)
    truth = pd.concat([c.truth for c in sites])
    for p, y in (("p_cinv", "y_cinv"), ("p_neutropenia", "y_neutropenia")):
        se = np.sqrt((truth[p] * (1 - truth[p])).sum()) / len(truth)
        assert abs(truth[p].mean() - truth[y].mean()) < 4 * se + 1e-3
        deciles = pd.qcut(truth[p], 5, duplicates="drop")
        by_bin = truth.groupby(deciles, observed=True)[[p, y]].mean()
        assert (abs(by_bin[p] - by_bin[y]) < 0.05).all(), by_bin


@pytest.mark.usefixtures("vocabulary")
def test_every_generated_row_passes_the_registrys_own_validation(ada):
    """The whole of a small cohort, entered through the services a clerk's form uses."""
    (site_cohort,) = [g.generate_site(s) for s in g.plan_sites(n_sites=1, n_patients=25,
                                                                 seed=13)]
    spec = site_cohort.spec
    from registry.services.organisation import site_upsert

    site, _ = site_upsert(code=spec.code, name=spec.name, acting_user=ada)

    def day(value):
        return None if pd.isna(value) else EPOCH + dt.timedelta(days=int(value))

    patients, lines, cycles = {}, {}, {}
    for row in site_cohort.patients.itertuples():
        patients[row.pidx] = clinical.patient_register(
            site=site, patient_no=row.patient_no, sex=row.sex, birth_year=int(row.birth_year),
            consent_scope=row.consent_scope, consent_date=day(row.consent_date), acting_user=ada)
    for row in site_cohort.diagnoses.itertuples():
        clinical.diagnosis_record(
            patient=patients[row.pidx], diagnosis_date=day(row.diagnosis_date),
            cancer=row.cancer_word, stage_system=row.stage_system, stage_group=row.stage_group,
            t=row.t, n=row.n, m=row.m, ecog=None if pd.isna(row.ecog) else int(row.ecog),
            biomarkers=parse_biomarkers(row.biomarkers), acting_user=ada)
    for row in site_cohort.lines.itertuples():
        lines[(row.pidx, row.line_no)] = clinical.treatment_line_record(
            patient=patients[row.pidx], line_no=int(row.line_no), start_date=day(row.start_date),
            end_date=day(row.end_date), regimen=row.regimen_word, intent=row.intent,
            acting_user=ada)
    for row in site_cohort.cycles.itertuples():
        cycles[(row.pidx, row.line_no, row.cycle_no)] = clinical.cycle_record(
            line=lines[(row.pidx, row.line_no)], cycle_no=int(row.cycle_no),
            start_date=day(row.start_date), length_days=int(row.length_days),
            bsa_m2=f"{row.bsa:.2f}", acting_user=ada)
    for row in site_cohort.drugs.itertuples():
        clinical.drug_administration_record(
            cycle=cycles[(row.pidx, row.line_no, row.cycle_no)], drug=row.drug_word,
            day=int(row.day), dose=f"{row.dose:g}", dose_unit=row.dose_unit, route=row.route,
            purpose=row.purpose, acting_user=ada)
    for row in site_cohort.adverse_events.itertuples():
        clinical.adverse_event_record(
            patient=patients[row.pidx], term=row.term_word, grade=int(row.grade),
            onset_date=day(row.onset_date), resolved_date=day(row.resolved_date),
            serious=bool(row.serious), cycle=cycles[(row.pidx, row.line_no, row.cycle_no)],
            acting_user=ada)
    for row in site_cohort.labs.itertuples():
        lab = clinical.lab_result_record(
            patient=patients[row.pidx], test=row.test_word, collected_date=day(row.collected_date),
            value=row.value_text, unit=row.unit_word,
            cycle=cycles[(row.pidx, row.line_no, row.cycle_no)], acting_user=ada)
        if lab.value_canonical is not None:  # converted by the registry as the generator did
            assert lab.value_canonical == pytest.approx(row.value_canonical, rel=1e-3)
    for row in site_cohort.followups.itertuples():
        clinical.followup_record(
            patient=patients[row.pidx], followup_date=day(row.followup_date),
            vital_status=row.vital_status,
            progression=None if row.progression is None else bool(row.progression),
            progression_date=day(row.progression_date),
            ecog=None if pd.isna(row.ecog) else int(row.ecog),
            cause_of_death=row.cause_of_death, acting_user=ada)
    assert Cycle.objects.count() == len(site_cohort.cycles)
    assert LabResult.objects.count() == len(site_cohort.labs)


@pytest.mark.usefixtures("vocabulary")
def test_seed_loads_the_registry_and_truth_matches_recorded_events(tmp_path, capsys):
    truth_path = tmp_path / "truth.csv.gz"
    call_command("seed_demo", "--patients", "1500", "--sites", "4", "--seed", "3",
                 "--truth", str(truth_path))
    out = capsys.readouterr().out
    assert "[   4/4]" in out and "Seeded 1,500 patients" in out
    assert Patient.objects.count() == 1500
    # Every stored coded value has its site term and, here, its concept.
    assert not AdverseEvent.objects.filter(ae__isnull=True).exists()
    assert not LabResult.objects.filter(unit_flag="").filter(value_canonical__isnull=True).exists()
    assert Patient.history.count() == 1500
    # The derived follow-up columns are what the follow-ups say.
    summary = list(Patient.objects.order_by("pk").values_list("last_followup_date",
                                                              "followup_closed"))
    assert sum(closed for _, closed in summary) > 0
    assert sum(1 for d, _ in summary if d) > len(summary) // 2
    followup_summary_refresh()
    assert summary == list(Patient.objects.order_by("pk").values_list("last_followup_date",
                                                                      "followup_closed"))
    assert AdverseEvent.history.filter(history_change_reason__startswith="synthetic").count() \
        == AdverseEvent.objects.count()
    truth = pd.read_csv(truth_path)
    assert len(truth) == Cycle.objects.count()
    cinv = set(AdverseEvent.objects.filter(
        ae__code__in=["Nausea", "Vomiting"], grade__gte=2).values_list("cycle_id", flat=True))
    neut = set(AdverseEvent.objects.filter(ae__code="Febrile neutropenia").values_list(
        "cycle_id", flat=True)) | set(AdverseEvent.objects.filter(
            ae__code="Neutrophil count decreased", grade__gte=3).values_list("cycle_id", flat=True))
    keys = pd.DataFrame(list(Cycle.objects.values_list("id", "patient__registry_id",
                                                       "line__line_no", "cycle_no")),
                        columns=["id", "registry_id", "line_no", "cycle_no"])
    merged = truth.merge(keys, on=["registry_id", "line_no", "cycle_no"], validate="one_to_one")
    assert len(merged) == len(truth)
    observed_cinv = merged["id"].isin(cinv)
    observed_neut = merged["id"].isin(neut)
    assert (observed_cinv == merged["y_cinv"].astype(bool)).all()
    assert (observed_neut == merged["y_neutropenia"].astype(bool)).all()
    se = np.sqrt((merged["p_cinv"] * (1 - merged["p_cinv"])).sum()) / len(merged)
    assert abs(merged["p_cinv"].mean() - observed_cinv.mean()) < 4 * se


@pytest.mark.usefixtures("vocabulary")
def test_seeding_a_site_that_has_patients_is_refused_whole(site_a, alice):
    call_command("seed_demo", "--patients", "40", "--sites", "2", "--seed", "1")
    before = (Patient.objects.count(), Cycle.objects.count(), SiteTerm.objects.count())
    with pytest.raises(CommandError, match="already has patients"):
        call_command("seed_demo", "--patients", "40", "--sites", "2", "--seed", "2")
    assert (Patient.objects.count(), Cycle.objects.count(), SiteTerm.objects.count()) == before


def test_extracts_are_written_without_touching_the_database(tmp_path, db):
    call_command("seed_demo", "--patients", "120", "--sites", "3", "--seed", "4",
                 "--as-extracts", str(tmp_path / "out"))
    assert not Patient.objects.exists() and not SiteTerm.objects.exists()
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert folders == ["S001", "S002", "S003"]
    specs = {s.code: s for s in g.plan_sites(n_sites=3, n_patients=120, seed=4)}
    for code in folders:
        spec = specs[code]
        for name in ("patients", "diagnoses", "regimens", "cycles", "drugs", "adverse_events",
                     "labs", "followups"):
            frame = pd.read_csv(tmp_path / "out" / code / f"{name}.csv", dtype=str,
                                encoding=spec.habits["encoding"], keep_default_na=False)
            assert "patient_no" in frame.columns
        patients = pd.read_csv(tmp_path / "out" / code / "patients.csv", dtype=str,
                               encoding=spec.habits["encoding"])
        assert len(patients) == spec.n_patients
    with gzip.open(tmp_path / "out" / "truth.csv.gz", "rt") as fh:
        assert fh.readline().startswith("site,patient_no,registry_id,line_no,cycle_no,p_cinv")
    with pytest.raises(CommandError, match="not empty"):
        call_command("seed_demo", "--patients", "10", "--sites", "1",
                     "--as-extracts", str(tmp_path / "out"))


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_writes_byte_identical_extracts_and_truth(tmp_path, db):
    for run in ("first", "again"):
        call_command("seed_demo", "--patients", "300", "--sites", "3", "--seed", "11",
                     "--as-extracts", str(tmp_path / run))
    first, again = _tree_bytes(tmp_path / "first"), _tree_bytes(tmp_path / "again")
    assert "truth.csv.gz" in first and len(first) == 3 * 8 + 1
    assert first.keys() == again.keys()
    assert [name for name in first if first[name] != again[name]] == []
    # The gzip header holds neither a time nor the file name.
    assert first["truth.csv.gz"][4:8] == b"\0\0\0\0"
    assert first["truth.csv.gz"][3] & 0x08 == 0


@pytest.mark.parametrize("size", [10, 100, 1000, 20_000])
def test_missing_dates_format_whatever_memory_held_before(size):
    # pandas < 3 leaves the missing slots of a float to_datetime(unit=) uninitialised and
    # rounds them under errstate(over="raise"): freed huge floats made seed_demo
    # --as-extracts crash at random with FloatingPointError.
    days = pd.Series([np.nan] * size)
    days.iloc[0] = 19_000.0
    for _ in range(5):
        junk = [np.full(size, 1e308) for _ in range(8)]
        del junk
        for style in ("iso", "dot", "compact", "slash", "zh"):
            text = format_dates(days, style)
            assert (text.iloc[1:] == "").all()
    assert format_dates(days, "iso").iloc[0] == "2022-01-08"
    assert format_dates(days, "zh").iloc[0] == "2022年1月8日"


@pytest.mark.parametrize("size", [10, 1000])
def test_the_loader_reads_missing_dates_whatever_memory_held_before(size):
    from registry.synth.load import _dates

    days = pd.Series([np.nan] * size, index=range(3, size + 3))
    days.iloc[-1] = 0.0
    for _ in range(5):
        junk = [np.full(size, 1e308) for _ in range(8)]
        del junk
        stored = _dates(days)
        assert list(stored.index) == list(days.index)
        assert stored.iloc[:-1].isna().all() and stored.iloc[-1] == "1970-01-01"


def test_extract_files_follow_the_format_columns():
    (site_cohort,) = cohort(patients=50, sites=1, seed=8)
    frames = site_frames(site_cohort)
    assert list(frames["cycles"].columns)[:4] == ["patient_no", "line_no", "cycle_no",
                                                  "start_date"]
    assert {"patient_no", "term", "grade", "onset_date"} <= set(frames["adverse_events"].columns)
    assert {"patient_no", "collected_date", "test", "value", "unit"} <= set(
        frames["labs"].columns)


def _benchmark(name: str, patients: int) -> dict[str, dict]:
    """Run `benchmark NAME --json` in a scratch database; its figures by name."""
    env_db = connection.settings_dict
    url = (f"postgres://{env_db['USER']}@{env_db['HOST'] or '127.0.0.1'}:{env_db['PORT'] or 5432}"
           f"/{env_db['NAME']}_benchcheck")  # beside this run's test database, no one else's
    result = subprocess.run(
        [sys.executable, "manage.py", "benchmark", name, "--patients", str(patients), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "DATABASE_URL": url, "DEBUG": "true"})
    assert result.returncode == 0, result.stderr
    figures = [json.loads(line) for line in result.stdout.strip().splitlines()]
    return {figure["name"]: figure for figure in figures}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_benchmark_seed_reports_ours_and_the_copy_baseline():
    figure = _benchmark("seed", 200)["seed"]
    assert {"name", "ours_s", "baseline", "baseline_s", "ratio", "rows", "rows_per_s"} <= set(
        figure)
    assert figure["baseline"] == "postgres_copy"
    assert figure["rows"] > 1000 and figure["ratio"] > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_benchmark_import_reports_both_copy_baselines_and_the_clerk_extract():
    figures = _benchmark("import", 150)
    whole = figures["import"]
    # Uploaded by a clerk of the site, as on the web; rows counted as the seed counts them:
    # each clinical row and its history row (the site's words came with its mapping file).
    assert whole["acting_user_role"] == "clerk"
    assert whole["rows"] == 2 * whole["clinical_rows"]
    seed = _benchmark("seed", 150)["seed"]
    (spec,) = g.plan_sites(n_sites=1, n_patients=150, seed=42)
    site_cohort = g.generate_site(spec)
    assert whole["clinical_rows"] == sum(site_cohort.row_counts().values())
    assert seed["rows"] == whole["rows"] + len(site_cohort.terms)
    assert whole["rows"] > 5000 and whole["baseline"] == "postgres_copy_foreign_keys_checked"
    assert whole["ratio"] == pytest.approx(whole["ours_s"] / whole["baseline_s"], rel=0.01)
    assert whole["copy_foreign_keys_suspended_s"] > 0
    assert whole["ratio_vs_copy_foreign_keys_suspended"] == pytest.approx(
        whole["ours_s"] / whole["copy_foreign_keys_suspended_s"], rel=0.01)
    assert figures["import:clerk_extract"]["rows"] > 0
