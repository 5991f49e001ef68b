"""Small synthetic frames in the shape the feature builder reads (no Django, no database).

Patients get one or two lines of a starter-vocabulary regimen, cycles every 21 days, day-1
antiemetics and sometimes G-CSF on day 3, a baseline ANC the day before each cycle and a
nadir ANC on day 10, and CINV / neutropenia adverse events drawn from a known logistic model,
so that a trained model has something real to find.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIMENS = {"REG-PEM-CIS": ("high", 0.8, -0.6), "REG-FOLFOX": ("moderate", 0.0, -0.6),
            "REG-DOC": ("low", -0.9, 0.4), "REG-FOLFIRINOX": ("moderate", 0.0, 1.2)}
CANCER = {"REG-PEM-CIS": "C34", "REG-FOLFOX": "C18", "REG-DOC": "C50",
          "REG-FOLFIRINOX": "C25"}
GUIDELINE = {"high": 3, "moderate": 2, "low": 1}


def frames(n_patients: int = 300, *, seed: int = 0, sites: int = 4) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2024-01-01")
    patients, diagnoses, lines, cycles, drugs, aes, labs = [], [], [], [], [], [], []
    line_id = cycle_id = 0
    for pid in range(1, n_patients + 1):
        female = bool(rng.random() < 0.5)
        birth_year = int(rng.integers(1940, 1985))
        regimen = list(REGIMENS)[int(rng.integers(len(REGIMENS)))]
        site = f"S{pid % sites + 1:02d}"
        start = base + pd.Timedelta(days=int(rng.integers(0, 300)))
        patients.append({"id": pid, "sex": "F" if female else "M", "birth_year": birth_year})
        diagnoses.append({"patient_id": pid, "diagnosis_date": start - pd.Timedelta(days=20),
                          "cancer_code": CANCER[regimen], "stage_group": "IVA",
                          "ecog": int(rng.integers(0, 3)) if rng.random() < 0.8 else None})
        prev_cinv = prev_neut = False
        for line_no in (1, 2) if rng.random() < 0.3 else (1,):
            line_id += 1
            lines.append({"id": line_id, "patient_id": pid, "line_no": line_no,
                          "regimen_code": regimen})
            emeto, cinv_effect, fn_effect = REGIMENS[regimen]
            for cycle_no in range(1, int(rng.integers(2, 6)) + 1):
                cycle_id += 1
                cycles.append({"id": cycle_id, "patient_id": pid, "line_id": line_id,
                               "cycle_no": cycle_no, "start_date": start, "length_days": 21,
                               "site": site})
                agents = max(GUIDELINE[emeto] - int(rng.random() < 0.3), 0)
                for k, code in enumerate(["A04AA01", "H02AB02", "A04AD12"][:agents]):
                    drugs.append({"cycle_id": cycle_id, "day": 1, "drug_code": code,
                                  "purpose": "antiemetic", "k": k})
                gcsf = bool(rng.random() < 0.25)
                if gcsf:
                    drugs.append({"cycle_id": cycle_id, "day": 3, "drug_code": "L03AA13",
                                  "purpose": "gcsf", "k": 0})
                anc = float(np.exp(rng.normal(np.log(3.8), 0.35)))
                labs.append({"patient_id": pid, "cycle_id": cycle_id, "lab_code": "751-8",
                             "value_canonical": round(anc, 2),
                             "collected_date": start - pd.Timedelta(days=1)})
                p_cinv = 1 / (1 + np.exp(-(-2.0 + cinv_effect + 0.5 * female
                                           + 1.6 * prev_cinv
                                           + 0.8 * (agents < GUIDELINE[emeto]))))
                p_neut = 1 / (1 + np.exp(-(-2.4 + fn_effect + 1.2 * prev_neut - 1.1 * gcsf
                                           - 1.0 * np.log(anc / 4))))
                prev_cinv = bool(rng.random() < p_cinv)
                prev_neut = bool(rng.random() < p_neut)
                if prev_cinv:
                    aes.append({"patient_id": pid, "cycle_id": cycle_id, "ae_code": "Nausea",
                                "grade": 2, "onset_date": start + pd.Timedelta(days=2)})
                elif rng.random() < 0.3:
                    aes.append({"patient_id": pid, "cycle_id": cycle_id, "ae_code": "Nausea",
                                "grade": 1, "onset_date": start + pd.Timedelta(days=2)})
                nadir = rng.uniform(0.1, 0.9) if prev_neut else rng.uniform(1.2, 3.0)
                labs.append({"patient_id": pid, "cycle_id": cycle_id, "lab_code": "751-8",
                             "value_canonical": round(nadir, 2),
                             "collected_date": start + pd.Timedelta(days=10)})
                if prev_neut:
                    aes.append({"patient_id": pid, "cycle_id": cycle_id,
                                "ae_code": "Neutrophil count decreased", "grade": 3,
                                "onset_date": start + pd.Timedelta(days=10)})
                start = start + pd.Timedelta(days=21 + int(rng.integers(0, 3)))
            start = start + pd.Timedelta(days=30)
    out = {
        "patients": pd.DataFrame(patients), "diagnoses": pd.DataFrame(diagnoses),
        "lines": pd.DataFrame(lines), "cycles": pd.DataFrame(cycles),
        "drugs": pd.DataFrame(drugs).drop(columns="k"),
        "adverse_events": pd.DataFrame(aes), "labs": pd.DataFrame(labs),
    }
    out["diagnoses"]["ecog"] = out["diagnoses"]["ecog"].astype("Int64")
    return out
