"""What the generator draws from: case mix, regimens per cancer, site dialects, risk models.

Regimens, drugs, labs and terms come from the starter vocabulary (one source of truth); this
module adds the epidemiology and the coefficients of the generating model.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

STARTER_VOCABULARY = Path(__file__).resolve().parent.parent / "data" / "starter_vocabulary.json"

# Cancer -> ICD-10 codes (with shares), case-mix weight by tier, sex, age, stage, regimens.
CANCERS = {
    "lung": {
        "icd": [("C34", 1.0)],
        "weight": {"tertiary": 0.27, "secondary": 0.30, "other": 0.30},
        "male": 0.62,
        "age": (62, 9),
        "stages": {"IIIA": 0.12, "IIIB": 0.18, "IVA": 0.35, "IVB": 0.35},
        "line1": {
            "REG-PEM-CIS": 0.3,
            "REG-PAC-CARBO": 0.2,
            "REG-GEM-CIS": 0.15,
            "REG-ETO-CIS": 0.1,
            "REG-PEMBRO-PEM-CARBO": 0.25,
        },
        "later": {"REG-DOC": 0.6, "REG-GEM-CIS": 0.2, "REG-PEM-CIS": 0.2},
        "biomarkers": {"EGFR": 0.3, "ALK": 0.05},
    },
    "colorectal": {
        "icd": [("C18", 0.55), ("C19", 0.1), ("C20", 0.35)],
        "weight": {"tertiary": 0.16, "secondary": 0.17, "other": 0.17},
        "male": 0.58,
        "age": (60, 10),
        "stages": {"IIIB": 0.3, "IIIC": 0.15, "IVA": 0.3, "IVB": 0.25},
        "line1": {"REG-FOLFOX": 0.35, "REG-CAPOX": 0.35, "REG-FOLFOX-BEV": 0.3},
        "later": {"REG-FOLFIRI": 0.7, "REG-CAPOX": 0.3},
        "biomarkers": {"KRAS": 0.4, "MSI-H": 0.05},
    },
    "gastric": {
        "icd": [("C16", 1.0)],
        "weight": {"tertiary": 0.14, "secondary": 0.16, "other": 0.16},
        "male": 0.7,
        "age": (61, 10),
        "stages": {"IIIA": 0.2, "IIIB": 0.2, "IIIC": 0.15, "IV": 0.45},
        "line1": {"REG-SOX": 0.45, "REG-CAPOX": 0.35, "REG-FOLFOX": 0.2},
        "later": {"REG-DOC": 0.5, "REG-FOLFIRI": 0.5},
        "biomarkers": {"HER2": 0.12},
    },
    "liver": {
        "icd": [("C22.0", 0.85), ("C22.1", 0.15)],
        "weight": {"tertiary": 0.11, "secondary": 0.12, "other": 0.12},
        "male": 0.8,
        "age": (56, 10),
        "stages": {"BCLC B": 0.35, "BCLC C": 0.65},
        "line1": {"REG-FOLFOX": 0.6, "REG-GEMOX": 0.4},
        "later": {"REG-GEMOX": 0.5, "REG-FOLFOX": 0.5},
        "biomarkers": {},
    },
    "breast": {
        "icd": [("C50", 1.0)],
        "weight": {"tertiary": 0.16, "secondary": 0.14, "other": 0.14},
        "male": 0.01,
        "age": (50, 10),
        "stages": {"IIA": 0.25, "IIB": 0.25, "IIIA": 0.2, "IIIC": 0.1, "IV": 0.2},
        "line1": {"REG-AC-T": 0.45, "REG-EC": 0.3, "REG-DOC-CTX": 0.25},
        "later": {"REG-DOC": 0.6, "REG-PAC-CARBO": 0.4},
        "biomarkers": {"ER": 0.65, "HER2": 0.2},
    },
    "oesophageal": {
        "icd": [("C15", 1.0)],
        "weight": {"tertiary": 0.08, "secondary": 0.08, "other": 0.08},
        "male": 0.75,
        "age": (64, 9),
        "stages": {"III": 0.4, "IVA": 0.3, "IVB": 0.3},
        "line1": {"REG-PAC-CIS": 0.6, "REG-CIS-FU": 0.4},
        "later": {"REG-DOC": 1.0},
        "biomarkers": {},
    },
    "pancreatic": {
        "icd": [("C25", 1.0)],
        "weight": {"tertiary": 0.08, "secondary": 0.03, "other": 0.03},
        "male": 0.58,
        "age": (63, 9),
        "stages": {"III": 0.3, "IV": 0.7},
        "line1": {"REG-GEM-NABP": 0.6, "REG-FOLFIRINOX": 0.4},
        "later": {"REG-FOLFOX": 0.5, "REG-GEM-NABP": 0.5},
        "biomarkers": {},
    },
}
CANCER_NAMES = list(CANCERS)

# Regional excess (multiplier on the case-mix weight), e.g. liver cancer in the south.
REGIONAL = {
    "Guangdong": {"liver": 1.6},
    "Guangxi": {"liver": 1.8},
    "Henan": {"oesophageal": 1.8},
    "Hebei": {"oesophageal": 1.7},
    "Gansu": {"gastric": 1.6},
    "Shandong": {"gastric": 1.3},
    "Shanghai": {"breast": 1.3, "colorectal": 1.2},
    "Jiangsu": {"gastric": 1.3},
}
PROVINCES = [
    "Beijing",
    "Shanghai",
    "Guangdong",
    "Guangxi",
    "Zhejiang",
    "Jiangsu",
    "Sichuan",
    "Hubei",
    "Hunan",
    "Henan",
    "Hebei",
    "Shandong",
    "Gansu",
    "Fujian",
    "Liaoning",
    "Jilin",
    "Shaanxi",
    "Yunnan",
    "Anhui",
    "Jiangxi",
    "Chongqing",
    "Tianjin",
]
PROVINCE_ZH = {
    "Beijing": "北京",
    "Shanghai": "上海",
    "Guangdong": "广东",
    "Guangxi": "广西",
    "Zhejiang": "浙江",
    "Jiangsu": "江苏",
    "Sichuan": "四川",
    "Hubei": "湖北",
    "Hunan": "湖南",
    "Henan": "河南",
    "Hebei": "河北",
    "Shandong": "山东",
    "Gansu": "甘肃",
    "Fujian": "福建",
    "Liaoning": "辽宁",
    "Jilin": "吉林",
    "Shaanxi": "陕西",
    "Yunnan": "云南",
    "Anhui": "安徽",
    "Jiangxi": "江西",
    "Chongqing": "重庆",
    "Tianjin": "天津",
}
DEPARTMENTS = {
    "lung": "胸部肿瘤内科",
    "colorectal": "消化肿瘤内科",
    "gastric": "消化肿瘤内科",
    "liver": "肝胆肿瘤科",
    "breast": "乳腺内科",
    "oesophageal": "胸部肿瘤内科",
    "pancreatic": "消化肿瘤内科",
}
GENERAL_DEPARTMENT = "肿瘤内科"

# Labs the generator records, by LOINC code: (mean, sd) on the log scale where noted.
ANC, WBC, PLT, HB, ALT, TBIL, CREA = (
    "751-8",
    "6690-2",
    "777-3",
    "718-7",
    "1742-6",
    "1975-2",
    "2160-0",
)

# Unit spellings a site may use for a lab, with the factor from the canonical unit.
UNIT_STYLES = {
    "count": [
        ("10^9/L", 1.0),
        ("x10⁹/L", 1.0),
        ("×10^9/L", 1.0),
        ("G/L", 1.0),
        ("10^3/uL", 1.0),
        ("/mm3", 1000.0),
        ("10*9/L", 1.0),
    ],
    "hb": [("g/L", 1.0), ("g/l", 1.0), ("g/dL", 0.1)],
    "enzyme": [("U/L", 1.0), ("IU/L", 1.0), ("u/l", 1.0)],
    "bilirubin": [("umol/L", 1.0), ("µmol/L", 1.0), ("μmol/L", 1.0), ("mg/dL", 1 / 17.1)],
    "creatinine": [("umol/L", 1.0), ("µmol/L", 1.0), ("mg/dL", 1 / 88.4)],
}
LAB_UNIT_KIND = {
    ANC: "count",
    WBC: "count",
    PLT: "count",
    HB: "hb",
    ALT: "enzyme",
    TBIL: "bilirubin",
    CREA: "creatinine",
}

# The generating model (docs/synthetic-cohort.md). Log-odds per cycle.
CINV = {
    "intercept": -2.3,
    "emetogenic": {"minimal": -1.6, "low": -0.9, "moderate": 0.0, "high": 0.8},
    "female": 0.5,
    "age_under_50": 0.35,
    "prior_cinv": math.log(5.17),
    "inadequate_prophylaxis": 0.8,
    "first_cycle": 0.2,
    "site_sd": 0.25,
}
NEUTROPENIA = {
    "intercept": -2.6,
    "fn_risk": {"low": -0.6, "intermediate": 0.4, "high": 1.2},
    "age_65_plus": 0.5,
    "prior_neutropenia": 1.2,
    "gcsf": -1.1,
    "log_baseline_anc": -1.0,  # per unit of log(ANC / 4)
    "ecog_2_plus": 0.3,
    "site_sd": 0.25,
}
# Guideline number of antiemetic agents by emetogenic class (ASCO/MASCC-like).
ANTIEMETIC_GUIDELINE = {"high": 3, "moderate": 2, "low": 1, "minimal": 0}
EMETOGENIC_ORDER = ["minimal", "low", "moderate", "high"]


@cache
def vocabulary() -> dict:
    """The starter vocabulary keyed by (vocabulary, code), and regimens by code."""
    data = json.loads(STARTER_VOCABULARY.read_text(encoding="utf-8"))
    concepts = {(c["vocabulary"], c["code"]): c for c in data["concepts"]}
    by_code = {c["code"]: c for c in data["concepts"]}
    regimens = {c["code"]: c for c in data["concepts"] if c["domain"] == "regimen"}
    return {"concepts": concepts, "by_code": by_code, "regimens": regimens}


def drug_emetogenic_class(code: str, dose: float, unit: str) -> str:
    drug = vocabulary()["by_code"][code]["attributes"]
    klass = drug.get("emetogenic_class", "minimal" if drug.get("oral") else "low")
    high_if = drug.get("emetogenic_high_if")
    if (
        high_if
        and unit == high_if["dose_unit"]
        and (
            ("min_dose" in high_if and dose >= high_if["min_dose"])
            or ("above_dose" in high_if and dose > high_if["above_dose"])
        )
    ):
        klass = "high"
    return klass
