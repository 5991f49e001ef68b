"""The embedded demo: a few sites, one login per role, and a small cohort entered through the
same services a clerk's form uses (so every demo row passes the registry's own checks)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction

from registry.models import DrugAdministration, Patient, Role, Site
from registry.services import clinical
from registry.services.organisation import department_get_or_create, site_upsert, user_add
from registry.services.terminology import starter_vocabulary_load

DEMO_PASSWORD = "registry-demo"  # noqa: S105 - printed for the local demo only

DEMO_SITES = [
    ("DEMO-A", "Demo Provincial Cancer Hospital (示范省肿瘤医院)", "Zhejiang", "tertiary"),
    ("DEMO-B", "Demo City People's Hospital (示范市人民医院)", "Sichuan", "secondary"),
    ("DEMO-C", "Demo University Hospital (示范大学附属医院)", "Guangdong", "tertiary"),
]

DEMO_USERS = [
    ("clerk_a", Role.CLERK, ["DEMO-A"]),
    ("clerk_b", Role.CLERK, ["DEMO-B"]),
    ("monitor", Role.MONITOR, ["DEMO-A", "DEMO-B", "DEMO-C"]),
    ("pi_a", Role.SITE_PI, ["DEMO-A"]),
    ("committee", Role.COMMITTEE, []),
    ("investigator", Role.INVESTIGATOR, []),
    ("partner", Role.PARTNER, []),
    ("admin", Role.ADMIN, []),
]

# Each site writes the same things its own way.
DIALECTS = {
    "DEMO-A": {"cancer": "肺癌", "drugs": ["顺铂", "培美曲塞"], "antiemetic": "昂丹司琼",
               "anc": "中性粒细胞绝对值", "unit": "10^9/L", "nausea": "恶心"},
    "DEMO-B": {"cancer": "C34", "drugs": ["DDP", "PEM"], "antiemetic": "ondansetron",
               "anc": "ANC", "unit": "/mm3", "nausea": "Nausea"},
    "DEMO-C": {"cancer": "lung cancer", "drugs": ["Cisplatin Inj.", "Alimta"],
               "antiemetic": "枢复宁", "anc": "NEUT#", "unit": "G/L", "nausea": "恶心反应"},
}


@dataclass
class DemoLogin:
    username: str
    role: str
    sites: list[str]


def demo_setup(*, patients_per_site: int = 8, seed: int = 7) -> list[DemoLogin]:
    """Create (or bring up to date) the demo sites, logins and cohort. Safe to run again."""
    starter_vocabulary_load(acting_user=None)
    for code, name, province, tier in DEMO_SITES:
        site, _ = site_upsert(code=code, name=name, province=province, tier=tier,
                              acting_user=None, reason="demo setup")
        department_get_or_create(site=site, name="Medical Oncology (肿瘤内科)", acting_user=None)
    logins = []
    for username, role, sites in DEMO_USERS:
        user_add(username=username, role=role, site_codes=sites, password=DEMO_PASSWORD,
                 acting_user=None)
        logins.append(DemoLogin(username, role.label, sites))
    admin = User.objects.get(username="admin")
    rng = random.Random(seed)
    for code, *_ in DEMO_SITES:
        site = Site.objects.get(code=code)
        existing = Patient.objects.filter(site=site).count()
        for index in range(existing, patients_per_site):
            _demo_patient(site=site, number=f"{code}-{index:05d}", rng=rng, acting_user=admin)
    return logins


@transaction.atomic
def _demo_patient(*, site: Site, number: str, rng: random.Random, acting_user: User) -> None:
    words = DIALECTS[site.code]
    department = site.departments.first()
    patient = clinical.patient_register(
        site=site, patient_no=number, sex=rng.choice("MF"), birth_year=rng.randint(1945, 1985),
        department=department, acting_user=acting_user, reason="demo cohort",
    )
    diagnosed = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 400))
    clinical.diagnosis_record(
        patient=patient, diagnosis_date=diagnosed, cancer=words["cancer"],
        stage_system="AJCC8", stage_group=rng.choice(["IIIB", "IVA", "IVB"]),
        ecog=rng.randint(0, 2), acting_user=acting_user, reason="demo cohort",
    )
    start = diagnosed + dt.timedelta(days=rng.randint(7, 30))
    line = clinical.treatment_line_record(
        patient=patient, line_no=1, start_date=start, regimen="PP", intent="palliative",
        acting_user=acting_user, reason="demo cohort",
    )
    for cycle_no in (1, 2):
        cycle_start = start + dt.timedelta(days=21 * (cycle_no - 1))
        cycle = clinical.cycle_record(
            line=line, cycle_no=cycle_no, start_date=cycle_start, length_days=21,
            acting_user=acting_user, reason="demo cohort",
        )
        for drug, dose in zip(words["drugs"], ("75", "500"), strict=True):
            clinical.drug_administration_record(
                cycle=cycle, drug=drug, dose=dose, dose_unit="mg/m2", route="iv",
                acting_user=acting_user, reason="demo cohort",
            )
        clinical.drug_administration_record(
            cycle=cycle, drug=words["antiemetic"], dose="8", dose_unit="mg", route="iv",
            purpose=DrugAdministration.Purpose.ANTIEMETIC, acting_user=acting_user,
            reason="demo cohort",
        )
        anc = round(rng.uniform(0.3, 4.0), 1)
        value = str(int(anc * 1000)) if words["unit"] == "/mm3" else str(anc)
        clinical.lab_result_record(
            patient=patient, test=words["anc"], collected_date=cycle_start + dt.timedelta(days=10),
            value=value, unit=words["unit"], cycle=cycle, acting_user=acting_user,
            reason="demo cohort",
        )
        if rng.random() < 0.4:
            clinical.adverse_event_record(
                patient=patient, term=words["nausea"], grade=rng.randint(1, 3),
                onset_date=cycle_start + dt.timedelta(days=1), cycle=cycle,
                acting_user=acting_user, reason="demo cohort",
            )
    end_of_cycles = start + dt.timedelta(days=42)
    clinical.followup_record(
        patient=patient, followup_date=end_of_cycles + dt.timedelta(days=30),
        vital_status="alive", progression=rng.random() < 0.3, acting_user=acting_user,
        reason="demo cohort",
    )
