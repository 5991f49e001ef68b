"""A small release built end to end (pseudonyms, days from diagnosis, top-coded ages,
k-anonymity, codebook, every column type, two tables in several chunks), from fixed inputs:
the determinism test builds it in this process and again in another one.

Run as `python -m tests.research.release.sample FOLDER` to build it into FOLDER.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from research.release import codebook, deid, files, kanon

KEY = b"fixed-key-of-the-sample-release!"
PATIENTS = 60


def _patients() -> pd.DataFrame:
    rng = np.random.default_rng(2026)
    first = [dt.date(2012, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 4000,
                                                                                    PATIENTS)]
    return pd.DataFrame({
        "patient_id": np.arange(1000, 1000 + PATIENTS),
        "age": rng.integers(25, 99, PATIENTS),
        "sex": rng.choice(["M", "F"], PATIENTS),
        "site": rng.choice(["H01", "H02", "H03", "H04"], PATIENTS),
        "first_diagnosis": first,
        "note": rng.choice(['plain', 'with, comma', 'with "quotes"', 'two\nlines', '中文 备注',
                            ''], PATIENTS),
    })


def build(folder: Path) -> files.Manifest:
    patients = _patients()
    index_of = dict(zip(patients.patient_id, patients.first_diagnosis, strict=True))
    table = pd.DataFrame({
        "pseudonym": deid.pseudonyms(patients.patient_id, KEY),
        "age": deid.age_top_coded(pd.Series(patients.age)),
        "sex": patients.sex,
        "site": patients.site,
        "diagnosis_year": [d.year for d in patients.first_diagnosis],
        "note": patients.note,
    })
    quasi = {"age": kanon.age_hierarchy(), "sex": kanon.suppress_only(name="sex"),
             "site": kanon.category_hierarchy({"H01": "East", "H02": "East", "H03": "West",
                                               "H04": "West"}, name="site"),
             "diagnosis_year": kanon.year_hierarchy()}
    table, report = kanon.k_anonymise(table, quasi, k=3, max_suppressed=0.1)

    rng = np.random.default_rng(7)
    cycles = pd.DataFrame({
        "patient_id": np.repeat(patients.patient_id.to_numpy(), 5),
        "cycle": np.tile(np.arange(1, 6), PATIENTS),
    })
    start = [index_of[p] + dt.timedelta(days=int(21 * c + d)) for p, c, d in zip(
        cycles.patient_id, cycles.cycle, rng.integers(-3, 4, len(cycles)), strict=True)]
    cycles = pd.DataFrame({
        "pseudonym": deid.pseudonyms(cycles.patient_id, KEY),
        "cycle": cycles.cycle,
        "start_day": deid.days_from(pd.Series(start),
                                    cycles.patient_id.map(index_of).reset_index(drop=True)),
        "dose_mg_m2": np.where(rng.random(len(cycles)) < 0.1, np.nan,
                               (rng.random(len(cycles)) * 100).round(3)),
        "gcsf": pd.array(rng.choice([True, False, None], len(cycles)), dtype="boolean"),
        "arm": rng.choice(["A", "B"], len(cycles)),
    })

    variables = [
        {"name": "pseudonym", "table": "patients", "label_en": "Study pseudonym",
         "label_zh": "研究假名", "type": "string", "unit": None, "values": None,
         "klass": "direct", "transformation": "HMAC-SHA256 under the release key"},
        {"name": "age", "table": "patients", "label_en": "Age at diagnosis",
         "label_zh": "诊断时年龄", "type": "category", "unit": "years", "values": None,
         "klass": "quasi", "transformation": "top-coded at 90, k-anonymity"},
        {"name": "gcsf", "table": "cycles", "label_en": "G-CSF prophylaxis",
         "label_zh": "G-CSF 预防", "type": "bool", "unit": None,
         "values": {"true": "given / 使用", "false": "not given / 未使用"},
         "klass": "clinical", "transformation": "none"},
    ]
    with files.ReleaseWriter(folder) as writer:
        sink = writer.table("patients", {
            "pseudonym": "string", "age": "category", "sex": "category", "site": "category",
            "diagnosis_year": "category", "note": "string"})
        for part in np.array_split(np.arange(len(table)), 3):
            sink.write(table.iloc[part])
        sink.close()
        sink = writer.table("cycles", {
            "pseudonym": "string", "cycle": "int", "start_day": "date_days",
            "dose_mg_m2": "float", "gcsf": "bool", "arm": "category"})
        for part in np.array_split(np.arange(len(cycles)), 4):
            sink.write(cycles.iloc[part])
        sink.close()
        for name, text in codebook.codebook_files(
                variables, [{"vocabulary": "ATC", "concepts": [
                    {"code": "L01XA01", "name": "cisplatin"}]}]).items():
            writer.text(name, text)
        writer.text("k-anonymity.json", json.dumps(report.to_dict(), sort_keys=True,
                                                   indent=2) + "\n")
        writer.text("README.md", "# Sample release\n\nDays count from the first diagnosis.\n")
        return writer.close()


if __name__ == "__main__":
    build(Path(sys.argv[1]))
