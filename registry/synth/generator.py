"""Draw a site's cohort as pandas frames. Plain numpy and pandas: no Django here.

Everything is vectorised per site (a site is the unit of generation, seeded by its own child
of the run's SeedSequence), so a run is deterministic for a seed whatever the machine, and
memory is bounded by the largest site. Dates are integer days since 1970-01-01 until written.
"""

from __future__ import annotations

import datetime as dt
import json
import string
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from registry.biomarkers import parse_biomarkers
from registry.synth import catalogue as cat

EPOCH = dt.date(1970, 1, 1)
FIRST_DIAGNOSIS = (dt.date(2019, 1, 1) - EPOCH).days
LAST_DIAGNOSIS = (dt.date(2026, 3, 31) - EPOCH).days
CENSOR = (dt.date(2026, 9, 30) - EPOCH).days  # data cut-off: nothing is dated after it


def epoch_dates(days: pd.Series | np.ndarray) -> pd.Series:
    """Whole days since EPOCH (missing: NaN) as datetimes (missing: NaT), on the same index.

    Never floats with NaN through pd.to_datetime(unit=...): pandas before 3.0 leaves the
    missing slots uninitialised there and rounds them under errstate(over="raise"), so it
    raises FloatingPointError at random (pandas-dev/pandas#58419)."""
    values = pd.Series(days, dtype="float64")
    whole = values.fillna(0).round().astype("int64").to_numpy()
    stamps = pd.Series(np.datetime64(EPOCH, "D") + whole.astype("timedelta64[D]"),
                       index=values.index)
    return stamps.where(values.notna())

TIERS = ["tertiary", "secondary", "other"]
DATE_STYLES = ["iso", "slash", "dot", "compact", "chinese"]
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "gb18030"]


def day(value: dt.date) -> int:
    return (value - EPOCH).days


@dataclass
class SiteSpec:
    """A site and its habits: how it writes words, units and dates, and how it treats."""

    index: int
    code: str
    name: str
    province: str
    tier: str
    n_patients: int
    seed: np.random.SeedSequence
    habits: dict = field(default_factory=dict)
    dialect: dict = field(default_factory=dict)  # (domain, concept code) -> [words]
    units: dict = field(default_factory=dict)  # lab unit kind -> (word, factor)


@dataclass
class SiteCohort:
    spec: SiteSpec
    patients: pd.DataFrame
    diagnoses: pd.DataFrame
    lines: pd.DataFrame
    cycles: pd.DataFrame
    drugs: pd.DataFrame
    adverse_events: pd.DataFrame
    labs: pd.DataFrame
    followups: pd.DataFrame
    truth: pd.DataFrame
    terms: pd.DataFrame  # domain, text, vocabulary, code: every local word used and its meaning

    def row_counts(self) -> dict[str, int]:
        return {
            name: len(getattr(self, name))
            for name in (
                "patients",
                "diagnoses",
                "lines",
                "cycles",
                "drugs",
                "adverse_events",
                "labs",
                "followups",
            )
        }


# ---------------------------------------------------------------------------------------------
# Sites and their dialects


def plan_sites(*, n_sites: int, n_patients: int, seed: int) -> list[SiteSpec]:
    """Sites with tiers, provinces and sizes (tertiary hospitals enrol more)."""
    root = np.random.SeedSequence(seed)
    plan_seq, *site_seqs = root.spawn(n_sites + 1)
    rng = np.random.default_rng(plan_seq)
    tiers = rng.choice(TIERS, size=n_sites, p=[0.45, 0.4, 0.15])
    if n_sites:
        tiers[0] = "tertiary"
    size_weight = rng.lognormal(0.0, 0.6, n_sites) * np.select(
        [tiers == "tertiary", tiers == "secondary"], [2.5, 1.0], 0.6
    )
    sizes = _allocate(n_patients, size_weight, rng)
    provinces = rng.choice(cat.PROVINCES, size=n_sites)
    specs = []
    for i in range(n_sites):
        province = str(provinces[i])
        kind = {"tertiary": "肿瘤医院", "secondary": "人民医院", "other": "中心医院"}[tiers[i]]
        name = f"{cat.PROVINCE_ZH[province]}第{i + 1}{kind}"
        spec = SiteSpec(
            index=i,
            code=f"S{i + 1:03d}",
            name=name,
            province=province,
            tier=str(tiers[i]),
            n_patients=int(sizes[i]),
            seed=site_seqs[i],
        )
        _draw_habits(spec)
        specs.append(spec)
    return specs


def _allocate(total: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(weights) == 0:
        return np.zeros(0, dtype=int)
    base = min(1, total // len(weights))
    sizes = np.full(len(weights), base)
    rest = total - base * len(weights)
    sizes += rng.multinomial(rest, weights / weights.sum())
    return sizes


def _draw_habits(spec: SiteSpec) -> None:
    rng = np.random.default_rng(spec.seed.spawn(1)[0])
    care = {"tertiary": 0.85, "secondary": 0.65, "other": 0.5}[spec.tier]
    spec.habits = {
        "antiemetic_adherence": float(np.clip(rng.normal(care, 0.1), 0.2, 0.98)),
        "gcsf_adherence": float(np.clip(rng.normal(care - 0.1, 0.15), 0.1, 0.95)),
        "nadir_recorded": float(rng.uniform(0.3, 0.95)),
        "baseline_recorded": float(rng.uniform(0.85, 1.0)),
        "records_ecog": bool(rng.random() < 0.8),
        "records_biomarkers": bool(rng.random() < 0.6),
        "records_tnm": bool(rng.random() < 0.5),
        "records_route": bool(rng.random() < 0.7),
        "records_chemistry": bool(rng.random() < 0.75),
        "dose_style": "absolute" if rng.random() < 0.5 else "per_m2",
        "date_style": DATE_STYLES[rng.integers(len(DATE_STYLES))],
        "encoding": ENCODINGS[rng.integers(len(ENCODINGS))],
        "sex_style": ["MF", "zh", "en"][rng.integers(3)],
        "grade_style": ["digit", "ji", "roman", "G"][rng.integers(4)],
        "yesno_style": ["YN", "zh"][rng.integers(2)],
        "vital_style": ["en", "zh"][rng.integers(2)],
        "birth_style": "date" if rng.random() < 0.5 else "year",
        "number_prefix": "".join(rng.choice(list(string.ascii_uppercase), 2)),
        "number_style": int(rng.integers(3)),
        "baseline_offset": int(rng.choice([-1, 0])),
        "ht3": str(rng.choice(["A04AA01", "A04AA02", "A04AA05"], p=[0.5, 0.3, 0.2])),
        "gcsf_drug": str(rng.choice(["L03AA13", "L03AA02"])),
        "cinv_effect": float(rng.normal(0, cat.CINV["site_sd"])),
        "neutropenia_effect": float(rng.normal(0, cat.NEUTROPENIA["site_sd"])),
    }
    spec.units = {
        kind: styles[rng.integers(len(styles))] for kind, styles in cat.UNIT_STYLES.items()
    }
    spec.dialect = _draw_dialect(rng)


_FULL_WIDTH = str.maketrans(
    {c: chr(ord(c) + 0xFEE0) for c in string.ascii_letters + string.digits + "-+"}
)


def _spellings(concept: dict) -> list[str]:
    names = [concept["name_zh"], concept["name_en"], *concept["synonyms"]]
    if concept["vocabulary"] in {"ICD10", "LOINC"}:
        names.append(concept["code"])
    return [n for n in dict.fromkeys(names) if n]


def _decorate(word: str, domain: str, rng: np.random.Generator) -> str:
    """A site's habit of writing a word: case, suffixes, full width."""
    is_latin = word.isascii()
    roll = rng.random()
    if domain == "drug":
        if not is_latin and roll < 0.25:
            return word + "注射液"
        if not is_latin and roll < 0.35:
            return "注射用" + word
        if is_latin and roll < 0.2:
            return word.capitalize() + " Inj."
        if is_latin and roll < 0.3:
            return word.translate(_FULL_WIDTH)
    if is_latin and roll > 0.85:
        return word.upper()
    if is_latin and roll > 0.75:
        return word.lower()
    return word


def _typo(word: str, rng: np.random.Generator) -> str | None:
    if not word.isascii() or len(word) < 5:
        return None
    i = int(rng.integers(1, len(word) - 1))
    if rng.random() < 0.5:
        return word[:i] + word[i + 1 :]  # a dropped letter
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # two letters swapped


def _draw_dialect(rng: np.random.Generator) -> dict:
    vocab = cat.vocabulary()
    dialect: dict[tuple[str, str], list[str]] = {}
    used: dict[str, set[str]] = {}
    domain_of = {
        "ICD10": "condition",
        "ATC": "drug",
        "LOINC": "lab",
        "CTCAE": "adverse_event",
        "REGISTRY": None,
        "UCUM": None,
    }
    for (vocabulary, code), concept in vocab["concepts"].items():
        domain = concept["domain"] if vocabulary == "REGISTRY" else domain_of[vocabulary]
        if domain is None or domain == "unit":
            continue
        options = _spellings(concept)
        taken = used.setdefault(domain, set())
        words = []
        for word in rng.permutation(options):
            word = _decorate(str(word), domain, rng)
            key = word.casefold().replace(" ", "")
            if key not in taken:
                taken.add(key)
                words.append(word)
            if len(words) == 2:
                break
        typo = _typo(words[0], rng)
        if typo and typo.casefold() not in taken:
            taken.add(typo.casefold())
            words.append(typo)
        dialect[(domain, code)] = words
    return dialect


def _words(spec: SiteSpec, domain: str, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The local word for each code: mostly the site's usual word, sometimes its variant or a
    typo."""
    out = np.empty(len(codes), dtype=object)
    if len(codes) == 0:
        return out
    roll = rng.random(len(codes))
    for code in np.unique(codes):
        mask = codes == code
        words = spec.dialect[(domain, code)]
        choice = np.zeros(mask.sum(), dtype=int)
        r = roll[mask]
        if len(words) > 1:
            choice[r < 0.12] = 1
        if len(words) > 2:
            choice[r < 0.015] = 2
        out[mask] = np.array(words, dtype=object)[choice]
    return out


# ---------------------------------------------------------------------------------------------
# One site's cohort


def generate_site(spec: SiteSpec) -> SiteCohort:
    rng = np.random.default_rng(spec.seed.spawn(2)[1])
    h = spec.habits
    vocab = cat.vocabulary()
    n = spec.n_patients

    # Patients and diagnoses.
    weights = np.array(
        [
            cat.CANCERS[c]["weight"][spec.tier] * cat.REGIONAL.get(spec.province, {}).get(c, 1.0)
            for c in cat.CANCER_NAMES
        ]
    )
    cancer = rng.choice(len(cat.CANCER_NAMES), size=n, p=weights / weights.sum())
    male_p = np.array([cat.CANCERS[c]["male"] for c in cat.CANCER_NAMES])[cancer]
    female = rng.random(n) >= male_p
    age_mu = np.array([cat.CANCERS[c]["age"][0] for c in cat.CANCER_NAMES])[cancer]
    age_sd = np.array([cat.CANCERS[c]["age"][1] for c in cat.CANCER_NAMES])[cancer]
    age = np.clip(np.round(rng.normal(age_mu, age_sd)), 22, 88).astype(int)
    diag = rng.integers(FIRST_DIAGNOSIS, LAST_DIAGNOSIS + 1, size=n)
    diag_year = (np.datetime64("1970-01-01") + diag.astype("timedelta64[D]")).astype(
        "datetime64[Y]"
    ).astype(int) + 1970
    birth_year = diag_year - age
    ecog = rng.choice([0, 1, 2], size=n, p=[0.35, 0.5, 0.15])
    bsa = np.round(np.clip(rng.normal(np.where(female, 1.58, 1.75), 0.13), 1.2, 2.3), 2)
    weight_kg = np.round(np.clip(rng.normal(np.where(female, 57, 67), 9), 35, 120))
    icd = np.empty(n, dtype=object)
    stage = np.empty(n, dtype=object)
    stage_system = np.empty(n, dtype=object)
    for ci, name in enumerate(cat.CANCER_NAMES):
        mask = cancer == ci
        spec_c = cat.CANCERS[name]
        codes, shares = zip(*spec_c["icd"], strict=True)
        icd[mask] = rng.choice(codes, size=mask.sum(), p=shares)
        stages = list(spec_c["stages"])
        stage[mask] = rng.choice(stages, size=mask.sum(), p=list(spec_c["stages"].values()))
        stage_system[mask] = "BCLC" if name == "liver" else "AJCC8"
    advanced = np.array([s.startswith("IV") or s == "BCLC C" for s in stage])
    # Survival and progression (months -> days), worse for advanced, liver and pancreas.
    hazard = np.where(advanced, 0.045, 0.015) * np.select(
        [
            cancer == cat.CANCER_NAMES.index("pancreatic"),
            cancer == cat.CANCER_NAMES.index("liver"),
            cancer == cat.CANCER_NAMES.index("breast"),
        ],
        [1.8, 1.3, 0.5],
        1.0,
    )
    death = diag + np.round(rng.exponential(30.4 / hazard)).astype(int)
    progression = diag + np.round(rng.exponential(30.4 / (2.2 * hazard))).astype(int)
    lost = diag + np.round(rng.exponential(365 * 12, n)).astype(int)

    # Treatment lines: 1-3, later lines only for some.
    n_lines = 1 + (rng.random(n) < np.where(advanced, 0.45, 0.25)) + (rng.random(n) < 0.12)
    line_rows = []
    start = diag + rng.integers(7, 36, size=n)
    for k in (1, 2, 3):
        has = (n_lines >= k) & (start < np.minimum(death, CENSOR) - 7)
        idx = np.nonzero(has)[0]
        if len(idx) == 0:
            break
        regimen = np.empty(len(idx), dtype=object)
        for ci, name in enumerate(cat.CANCER_NAMES):
            sel = cancer[idx] == ci
            table = cat.CANCERS[name]["line1" if k == 1 else "later"]
            regimen[sel] = rng.choice(list(table), size=sel.sum(), p=list(table.values()))
        planned = np.array(
            [
                sum(p["cycles"] for p in vocab["regimens"][r]["attributes"]["phases"])
                for r in regimen
            ]
        )
        n_cycles = np.where(rng.random(len(idx)) < 0.7, planned, rng.integers(2, planned + 1))
        if k > 1:
            n_cycles = np.minimum(n_cycles, rng.integers(2, 7, size=len(idx)))
        days = np.array([vocab["regimens"][r]["attributes"]["cycle_days"] for r in regimen])
        line_rows.append(
            pd.DataFrame(
                {
                    "pidx": idx,
                    "line_no": k,
                    "regimen": regimen,
                    "start_date": start[idx],
                    "n_cycles": n_cycles,
                    "cycle_days": days,
                }
            )
        )
        start = start.copy()
        start[idx] = start[idx] + n_cycles * days + rng.integers(21, 91, size=len(idx))
    lines = pd.concat(line_rows, ignore_index=True) if line_rows else _empty_lines()
    lines = lines.sort_values(["pidx", "line_no"], kind="stable").reset_index(drop=True)

    # Cycles: planned, then cut at death and at the data cut-off.
    rep = lines.index.repeat(lines["n_cycles"])
    cycles = pd.DataFrame(
        {
            "line_idx": rep,
            "pidx": lines["pidx"].to_numpy()[rep],
            "line_no": lines["line_no"].to_numpy()[rep],
        }
    )
    cycles["cycle_no"] = cycles.groupby("line_idx").cumcount() + 1
    delay = rng.choice([0, 0, 0, 1, 2, 3, 7], size=len(cycles))
    cycles["delay"] = delay
    cum_delay = cycles.groupby("line_idx")["delay"].cumsum() - cycles["delay"]
    cycle_days = lines["cycle_days"].to_numpy()[rep]
    cycles["start_date"] = (
        lines["start_date"].to_numpy()[rep] + (cycles["cycle_no"] - 1) * cycle_days + cum_delay
    )
    cycles["length_days"] = cycle_days
    alive_until = np.minimum(death, CENSOR)[cycles["pidx"]]
    cycles = cycles[cycles["start_date"] + 14 <= alive_until].reset_index(drop=True)
    cycles["regimen"] = lines["regimen"].to_numpy()[cycles["line_idx"]]
    cycles["bsa"] = bsa[cycles["pidx"]]
    kept_lines = np.unique(cycles["line_idx"])
    last_start = cycles.groupby("line_idx")["start_date"].max()
    lines["end_date"] = np.nan
    lines.loc[last_start.index, "end_date"] = (
        last_start + lines.loc[last_start.index, "cycle_days"] - 1
    )
    lines.loc[lines["end_date"] > CENSOR, "end_date"] = np.nan
    line_map = pd.Series(np.arange(len(kept_lines)), index=kept_lines)
    lines = lines.loc[kept_lines].reset_index(drop=True)
    cycles["line_idx"] = line_map[cycles["line_idx"]].to_numpy()

    # Per-cycle drugs and risk factors.
    drug_rows, emeto, fn_risk = _antineoplastic_drugs(cycles, weight_kg, h)
    cycles["emeto"] = emeto
    cycles["fn_risk"] = fn_risk
    c_female = female[cycles["pidx"]]
    c_age = age[cycles["pidx"]]
    c_ecog = ecog[cycles["pidx"]]
    m = len(cycles)
    anc_base = np.clip(rng.lognormal(np.log(3.8), 0.35, m), 0.6, 15)
    guideline = np.array([cat.ANTIEMETIC_GUIDELINE[e] for e in emeto])
    follows = rng.random(m) < h["antiemetic_adherence"]
    given = np.where(follows, guideline, np.maximum(guideline - rng.integers(1, 3, m), 0))
    inadequate = given < guideline
    gcsf_primary = (fn_risk == "high") | ((fn_risk == "intermediate") & (c_age >= 65))
    gcsf_follow = rng.random(m) < h["gcsf_adherence"]
    gcsf = np.where(gcsf_follow, gcsf_primary, rng.random(m) < 0.1)

    # Events, cycle by cycle in each patient's order: prior-cycle events feed the next cycle.
    order = np.lexsort((cycles["cycle_no"], cycles["line_no"], cycles["pidx"]))
    assert (order == np.arange(m)).all()
    first_of_patient = np.r_[True, cycles["pidx"].to_numpy()[1:] != cycles["pidx"].to_numpy()[:-1]]
    position = np.arange(m) - np.maximum.accumulate(np.where(first_of_patient, np.arange(m), 0))
    p_cinv = np.zeros(m)
    p_neut = np.zeros(m)
    y_cinv = np.zeros(m, dtype=bool)
    y_neut = np.zeros(m, dtype=bool)
    u_cinv, u_neut, u_secondary = rng.random(m), rng.random(m), rng.random(m)
    emeto_effect = np.array([cat.CINV["emetogenic"][e] for e in emeto])
    fn_effect = np.array([cat.NEUTROPENIA["fn_risk"][f] for f in fn_risk])
    for pos in range(int(position.max()) + 1 if m else 0):
        at = np.nonzero(position == pos)[0]
        prior_cinv = y_cinv[at - 1] if pos else np.zeros(len(at), dtype=bool)
        prior_neut = y_neut[at - 1] if pos else np.zeros(len(at), dtype=bool)
        if pos:
            # Secondary G-CSF prophylaxis after neutropenia in the previous cycle.
            gcsf[at] |= prior_neut & (u_secondary[at] < h["gcsf_adherence"])
            anc_base[at] = np.where(prior_neut, anc_base[at] * 0.85, anc_base[at])
        c = cat.CINV
        logit = (
            c["intercept"]
            + emeto_effect[at]
            + c["female"] * c_female[at]
            + c["age_under_50"] * (c_age[at] < 50)
            + c["prior_cinv"] * prior_cinv
            + c["inadequate_prophylaxis"] * inadequate[at]
            + c["first_cycle"] * (pos == 0)
            + h["cinv_effect"]
        )
        p_cinv[at] = 1 / (1 + np.exp(-logit))
        y_cinv[at] = u_cinv[at] < p_cinv[at]
        q = cat.NEUTROPENIA
        logit = (
            q["intercept"]
            + fn_effect[at]
            + q["age_65_plus"] * (c_age[at] >= 65)
            + q["prior_neutropenia"] * prior_neut
            + q["gcsf"] * gcsf[at]
            + q["log_baseline_anc"] * np.log(anc_base[at] / 4.0)
            + q["ecog_2_plus"] * (c_ecog[at] >= 2)
            + h["neutropenia_effect"]
        )
        p_neut[at] = 1 / (1 + np.exp(-logit))
        y_neut[at] = u_neut[at] < p_neut[at]

    support_rows = _supportive_drugs(cycles, emeto, given, gcsf, h, rng)
    drugs = pd.concat([drug_rows, support_rows], ignore_index=True)
    drugs["drug_word"] = _words(spec, "drug", drugs["drug_code"].to_numpy(), rng)
    if not h["records_route"]:
        drugs["route"] = ""
    drugs = drugs.drop_duplicates(["pidx", "line_no", "cycle_no", "day", "drug_word"])

    labs = _labs(spec, cycles, anc_base, y_neut, rng)
    aes = _adverse_events(spec, cycles, y_cinv, y_neut, labs, rng)
    labs = labs.drop(columns=["kind"])

    # Follow-up every ~3 months after the first line, until death, loss or the cut-off.
    followups = _followups(n, lines, cycles, death, progression, lost, ecog, rng)

    patients = _patients_frame(spec, n, female, birth_year, diag, cancer, rng)
    diagnoses = _diagnoses_frame(spec, n, diag, icd, stage, stage_system, ecog, cancer, rng)
    lines_out = pd.DataFrame(
        {
            "pidx": lines["pidx"],
            "line_no": lines["line_no"],
            "regimen_code": lines["regimen"],
            "regimen_word": _words(spec, "regimen", lines["regimen"].to_numpy(dtype=object), rng),
            "intent": np.where(
                advanced[lines["pidx"]],
                "palliative",
                np.where(
                    cancer[lines["pidx"]] == cat.CANCER_NAMES.index("breast"),
                    "adjuvant",
                    "curative",
                ),
            ),
            "start_date": lines["start_date"],
            "end_date": lines["end_date"],
        }
    )
    lines_out.loc[lines_out["line_no"] > 1, "intent"] = "palliative"
    cycles_out = cycles[["pidx", "line_no", "cycle_no", "start_date", "length_days", "bsa"]]
    truth = pd.DataFrame(
        {
            "pidx": cycles["pidx"],
            "line_no": cycles["line_no"],
            "cycle_no": cycles["cycle_no"],
            "p_cinv": p_cinv,
            "y_cinv": y_cinv,
            "p_neutropenia": p_neut,
            "y_neutropenia": y_neut,
        }
    )
    cohort = SiteCohort(
        spec=spec,
        patients=patients,
        diagnoses=diagnoses,
        lines=lines_out,
        cycles=cycles_out.reset_index(drop=True),
        drugs=drugs.reset_index(drop=True),
        adverse_events=aes,
        labs=labs,
        followups=followups,
        truth=truth,
        terms=pd.DataFrame(),
    )
    cohort.terms = _terms_used(cohort)
    return cohort


def _empty_lines() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pidx": pd.Series(dtype=int),
            "line_no": pd.Series(dtype=int),
            "regimen": pd.Series(dtype=object),
            "start_date": pd.Series(dtype=int),
            "n_cycles": pd.Series(dtype=int),
            "cycle_days": pd.Series(dtype=int),
        }
    )


def _antineoplastic_drugs(cycles: pd.DataFrame, weight_kg: np.ndarray, habits: dict):
    vocab = cat.vocabulary()
    rows = []
    emeto = np.empty(len(cycles), dtype=object)
    fn_risk = np.empty(len(cycles), dtype=object)
    for regimen, group in cycles.groupby("regimen", sort=True):
        attrs = vocab["regimens"][regimen]["attributes"]
        fn_risk[group.index] = attrs["fn_risk"]
        first = 1
        for phase in attrs["phases"]:
            in_phase = group[
                (group["cycle_no"] >= first) & (group["cycle_no"] < first + phase["cycles"])
            ]
            first += phase["cycles"]
            if in_phase.empty:
                continue
            classes = [
                cat.drug_emetogenic_class(d["drug"], d["dose"], d["unit"]) for d in phase["drugs"]
            ]
            klass = max(classes, key=cat.EMETOGENIC_ORDER.index)
            klass = attrs.get("emetogenic_class", klass)
            emeto[in_phase.index] = klass
            for d in phase["drugs"]:
                for day_no in d["days"]:
                    dose, unit = _dose(d, in_phase, weight_kg, habits)
                    oral = vocab["by_code"][d["drug"]]["attributes"].get("oral", False)
                    rows.append(
                        pd.DataFrame(
                            {
                                "pidx": in_phase["pidx"].to_numpy(),
                                "line_no": in_phase["line_no"].to_numpy(),
                                "cycle_no": in_phase["cycle_no"].to_numpy(),
                                "day": day_no,
                                "drug_code": d["drug"],
                                "dose": dose,
                                "dose_unit": unit,
                                "route": "po" if oral else "iv",
                                "purpose": "antineoplastic",
                            }
                        )
                    )
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return frame, emeto, fn_risk


def _dose(d: dict, cycles: pd.DataFrame, weight_kg: np.ndarray, habits: dict):
    n = len(cycles)
    if d["unit"] == "mg/m2":
        if habits["dose_style"] == "per_m2":
            return np.full(n, float(d["dose"])), "mg/m2"
        return np.round(d["dose"] * cycles["bsa"].to_numpy() / 10) * 10, "mg"
    if d["unit"] == "AUC":
        if habits["dose_style"] == "per_m2":
            return np.full(n, float(d["dose"])), "AUC"
        return np.round(d["dose"] * 115 * cycles["bsa"].to_numpy() / 1.73 / 10) * 10, "mg"
    if d["unit"] == "mg/kg":
        if habits["dose_style"] == "per_m2":
            return np.full(n, float(d["dose"])), "mg/kg"
        return np.round(d["dose"] * weight_kg[cycles["pidx"].to_numpy()] / 10) * 10, "mg"
    return np.full(n, float(d["dose"])), d["unit"]


ANTIEMETIC_DOSES = {
    "A04AA01": (8, "mg", "iv"),
    "A04AA02": (3, "mg", "iv"),
    "A04AA05": (0.25, "mg", "iv"),
    "A04AD12": (125, "mg", "po"),
    "H02AB02": (10, "mg", "iv"),
    "N05AH03": (5, "mg", "po"),
}


def _supportive_drugs(cycles, emeto, given, gcsf, habits, rng) -> pd.DataFrame:
    """Antiemetics on day 1 (as many agents as `given`) and G-CSF on day 3."""
    rows = []
    # Agents in the order a guideline adds them: 5-HT3 antagonist, dexamethasone, NK1.
    ladder = [habits["ht3"], "H02AB02", "A04AD12"]
    low_first = np.where(rng.random(len(cycles)) < 0.5, "H02AB02", habits["ht3"])
    for k in range(3):
        mask = given > k
        if not mask.any():
            continue
        codes = np.full(mask.sum(), ladder[k], dtype=object)
        if k == 0:
            # A single agent for low-risk regimens is dexamethasone or a 5-HT3 antagonist.
            single = (given == 1)[mask]
            codes[single] = low_first[mask][single]
        if k == 1:
            # The second agent is whichever of the pair the first was not.
            first_was_dex = (low_first[mask] == "H02AB02") & ((given == 1)[mask])
            codes[first_was_dex] = habits["ht3"]
        sel = cycles[mask]
        rows.append(_support_frame(sel, codes, 1, "antiemetic"))
    olanzapine = (emeto == "high") & (given >= 3) & (rng.random(len(cycles)) < 0.2)
    if olanzapine.any():
        rows.append(
            _support_frame(
                cycles[olanzapine],
                np.full(olanzapine.sum(), "N05AH03", dtype=object),
                1,
                "antiemetic",
            )
        )
    if gcsf.any():
        sel = cycles[gcsf]
        frame = pd.DataFrame(
            {
                "pidx": sel["pidx"].to_numpy(),
                "line_no": sel["line_no"].to_numpy(),
                "cycle_no": sel["cycle_no"].to_numpy(),
                "day": 3,
                "drug_code": habits["gcsf_drug"],
                "purpose": "gcsf",
                "route": "sc",
            }
        )
        frame["dose"], frame["dose_unit"] = (
            (6.0, "mg") if habits["gcsf_drug"] == "L03AA13" else (300.0, "ug")
        )
        rows.append(frame)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _support_frame(sel: pd.DataFrame, codes: np.ndarray, day_no: int, purpose: str):
    dose = np.array([ANTIEMETIC_DOSES[c][0] for c in codes], dtype=float)
    return pd.DataFrame(
        {
            "pidx": sel["pidx"].to_numpy(),
            "line_no": sel["line_no"].to_numpy(),
            "cycle_no": sel["cycle_no"].to_numpy(),
            "day": day_no,
            "drug_code": codes,
            "dose": dose,
            "dose_unit": [ANTIEMETIC_DOSES[c][1] for c in codes],
            "route": [ANTIEMETIC_DOSES[c][2] for c in codes],
            "purpose": purpose,
        }
    )


def _fmt(values: np.ndarray, decimals: int) -> np.ndarray:
    return np.char.mod(f"%.{decimals}f", values).astype(object)


def _labs(spec, cycles, anc_base, y_neut, rng) -> pd.DataFrame:
    h = spec.habits
    m = len(cycles)
    frames = []
    start = cycles["start_date"].to_numpy()
    base_day = start + h["baseline_offset"]
    nadir_day = start + 9 + rng.integers(0, 3, m)
    keep_base = rng.random(m) < h["baseline_recorded"]
    keep_nadir = rng.random(m) < h["nadir_recorded"]

    def add(code, day_values, values, mask, kind):
        frames.append(
            pd.DataFrame(
                {
                    "pidx": cycles["pidx"].to_numpy()[mask],
                    "line_no": cycles["line_no"].to_numpy()[mask],
                    "cycle_no": cycles["cycle_no"].to_numpy()[mask],
                    "collected_date": day_values[mask],
                    "test_code": code,
                    "canonical": values[mask],
                    "kind": kind,
                }
            )
        )

    wbc_base = anc_base / rng.uniform(0.55, 0.7, m)
    add(cat.ANC, base_day, anc_base, keep_base, "baseline")
    add(cat.WBC, base_day, wbc_base, keep_base, "baseline")
    add(cat.PLT, base_day, np.clip(rng.normal(230, 60, m), 60, 600), keep_base, "baseline")
    add(cat.HB, base_day, np.clip(rng.normal(122, 14, m), 70, 175), keep_base, "baseline")
    add(
        cat.ALT,
        base_day,
        np.clip(rng.lognormal(np.log(24), 0.45, m), 3, 400),
        keep_base,
        "baseline",
    )
    if h["records_chemistry"]:
        first = cycles["cycle_no"].to_numpy() == 1
        add(
            cat.TBIL,
            base_day,
            np.clip(rng.lognormal(np.log(11), 0.4, m), 2, 80),
            keep_base & first,
            "baseline",
        )
        add(
            cat.CREA,
            base_day,
            np.clip(rng.normal(72, 16, m), 30, 200),
            keep_base & first,
            "baseline",
        )
    # Nadir counts agree with the neutropenia outcome: grade >= 3 is ANC < 1.0.
    grade4 = rng.random(m) < 0.3
    anc_event = np.where(grade4, rng.uniform(0.03, 0.5, m), rng.uniform(0.5, 0.99, m))
    anc_none = np.maximum(anc_base * rng.uniform(0.3, 0.95, m), 1.0 + rng.uniform(0, 0.5, m))
    anc_nadir = np.where(y_neut, anc_event, anc_none)
    add(cat.ANC, nadir_day, anc_nadir, keep_nadir, "nadir")
    add(cat.WBC, nadir_day, anc_nadir / rng.uniform(0.45, 0.7, m) + 0.3, keep_nadir, "nadir")
    add(cat.PLT, nadir_day, np.clip(rng.normal(150, 60, m), 8, 450), keep_nadir, "nadir")
    labs = pd.concat(frames, ignore_index=True)

    kinds = labs["test_code"].map(cat.LAB_UNIT_KIND).to_numpy()
    unit_word = np.empty(len(labs), dtype=object)
    factor = np.ones(len(labs))
    for kind in np.unique(kinds):
        word, f = spec.units[kind]
        unit_word[kinds == kind] = word
        factor[kinds == kind] = f
    value = labs["canonical"].to_numpy() * factor
    decimals = np.where(
        factor >= 1000, 0, np.where(np.isin(kinds, ["hb", "enzyme"]) & (factor == 1), 0, 2)
    )
    rounded = np.where(decimals == 0, np.round(value), np.round(value, 2))
    text = np.where(decimals == 0, _fmt(rounded, 0), _fmt(rounded, 2))
    comparator = np.full(len(labs), "", dtype=object)
    count_floor = 0.1 * factor
    censored = (kinds == "count") & (value < count_floor)
    comparator[censored] = "<"
    text[censored] = np.where(factor[censored] >= 1000, "<100", "<0.1")
    shown = np.where(censored, count_floor, rounded)
    labs["value_text"] = text
    labs["comparator"] = comparator
    labs["value"] = shown
    labs["unit_word"] = unit_word
    labs["value_canonical"] = shown / factor
    labs["canonical_unit"] = [
        cat.vocabulary()["by_code"][c]["attributes"]["canonical_unit"] for c in labs["test_code"]
    ]
    labs["test_word"] = _words(spec, "lab", labs["test_code"].to_numpy(dtype=object), rng)
    labs = labs.drop(columns=["canonical"])
    return labs.drop_duplicates(["pidx", "test_word", "collected_date"]).reset_index(drop=True)


def _grade_text(grades: np.ndarray, style: str) -> np.ndarray:
    roman = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V"}
    if style == "ji":
        return np.array([f"{g}级" for g in grades], dtype=object)
    if style == "roman":
        return np.array([f"{roman[g]}度" for g in grades], dtype=object)
    if style == "G":
        return np.array([f"G{g}" for g in grades], dtype=object)
    return grades.astype(str).astype(object)


def _adverse_events(spec, cycles, y_cinv, y_neut, labs, rng) -> pd.DataFrame:
    m = len(cycles)
    start = cycles["start_date"].to_numpy()
    frames = []

    def add(mask, code, grade, onset, serious, resolved_after):
        if not mask.any():
            return
        frames.append(
            pd.DataFrame(
                {
                    "pidx": cycles["pidx"].to_numpy()[mask],
                    "line_no": cycles["line_no"].to_numpy()[mask],
                    "cycle_no": cycles["cycle_no"].to_numpy()[mask],
                    "term_code": code,
                    "grade": grade[mask],
                    "onset_date": onset[mask],
                    "resolved_date": onset[mask] + resolved_after[mask],
                    "serious": serious[mask],
                }
            )
        )

    onset = start + rng.integers(1, 4, m)
    nausea_grade = np.where(y_cinv, np.where(rng.random(m) < 0.25, 3, 2), 1)
    mild = ~y_cinv & (rng.random(m) < 0.25)
    add(y_cinv | mild, "Nausea", nausea_grade, onset, nausea_grade >= 3, rng.integers(2, 8, m))
    vomit = y_cinv & (rng.random(m) < 0.5)
    vomit_grade = np.where(rng.random(m) < 0.15, 3, 2)
    add(
        vomit,
        "Vomiting",
        vomit_grade,
        onset + rng.integers(0, 2, m),
        vomit_grade >= 3,
        rng.integers(1, 5, m),
    )
    # Neutropenia: febrile (grade 3-4, serious) or the count itself, graded from the nadir.
    nadir = labs[(labs["kind"] == "nadir") & (labs["test_code"] == cat.ANC)]
    nadir_key = pd.Series(
        nadir["value_canonical"].to_numpy(),
        index=pd.MultiIndex.from_arrays([nadir["pidx"], nadir["line_no"], nadir["cycle_no"]]),
    )
    nadir_date = pd.Series(nadir["collected_date"].to_numpy(), index=nadir_key.index)
    key = pd.MultiIndex.from_arrays([cycles["pidx"], cycles["line_no"], cycles["cycle_no"]])
    anc = nadir_key.reindex(key).to_numpy()
    anc_day = nadir_date.reindex(key).to_numpy()
    febrile = y_neut & (rng.random(m) < 0.2)
    fn_grade = np.where(rng.random(m) < 0.9, 3, 4)
    fn_onset = start + rng.integers(8, 13, m)
    add(
        febrile,
        "Febrile neutropenia",
        fn_grade,
        fn_onset,
        np.ones(m, dtype=bool),
        rng.integers(3, 10, m),
    )
    count = y_neut & ~febrile
    graded = np.where(
        np.isnan(anc),
        np.where(rng.random(m) < 0.3, 4, 3),
        np.where(np.nan_to_num(anc, nan=1) < 0.5, 4, 3),
    )
    onset_count = np.where(np.isnan(anc_day), start + 10, np.nan_to_num(anc_day)).astype(int)
    add(
        count,
        "Neutrophil count decreased",
        graded,
        onset_count,
        graded >= 4,
        rng.integers(3, 10, m),
    )
    aes = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            columns=[
                "pidx",
                "line_no",
                "cycle_no",
                "term_code",
                "grade",
                "onset_date",
                "resolved_date",
                "serious",
            ]
        )
    )
    aes["grade"] = aes["grade"].astype(int)
    aes["term_word"] = _words(spec, "adverse_event", aes["term_code"].to_numpy(dtype=object), rng)
    aes["resolved_date"] = np.where(aes["resolved_date"] > CENSOR, np.nan, aes["resolved_date"])
    return aes.drop_duplicates(["pidx", "term_word", "onset_date"]).reset_index(drop=True)


def _followups(n, lines, cycles, death, progression, lost, ecog, rng) -> pd.DataFrame:
    first_line = lines.groupby("pidx")["start_date"].min()
    last_end = lines.groupby("pidx")["end_date"].max()
    begin = np.full(n, -1)
    begin[first_line.index] = first_line.to_numpy()
    ended = last_end.reindex(range(n)).to_numpy()
    frames = []
    end = np.minimum(np.minimum(death, lost), CENSOR)
    for j in range(1, 13):
        visit = begin + 90 * j + rng.integers(-10, 11, n)
        visit = np.where(np.isnan(ended), visit, np.maximum(visit, np.nan_to_num(ended) + 1))
        due = (begin >= 0) & (visit <= end)
        frames.append(pd.DataFrame({"pidx": np.nonzero(due)[0], "followup_date": visit[due]}))
    fu = pd.concat(frames, ignore_index=True)
    fu["vital_status"] = "alive"
    # A closing record: death, or loss to follow-up, when it happened before the cut-off.
    closing_day = np.minimum(death, lost)
    closes = (begin >= 0) & (closing_day <= CENSOR)
    idx = np.nonzero(closes)[0]
    last_visit = fu.groupby("pidx")["followup_date"].max().reindex(idx).fillna(-1).to_numpy()
    closing = pd.DataFrame(
        {
            "pidx": idx,
            "followup_date": np.maximum(closing_day[idx], last_visit + 1),
            "vital_status": np.where(death[idx] <= lost[idx], "dead", "lost"),
        }
    )
    # Death or loss is never dated before the last recorded cycle.
    treat_end = cycles.groupby("pidx")["start_date"].max().reindex(idx).to_numpy()
    closing["followup_date"] = np.maximum(closing["followup_date"], treat_end + 15)
    closing = closing[closing["followup_date"] <= CENSOR]
    fu = pd.concat([fu, closing], ignore_index=True).sort_values(["pidx", "followup_date"])
    fu = fu.drop_duplicates(["pidx", "followup_date"], keep="last").reset_index(drop=True)
    progressed = fu["followup_date"].to_numpy() >= progression[fu["pidx"]]
    fu["progression"] = np.where(fu["vital_status"] == "lost", None, progressed)
    fu["progression_date"] = np.where(
        progressed & (fu["vital_status"] != "lost"), progression[fu["pidx"]], np.nan
    )
    fu["ecog"] = np.where(
        fu["vital_status"] == "alive", np.minimum(ecog[fu["pidx"]] + progressed, 4), np.nan
    )
    fu["cause_of_death"] = np.where(fu["vital_status"] == "dead", "disease progression", "")
    return fu.reset_index(drop=True)


def _patient_numbers(spec: SiteSpec, n: int, diag: np.ndarray, rng) -> np.ndarray:
    h = spec.habits
    serial = rng.permutation(np.arange(10_000, 10_000 + max(n * 7, 1)))[:n]
    year = (np.datetime64("1970-01-01") + diag.astype("timedelta64[D]")).astype(
        "datetime64[Y]"
    ).astype(int) + 1970
    if h["number_style"] == 0:
        return np.array(
            [f"{h['number_prefix']}{y}{s:06d}" for y, s in zip(year, serial, strict=True)],
            dtype=object,
        )
    if h["number_style"] == 1:
        return np.array([f"{s:08d}" for s in serial], dtype=object)
    return np.array([f"{h['number_prefix']}-{s}" for s in serial], dtype=object)


def _patients_frame(spec, n, female, birth_year, diag, cancer, rng) -> pd.DataFrame:
    consent_commercial = rng.random(n) < 0.3
    consent_date = np.minimum(diag + rng.integers(0, 30, n), CENSOR)
    withdrawn = np.where(
        rng.random(n) < 0.003, np.minimum(consent_date + rng.integers(30, 700, n), CENSOR), np.nan
    )
    department = np.array(
        [
            cat.DEPARTMENTS[cat.CANCER_NAMES[c]] if spec.tier != "other" else cat.GENERAL_DEPARTMENT
            for c in cancer
        ],
        dtype=object,
    )
    birth_doy = rng.integers(0, 365, n)
    ids = rng.integers(0, 32, size=(n, 12))
    alphabet = np.array(list("0123456789ABCDEFGHJKMNPQRSTVWXYZ"))
    registry_id = np.array(["R" + "".join(row) for row in alphabet[ids]], dtype=object)
    return pd.DataFrame(
        {
            "pidx": np.arange(n),
            "patient_no": _patient_numbers(spec, n, diag, rng),
            "registry_id": registry_id,
            "sex": np.where(female, "F", "M"),
            "birth_year": birth_year,
            "birth_doy": birth_doy,
            "department": department,
            "consent_scope": np.where(consent_commercial, "commercial", "academic"),
            "consent_date": consent_date,
            "withdrawn_date": withdrawn,
        }
    )


def _diagnoses_frame(spec, n, diag, icd, stage, stage_system, ecog, cancer, rng) -> pd.DataFrame:
    h = spec.habits
    biomarkers = np.full(n, "", dtype=object)
    if h["records_biomarkers"]:
        for ci, name in enumerate(cat.CANCER_NAMES):
            markers = cat.CANCERS[name]["biomarkers"]
            idx = np.nonzero(cancer == ci)[0]
            if not markers or not len(idx):
                continue
            parts = []
            for marker, share in markers.items():
                positive = rng.random(len(idx)) < share
                parts.append(np.where(positive, f"{marker}+", f"{marker}-"))
            biomarkers[idx] = ["; ".join(p) for p in zip(*parts, strict=True)]
    tnm = h["records_tnm"]
    t = np.where(tnm, rng.choice(["T2", "T3", "T4"], n), "")
    nn = np.where(tnm, rng.choice(["N0", "N1", "N2"], n), "")
    mm = np.where(tnm, np.where([s.startswith("IV") for s in stage], "M1", "M0"), "")
    liver = stage_system == "BCLC"
    t[liver], nn[liver], mm[liver] = "", "", ""
    return pd.DataFrame(
        {
            "pidx": np.arange(n),
            "diagnosis_date": diag,
            "cancer_code": icd,
            "cancer_word": _words(spec, "condition", icd, rng),
            "stage_system": stage_system,
            "stage_group": stage,
            "t": t,
            "n": nn,
            "m": mm,
            "ecog": np.where(h["records_ecog"], ecog, np.nan),
            "biomarkers": biomarkers,
        }
    )


def _terms_used(cohort: SiteCohort) -> pd.DataFrame:
    """Every local word this site's cohort uses, with the concept it means."""
    vocab = cat.vocabulary()["by_code"]
    pairs = [
        ("condition", cohort.diagnoses["cancer_word"], cohort.diagnoses["cancer_code"]),
        ("regimen", cohort.lines["regimen_word"], cohort.lines["regimen_code"]),
        ("drug", cohort.drugs["drug_word"], cohort.drugs["drug_code"]),
        ("adverse_event", cohort.adverse_events["term_word"], cohort.adverse_events["term_code"]),
        ("lab", cohort.labs["test_word"], cohort.labs["test_code"]),
        ("unit", cohort.labs["unit_word"], cohort.labs["canonical_unit"]),
    ]
    frames = []
    for domain, words, codes in pairs:
        frame = pd.DataFrame({"text": words.to_numpy(), "code": codes.to_numpy()})
        frame = frame.groupby(["text", "code"], sort=True).size().reset_index(name="frequency")
        frame["domain"] = domain
        frames.append(frame)
    terms = pd.concat(frames, ignore_index=True)
    # A unit word's meaning is the unit it was written in, not the canonical unit.
    unit_truth = {word: _unit_code(word) for word in terms.loc[terms["domain"] == "unit", "text"]}
    is_unit = terms["domain"] == "unit"
    terms.loc[is_unit, "code"] = terms.loc[is_unit, "text"].map(unit_truth)
    terms = terms.groupby(["domain", "text", "code"], as_index=False)["frequency"].sum()
    terms["vocabulary"] = [vocab[c]["vocabulary"] for c in terms["code"]]
    return terms


_UNIT_CODES = {
    "10^9/L": "10*9/L",
    "x10⁹/L": "10*9/L",
    "×10^9/L": "10*9/L",
    "G/L": "10*9/L",
    "10*9/L": "10*9/L",
    "10^3/uL": "10*3/uL",
    "/mm3": "/mm3",
    "g/L": "g/L",
    "g/l": "g/L",
    "g/dL": "g/dL",
    "U/L": "U/L",
    "IU/L": "U/L",
    "u/l": "U/L",
    "umol/L": "umol/L",
    "µmol/L": "umol/L",
    "μmol/L": "umol/L",
    "mg/dL": "mg/dL",
}


def _unit_code(word: str) -> str:
    return _UNIT_CODES[word]


def biomarkers_json(text: str) -> str:
    return json.dumps(parse_biomarkers(text), ensure_ascii=False)
