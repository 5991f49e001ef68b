"""Write generated cohorts as site extracts (docs/extract-format.md), one folder per site,
each in that site's own encoding, date style and spellings."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd

from registry.synth.generator import EPOCH, SiteCohort, epoch_dates

MONTH_DAY = {"iso": "%Y-%m-%d", "dot": "%Y.%m.%d", "compact": "%Y%m%d"}


def format_dates(days: pd.Series, style: str) -> pd.Series:
    """Whole days since EPOCH (missing: NaN) as the site's date text (missing: "")."""
    stamp = epoch_dates(pd.Series(days).reset_index(drop=True))
    if style in MONTH_DAY:
        text = stamp.dt.strftime(MONTH_DAY[style])
    else:
        y = stamp.dt.year.astype("Int64").astype(str)
        m = stamp.dt.month.astype("Int64").astype(str)
        d = stamp.dt.day.astype("Int64").astype(str)
        text = y + "/" + m + "/" + d if style == "slash" else y + "年" + m + "月" + d + "日"
    return text.where(stamp.notna(), "")


def _styled(values: pd.Series, mapping: dict) -> pd.Series:
    return values.map(lambda v: mapping.get(v, v))


SEX = {"MF": {"M": "M", "F": "F"}, "zh": {"M": "男", "F": "女"}, "en": {"M": "male", "F": "female"}}
YESNO = {"YN": {True: "Y", False: "N"}, "zh": {True: "是", False: "否"}}
VITAL = {"en": {}, "zh": {"alive": "存活", "dead": "死亡", "lost": "失访"}}
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V"}


def _grade(grades: pd.Series, style: str) -> pd.Series:
    if style == "ji":
        return grades.astype(str) + "级"
    if style == "roman":
        return grades.map(ROMAN) + "度"
    if style == "G":
        return "G" + grades.astype(str)
    return grades.astype(str)


def _int_text(values: pd.Series) -> pd.Series:
    return values.astype("Int64").astype(str).replace("<NA>", "")


def _number_text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "" if pd.isna(v) else f"{v:g}")


def site_frames(cohort: SiteCohort) -> dict[str, pd.DataFrame]:
    """The cohort as the extract's files (column order as in the format)."""
    h = cohort.spec.habits
    style = h["date_style"]
    number = cohort.patients.set_index("pidx")["patient_no"]

    def no(frame: pd.DataFrame) -> pd.Series:
        return number.reindex(frame["pidx"]).reset_index(drop=True)

    def dates(series: pd.Series) -> pd.Series:
        return format_dates(series, style)

    p = cohort.patients
    patients = pd.DataFrame(
        {"patient_no": p["patient_no"], "sex": _styled(p["sex"], SEX[h["sex_style"]])}
    )
    if h["birth_style"] == "date":
        born = pd.to_datetime(p["birth_year"].astype(str) + "-01-01") + pd.to_timedelta(
            p["birth_doy"], unit="D"
        )
        patients["birth_date"] = dates(pd.Series((born - pd.Timestamp(EPOCH)).dt.days))
    else:
        patients["birth_year"] = p["birth_year"].astype(str)
    patients["department"] = p["department"]
    patients["consent_scope"] = p["consent_scope"]
    patients["consent_date"] = dates(p["consent_date"])
    patients["withdrawn_date"] = dates(p["withdrawn_date"])

    d = cohort.diagnoses
    diagnoses = pd.DataFrame(
        {
            "patient_no": no(d),
            "diagnosis_date": dates(d["diagnosis_date"]),
            "cancer": d["cancer_word"].to_numpy(),
            "morphology": "",
            "stage_system": d["stage_system"].to_numpy(),
            "stage_group": d["stage_group"].to_numpy(),
            "t": d["t"].to_numpy(),
            "n": d["n"].to_numpy(),
            "m": d["m"].to_numpy(),
            "ecog": _int_text(d["ecog"]).to_numpy(),
            "biomarkers": d["biomarkers"].to_numpy(),
        }
    )

    r = cohort.lines
    regimens = pd.DataFrame(
        {
            "patient_no": no(r),
            "line_no": r["line_no"].to_numpy(),
            "regimen": r["regimen_word"].to_numpy(),
            "intent": r["intent"].to_numpy(),
            "start_date": dates(r["start_date"]),
            "end_date": dates(r["end_date"]),
        }
    )

    c = cohort.cycles
    cycles = pd.DataFrame(
        {
            "patient_no": no(c),
            "line_no": c["line_no"].to_numpy(),
            "cycle_no": c["cycle_no"].to_numpy(),
            "start_date": dates(c["start_date"]),
            "length_days": c["length_days"].to_numpy(),
            "bsa_m2": c["bsa"].map("{:.2f}".format).to_numpy(),
        }
    )

    g = cohort.drugs
    drugs = pd.DataFrame(
        {
            "patient_no": no(g),
            "line_no": g["line_no"].to_numpy(),
            "cycle_no": g["cycle_no"].to_numpy(),
            "day": g["day"].to_numpy(),
            "drug": g["drug_word"].to_numpy(),
            "dose": _number_text(g["dose"]).to_numpy(),
            "dose_unit": g["dose_unit"].to_numpy(),
            "route": g["route"].to_numpy(),
            "purpose": g["purpose"].to_numpy(),
        }
    )

    a = cohort.adverse_events
    adverse_events = pd.DataFrame(
        {
            "patient_no": no(a),
            "term": a["term_word"].to_numpy(),
            "grade": _grade(a["grade"], h["grade_style"]).to_numpy(),
            "onset_date": dates(a["onset_date"]),
            "resolved_date": dates(a["resolved_date"]),
            "serious": _styled(a["serious"].astype(bool), YESNO[h["yesno_style"]]).to_numpy(),
            "line_no": a["line_no"].to_numpy(),
            "cycle_no": a["cycle_no"].to_numpy(),
        }
    )

    labs_in = cohort.labs
    labs = pd.DataFrame(
        {
            "patient_no": no(labs_in),
            "collected_date": dates(labs_in["collected_date"]),
            "test": labs_in["test_word"].to_numpy(),
            "value": labs_in["value_text"].to_numpy(),
            "unit": labs_in["unit_word"].to_numpy(),
            "line_no": labs_in["line_no"].to_numpy(),
            "cycle_no": labs_in["cycle_no"].to_numpy(),
        }
    )

    f = cohort.followups
    progression = f["progression"].map(
        lambda v: "" if v is None or pd.isna(v) else YESNO[h["yesno_style"]][bool(v)]
    )
    followups = pd.DataFrame(
        {
            "patient_no": no(f),
            "followup_date": dates(f["followup_date"]),
            "vital_status": _styled(f["vital_status"], VITAL[h["vital_style"]]).to_numpy(),
            "progression": progression.to_numpy(),
            "progression_date": dates(f["progression_date"]),
            "ecog": _int_text(f["ecog"]).to_numpy(),
            "cause_of_death": f["cause_of_death"].to_numpy(),
        }
    )

    return {
        "patients": patients,
        "diagnoses": diagnoses,
        "regimens": regimens,
        "cycles": cycles,
        "drugs": drugs,
        "adverse_events": adverse_events,
        "labs": labs,
        "followups": followups,
    }


def write_site_extract(cohort: SiteCohort, directory: Path) -> Path:
    folder = directory / cohort.spec.code
    folder.mkdir(parents=True, exist_ok=True)
    encoding = cohort.spec.habits["encoding"]
    for name, frame in site_frames(cohort).items():
        frame.to_csv(folder / f"{name}.csv", index=False, encoding=encoding, lineterminator="\n")
    return folder


TRUTH_COLUMNS = [
    "site",
    "patient_no",
    "registry_id",
    "line_no",
    "cycle_no",
    "p_cinv",
    "y_cinv",
    "p_neutropenia",
    "y_neutropenia",
]


def truth_frame(cohort: SiteCohort) -> pd.DataFrame:
    t = cohort.truth
    patients = cohort.patients.set_index("pidx")
    return pd.DataFrame(
        {
            "site": cohort.spec.code,
            "patient_no": patients["patient_no"].reindex(t["pidx"]).to_numpy(),
            "registry_id": patients["registry_id"].reindex(t["pidx"]).to_numpy(),
            "line_no": t["line_no"].to_numpy(),
            "cycle_no": t["cycle_no"].to_numpy(),
            "p_cinv": np.round(t["p_cinv"].to_numpy(), 6),
            "y_cinv": t["y_cinv"].astype(int).to_numpy(),
            "p_neutropenia": np.round(t["p_neutropenia"].to_numpy(), 6),
            "y_neutropenia": t["y_neutropenia"].astype(int).to_numpy(),
        }
    )


class TruthWriter:
    """The side file of true per-cycle probabilities (never stored in the registry)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # No file name and no time in the gzip header: the same seed gives the same bytes.
        self._raw = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
        self._file = io.TextIOWrapper(self._gzip, encoding="utf-8", newline="")
        self._file.write(",".join(TRUTH_COLUMNS) + "\n")

    def add(self, cohort: SiteCohort) -> None:
        truth_frame(cohort).to_csv(self._file, index=False, header=False, lineterminator="\n")

    def close(self) -> None:
        self._file.close()  # closes the gzip stream, which leaves fileobj open
        self._raw.close()
