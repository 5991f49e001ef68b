"""Sites, departments, people and their roles."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from registry.access import is_registry_admin
from registry.audit import audited_save
from registry.errors import ErrorCollector, NotPermitted, ValidationFailed
from registry.models import Department, Membership, Role, Site
from registry.models.organisation import SITE_ROLES


def site_upsert(
    *,
    code: str,
    name: str,
    province: str = "",
    tier: str = Site.Tier.TERTIARY,
    acting_user: User | None,
    reason: str = "site registered",
) -> tuple[Site, bool]:
    """Create the site, or bring an existing one's name/province/tier up to date.

    Returns (site, created). Running it twice with the same values changes nothing.
    """
    errors = ErrorCollector()
    code = (code or "").strip()
    if not code:
        errors.add("code", "A site code is required.")
    if not (name or "").strip():
        errors.add("name", "A site name is required.")
    if tier not in Site.Tier.values:
        errors.add("tier", f"Unknown tier {tier!r}; use one of {', '.join(Site.Tier.values)}.")
    errors.raise_if_any()
    with transaction.atomic():
        site = Site.objects.select_for_update().filter(code=code).first()
        created = site is None
        if created:
            site = Site(code=code)
        wanted = {"name": name.strip(), "province": province.strip(), "tier": tier}
        if created or any(getattr(site, k) != v for k, v in wanted.items()):
            for key, value in wanted.items():
                setattr(site, key, value)
            audited_save(site, acting_user=acting_user, reason=reason)
    return site, created


def department_get_or_create(*, site: Site, name: str, acting_user: User | None) -> Department:
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("A department name is required.", field="department")
    with transaction.atomic():
        department = Department.objects.filter(site=site, name=name).first()
        if department is None:
            department = audited_save(
                Department(site=site, name=name), acting_user=acting_user,
                reason="department registered",
            )
    return department


def user_add(
    *,
    username: str,
    role: str,
    site_codes: Sequence[str] = (),
    email: str = "",
    password: str | None = None,
    acting_user: User | None,
) -> tuple[User, list[Membership]]:
    """Create the user if absent and grant `role` (at each site for site roles). Idempotent.

    A site role needs at least one site; a registry-wide role takes none. Unknown site codes
    and a password the password validators refuse (AUTH_PASSWORD_VALIDATORS) are refused
    before anything is written.
    """
    errors = ErrorCollector()
    username = (username or "").strip()
    if not username:
        errors.add("username", "A username is required.")
    if role not in Role.values:
        errors.add("role", f"Unknown role {role!r}; use one of {', '.join(Role.values)}.")
    codes = [c.strip() for c in site_codes if c.strip()]
    sites = {s.code: s for s in Site.objects.filter(code__in=codes)}
    unknown = [c for c in codes if c not in sites]
    if unknown:
        errors.add("site", f"Unknown site code(s): {', '.join(unknown)}.")
    if role in SITE_ROLES and not codes:
        errors.add("site", f"The role {role} works at a site: give at least one --site.")
    if role in Role.values and role not in SITE_ROLES and codes:
        errors.add("site", f"The role {role} is registry-wide and takes no site.")
    if password:
        candidate = User.objects.filter(username=username).first() or User(
            username=username, email=email)
        try:
            validate_password(password, user=candidate)
        except ValidationError as exc:
            for message in exc.messages:
                errors.add("password", message)
    errors.raise_if_any()

    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User(username=username, email=email)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
        if role == Role.ADMIN and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        memberships = []
        for site in [sites[c] for c in codes] or [None]:
            memberships.append(
                membership_grant(user=user, role=role, site=site, acting_user=acting_user)
            )
    return user, memberships


def membership_grant(
    *, user: User, role: str, site: Site | None, acting_user: User | None
) -> Membership:
    if (role in SITE_ROLES) != (site is not None):
        raise ValidationFailed(
            f"The role {role} {'needs' if role in SITE_ROLES else 'takes no'} site.", field="site"
        )
    with transaction.atomic():
        membership = Membership.objects.filter(user=user, role=role, site=site).first()
        if membership is None:
            membership = Membership(user=user, role=role, site=site)
        elif membership.is_active:
            return membership
        membership.is_active = True
        audited_save(membership, acting_user=acting_user, reason=f"role {role} granted")
        staff_grant_for_role(user=user, role=role)
    return membership


def staff_grant_for_role(*, user: User, role: str) -> None:
    """Let a registry admin into Django's admin, which admits staff only.

    Only the door: what the admin shows is decided by the person's roles (registry.admin).
    """
    if role == Role.ADMIN and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])


def require_site_role(user: User | None, site: Site, roles: Sequence[str]) -> None:
    """Refuse unless the user holds one of `roles` at `site` or is a registry admin."""
    if user is None:
        raise NotPermitted("An acting user is required for this write.")
    if is_registry_admin(user):
        return
    held = Membership.objects.filter(user=user, site=site, role__in=list(roles), is_active=True)
    if not held.exists():
        raise NotPermitted(
            f"{user.username} does not hold a role allowed to do this "
            f"({', '.join(roles)}) at site {site.code}."
        )
