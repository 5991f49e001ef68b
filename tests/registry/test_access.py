"""Site scoping: for every site-owned model and every selector, nobody sees another site's rows."""

import pytest
from django.apps import apps
from django.http import Http404

from registry import access
from registry.models import DERIVED_MODELS, Patient, Site
from tests.registry import factories


@pytest.fixture
def two_sites(vocabulary, site_a, site_b, alice, bob):
    return factories.full_record(site_a, alice), factories.full_record(site_b, bob)


def _site_of(row):
    return row.pk if isinstance(row, Site) else (
        row.site_term.site_id if hasattr(row, "site_term") else row.site_id
    )


def test_every_model_with_a_site_is_scoped_by_access():
    """A new model carrying a site must join access.SITE_OWNED_MODELS (and get a selector)."""
    for model in apps.get_models():
        if model.__name__.startswith("Historical") or model._meta.app_label != "registry":
            continue
        has_site = any(f.name == "site" and f.is_relation for f in model._meta.fields)
        # Derived data-quality figures are read only through the data-quality selectors,
        # which scope them by the user's sites (tests/registry/test_quality.py).
        if model in DERIVED_MODELS:
            continue
        if has_site and model.__name__ not in {"Department", "Membership"}:
            assert model in access.SITE_OWNED_MODELS, model
            assert model in access.SELECTORS, model


@pytest.mark.parametrize("model", list(access.SELECTORS), ids=lambda m: m.__name__)
def test_clerk_of_b_sees_nothing_of_a(two_sites, model, site_a, site_b, alice, bob):
    selector = access.SELECTORS[model]
    rows_a = list(selector(alice))
    rows_b = list(selector(bob))
    assert rows_a, f"the fixture made no {model.__name__} rows for site A"
    assert rows_b, f"the fixture made no {model.__name__} rows for site B"
    assert {_site_of(r) for r in rows_a} == {site_a.pk}
    assert {_site_of(r) for r in rows_b} == {site_b.pk}


@pytest.mark.parametrize("model", list(access.SELECTORS), ids=lambda m: m.__name__)
def test_registry_wide_roles_see_no_clinical_rows_and_admin_sees_all(
    two_sites, model, site_a, site_b, carol, ivan, pat, ada
):
    selector = access.SELECTORS[model]
    for person in (carol, ivan, pat):
        assert list(selector(person)) == [], person.username
    assert {_site_of(r) for r in selector(ada)} >= {site_a.pk, site_b.pk}


def test_another_sites_patient_is_a_404(two_sites, alice, bob, ada):
    patient_a, patient_b = two_sites
    assert access.access_patient_by_registry_id(alice, patient_a.registry_id) == patient_a
    with pytest.raises(Http404):
        access.access_patient_by_registry_id(bob, patient_a.registry_id)
    with pytest.raises(Http404):
        access.access_site_by_code(bob, "SITE-A")
    assert access.access_patient_by_registry_id(ada, patient_b.registry_id) == patient_b


def test_inactive_membership_sees_nothing(two_sites, alice):
    alice.memberships.update(is_active=False)
    assert not access.patients_visible(alice).exists()


def test_scope_refuses_a_model_it_does_not_know(alice):
    with pytest.raises(TypeError):
        access.scope(apps.get_model("registry", "Concept").objects.all(), alice)


def test_admin_lists_only_the_users_sites(client, two_sites, site_b, bob):
    patient_a, patient_b = two_sites
    bob.is_staff = True
    bob.save()
    from django.contrib.auth.models import Permission

    bob.user_permissions.add(*Permission.objects.filter(codename__endswith="_patient"))
    client.force_login(bob)
    listing = client.get("/admin/registry/patient/")
    assert listing.status_code == 200
    assert patient_b.registry_id in listing.text
    assert patient_a.registry_id not in listing.text
    opened = client.get(f"/admin/registry/patient/{patient_a.pk}/change/", follow=True)
    assert patient_a.registry_id not in opened.text
    assert Patient.objects.filter(pk=patient_a.pk).exists()
