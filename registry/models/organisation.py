"""Hospitals (sites), their departments, and who belongs where in which role."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from registry.models.history import history_records


class Role(models.TextChoices):
    CLERK = "clerk", _("Clerk")
    MONITOR = "monitor", _("Monitor")
    SITE_PI = "site_pi", _("Site PI")
    COMMITTEE = "committee", _("Committee member")
    # Records the committee's decisions (and may vote as a member).
    CHAIR = "chair", _("Committee chair")
    INVESTIGATOR = "investigator", _("Investigator")
    PARTNER = "partner", _("Partner")
    ADMIN = "admin", _("Registry admin")


# Roles that act on a site's rows need a site; the others act registry-wide.
SITE_ROLES = (Role.CLERK, Role.MONITOR, Role.SITE_PI)
# Who enters a site's records (forms, extracts, the words they use); who reviews them (verify,
# lock, queries, the meaning of the site's words).
DATA_ENTRY_ROLES = (Role.CLERK, Role.MONITOR)
REVIEW_ROLES = (Role.MONITOR,)


class Site(models.Model):
    class Tier(models.TextChoices):
        TERTIARY = "tertiary", _("Tertiary (grade III)")
        SECONDARY = "secondary", _("Secondary (grade II)")
        PRIMARY = "primary", _("Primary (grade I)")
        OTHER = "other", _("Other")

    code = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    province = models.CharField(max_length=64, blank=True)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.TERTIARY)
    is_active = models.BooleanField(default=True)
    # Mapping policy: exact, synonym and learned suggestions at or above this score are
    # approved without review; empty means every new word waits for a person.
    auto_approve_min_score = models.FloatField(null=True, blank=True, default=0.95)
    # Days an uploaded extract is kept after its import ended (0: deleted at once).
    keep_uploads_days = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    history = history_records()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=~Q(code=""), name="site_code_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Department(models.Model):
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="departments")
    name = models.CharField(max_length=200)

    history = history_records()

    class Meta:
        ordering = ["site", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "name"], name="department_unique_per_site"),
        ]

    def __str__(self) -> str:
        return f"{self.site.code} / {self.name}"


class Membership(models.Model):
    """A person's role, at one site for site roles, registry-wide for the others."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    site = models.ForeignKey(
        Site, on_delete=models.PROTECT, null=True, blank=True, related_name="memberships"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = history_records()

    class Meta:
        ordering = ["user", "role", "site"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "role", "site"], name="membership_unique_role_site"
            ),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=Q(site__isnull=True),
                name="membership_unique_registry_role",
            ),
            models.CheckConstraint(
                condition=Q(role__in=[r.value for r in SITE_ROLES], site__isnull=False)
                | (~Q(role__in=[r.value for r in SITE_ROLES]) & Q(site__isnull=True)),
                name="membership_site_matches_role",
            ),
        ]
        indexes = [models.Index(fields=["user", "is_active"], name="membership_user_idx")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} {self.site.code if self.site else '(registry)'}"
