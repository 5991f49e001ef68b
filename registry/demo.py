"""The embedded demo: a synthetic multi-centre cohort (registry.synth) and one login per role."""

from __future__ import annotations

from dataclasses import dataclass

from registry.models import Patient, Role, Site
from registry.services.organisation import user_add
from registry.services.terminology import starter_vocabulary_load
from registry.synth.run import seed

DEMO_PASSWORD = "registry-demo"  # noqa: S105 - printed for the local demo only

# username, role, which of the seeded sites (by position) they work at
DEMO_USERS = [
    ("clerk_a", Role.CLERK, [0]),
    ("clerk_b", Role.CLERK, [1]),
    ("monitor", Role.MONITOR, [0, 1, 2]),
    ("pi_a", Role.SITE_PI, [0]),
    ("pi_b", Role.SITE_PI, [1]),
    # Three votes make the default quorum: two members and the chair.
    ("committee", Role.COMMITTEE, []),
    ("committee_2", Role.COMMITTEE, []),
    ("chair", Role.CHAIR, []),
    ("investigator", Role.INVESTIGATOR, []),
    ("partner", Role.PARTNER, []),
    ("admin", Role.ADMIN, []),
]


@dataclass
class DemoLogin:
    username: str
    role: str
    sites: list[str]


def demo_setup(*, patients: int = 2000, sites: int = 6, seed_value: int = 42,
               progress=lambda message: None) -> list[DemoLogin]:
    """Load the vocabulary, seed the cohort if the registry has none, create the logins.
    Safe to run again: an existing cohort and existing logins are left as they are."""
    starter_vocabulary_load(acting_user=None)
    if not Patient.objects.exists():
        seed(patients=patients, sites=sites, seed=seed_value, progress=progress)
    codes = list(Site.objects.order_by("code").values_list("code", flat=True))
    logins = []
    for username, role, positions in DEMO_USERS:
        site_codes = [codes[i] for i in positions if i < len(codes)]
        user_add(username=username, role=role, site_codes=site_codes, password=DEMO_PASSWORD,
                 acting_user=None)
        logins.append(DemoLogin(username, role.label, site_codes))
    return logins
