"""The Django admin: scoped to the user's sites everywhere (history included), clinical records
read-only, reference data changed by the registry admin only and with a reason.

The site monitors here are made staff and given every Django permission of the registry (the
setup a scoped admin is written for): roles, not those permissions, must decide what they get.
Everything goes over HTTP through Django's test client on PostgreSQL.
"""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin as django_admin
from django.contrib.auth.models import Permission, User
from django.forms import MultiWidget, modelform_factory
from django.test import RequestFactory
from django_otp.plugins.otp_totp.models import TOTPDevice
from simple_history.utils import get_history_model_for_model

from registry import access
from registry.admin import CHANGE_REASON_MAX_LENGTH, DELETED_IN_ADMIN, ReasonForm
from registry.audit import audited_save
from registry.models import (
    DERIVED_MODELS,
    ApiToken,
    Concept,
    ConceptSynonym,
    DataQuery,
    Department,
    Diagnosis,
    ImportBatch,
    Membership,
    Patient,
    RecordStatus,
    Role,
    Site,
    SiteTerm,
    UnitConversion,
    Vocabulary,
)
from registry.services import workflow
from registry.services.organisation import department_get_or_create, membership_grant, user_add
from tests.conftest import persona_password
from tests.registry import factories

pytestmark = [pytest.mark.postgres]

# API tokens are the registry admin's alone, with pages of their own (test_api_admin.py).
REGISTRY_ADMIN_ONLY_MODELS = [ApiToken]
REGISTRY_MODELS = [m for m in django_admin.site._registry if m._meta.app_label == "registry"
                   and m not in REGISTRY_ADMIN_ONLY_MODELS]
ADMIN_MODELS = [*REGISTRY_MODELS, User]
# The committee's models: the registry admin's alone, tested in tests/research/test_pages.py.
RESEARCH_MODELS = [m for m in django_admin.site._registry if m._meta.app_label == "research"]
LOGIN_DEFENCE_MODELS = [AccessAttempt, AccessLog, AccessFailureLog, TOTPDevice]
# Registry-wide reference data: the registry admin changes it, with a reason.
EDITABLE = {Site, Department, Membership, Vocabulary, Concept, UnitConversion}
# Targets that other rows still point to (site A's patients, the test vocabulary's concepts):
# the admin shows what stands in the way of deleting them, and deletes nothing.
PROTECTED = {Site, Vocabulary}
PERSONAS = ["ada", "mona", "mel", "alice"]
STRONG_PASSWORD = "Granite-Lantern-57"


def _staff_with_every_registry_permission(user: User) -> User:
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="registry"))
    return user


@pytest.fixture
def mona_staff(mona):
    """Monitor of site A, made staff with every Django permission of the registry."""
    return _staff_with_every_registry_permission(mona)


@pytest.fixture
def mel(site_b):
    """Monitor of site B, made staff with every Django permission of the registry."""
    user = user_add(username="mel", role=Role.MONITOR, site_codes=[site_b.code],
                    password=persona_password("mel"), acting_user=None)[0]
    return _staff_with_every_registry_permission(user)


@pytest.fixture
def world(vocabulary, site_a, site_b, alice, bob, ada, mona_staff, mel):
    """A full record at each site, and one row of site A (or of the registry) per model."""
    patient_a = factories.full_record(site_a, alice)
    factories.full_record(site_b, bob)
    department_get_or_create(site=site_b, name="Ward B", acting_user=bob)
    voc = audited_save(Vocabulary(code="TESTVOC", name="Test vocabulary"),
                       acting_user=ada, reason="test vocabulary")
    unit_from, unit_to, lab = (
        audited_save(Concept(vocabulary=voc, code=code, domain=domain, name_en=code),
                     acting_user=ada, reason="test concept")
        for code, domain in [("u1", "unit"), ("u2", "unit"), ("lab1", "lab")]
    )
    targets = {
        Site: site_a,
        Department: department_get_or_create(site=site_a, name="Day ward", acting_user=ada),
        Membership: Membership.objects.get(user=alice, site=site_a),
        Vocabulary: voc,
        Concept: lab,
        UnitConversion: audited_save(
            UnitConversion(lab=lab, from_unit=unit_from, to_unit=unit_to, factor=2.0),
            acting_user=ada, reason="test conversion"),
        User: alice,
    }
    for model in REGISTRY_MODELS:
        if model not in targets:
            targets[model] = access.scope(model.objects.all(), alice).order_by("pk").first()
    assert all(targets.values()), targets
    return {"patient_a": patient_a, "targets": targets, "units": (unit_from, unit_to)}


def _url(model, view, *args):
    opts = model._meta
    base = f"/admin/{opts.app_label}/{opts.model_name}/"
    return base + "".join(f"{a}/" for a in args) if view != "changelist" else base


def _snapshot(model):
    rows = list(model.objects.order_by("pk").values())
    history = (get_history_model_for_model(model).objects.count()
               if model is not User else None)
    return rows, history


def _form_data(model, obj) -> dict:
    """What the model's full form would post for `obj` (every editable field, as a browser)."""
    if model is User:  # the admin's own user form (its dates are split in two inputs)
        request = RequestFactory().get("/")
        request.user = User.objects.get(username="ada")
        form = django_admin.site._registry[User].get_form(request, obj, change=True)(instance=obj)
    else:
        form = modelform_factory(model, form=ReasonForm, fields="__all__")(instance=obj)
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field.widget, MultiWidget):
            for i, part in enumerate(field.widget.decompress(value)):
                data[f"{name}_{i}"] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list):
            data[name] = value
        elif value is None:
            data[name] = ""
        else:
            data[name] = value if isinstance(value, str) else str(value)
    if model is Concept:
        data.update({"synonyms-TOTAL_FORMS": "0", "synonyms-INITIAL_FORMS": "0",
                     "synonyms-MIN_NUM_FORMS": "0", "synonyms-MAX_NUM_FORMS": "1000"})
    return data


def _changed(model, obj, world) -> dict:
    """A change of `obj` in its full form: for clinical rows, moved to site B and set to draft."""
    data = _form_data(model, obj)
    data["change_reason"] = "corrected in the admin"
    if "site" in data and model is not Membership:
        data["site"] = str(Site.objects.get(code="SITE-B").pk)
    if "status" in data and model is not ImportBatch:
        data["status"] = RecordStatus.DRAFT
    field = {Site: "name", Department: "name", Vocabulary: "name", Concept: "name_en",
             UnitConversion: "factor", Membership: "is_active", User: "first_name"}.get(model)
    if field == "is_active":
        data.pop("is_active", None)
    elif field == "factor":
        data["factor"] = "3.5"
    elif field:
        data[field] = "Changed in admin"
    return data


def _added(model, world) -> dict:
    site_a = Site.objects.get(code="SITE-A")
    unit_from, unit_to = world["units"]
    extra = {
        Site: {"code": "SITE-N", "name": "New Hospital", "tier": "tertiary", "is_active": "on"},
        Department: {"site": str(site_a.pk), "name": "Night ward"},
        Membership: {"user": str(User.objects.get(username="bob").pk), "role": Role.MONITOR,
                     "site": str(site_a.pk), "is_active": "on"},
        Vocabulary: {"code": "NEWVOC", "name": "New vocabulary"},
        Concept: {"vocabulary": str(Vocabulary.objects.get(code="TESTVOC").pk), "code": "n1",
                  "domain": "unit", "name_en": "new unit", "attributes": "{}",
                  "is_active": "on"},
        UnitConversion: {"from_unit": str(unit_to.pk), "to_unit": str(unit_from.pk),
                         "factor": "0.5"},
        User: {"username": "newcomer", "usable_password": "true",
               "password1": STRONG_PASSWORD, "password2": STRONG_PASSWORD},
    }.get(model)
    if extra is None:  # a clinical kind: the full form of an existing row, as a new one
        data = _changed(model, world["targets"][model], world)
    else:
        data = {**(_form_data(model, None) if model is not User else {}), **extra}
    data["change_reason"] = "added in the admin"
    return data


def _expected(persona: str, model) -> dict[str, int]:
    """The status of each step for this persona and model (the target is site A's row)."""
    if persona == "alice":  # not staff: the admin sends her to its login
        return dict.fromkeys(STEPS, 302)
    if persona == "ada":
        editable = model in EDITABLE or model is User
        may_delete = model in EDITABLE
        return {
            "changelist": 200, "add": 200 if editable else 403,
            "add_post": 302 if editable else 403,
            "change": 200, "change_post": 302 if editable else 403,
            "history": 200, "version": 200, "version_post": 403,
            "delete": 200 if may_delete else 403,
            "delete_post": (200 if model in PROTECTED else 302) if may_delete else 403,
        }
    if model is User:
        return dict.fromkeys(STEPS, 403)
    visible = persona == "mona" or access.site_lookup(model) is None
    seen, refused = (200, 403) if visible else (404, 404)
    return {
        "changelist": 200, "add": 403, "add_post": 403, "change": seen,
        "change_post": refused, "history": seen, "version": seen, "version_post": refused,
        "delete": refused, "delete_post": refused,
    }


STEPS = ["changelist", "add", "add_post", "change", "change_post", "history", "version",
         "version_post", "delete", "delete_post"]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_admin_matrix(client, world, model, persona):
    """Every admin page of every model, for each persona: the status, and refused POSTs change
    nothing; the registry admin's accepted POSTs write with a reason."""
    user = User.objects.get(username=persona)
    target = world["targets"][model]
    expected = _expected(persona, model)
    client.force_login(user)
    version_id = None
    if model is not User:
        version_id = (get_history_model_for_model(model).objects.filter(id=target.pk)
                      .latest("history_date", "history_id").history_id)
    change_data = _changed(model, target, world)
    add_data = _added(model, world)
    problems = []

    def writes(step):
        return persona == "ada" and expected[step] == 302

    def check(step, response, before=None):
        if response.status_code != expected[step]:
            problems.append(f"{step}: {response.status_code}, expected {expected[step]}")
        if before is not None and not writes(step) and _snapshot(model) != before:
            problems.append(f"{step}: the database changed")

    listing = client.get(_url(model, "changelist"))
    check("changelist", listing)
    if listing.status_code == 200:
        listed = listing.context["cl"].queryset.filter(pk=target.pk).exists()
        should_list = expected["change"] == 200
        if listed != should_list:
            problems.append(f"changelist lists the target: {listed}, expected {should_list}")

    check("add", client.get(_url(model, "add", "add")))
    before = _snapshot(model)
    response = client.post(_url(model, "add", "add"), add_data)
    check("add_post", response, before)
    if writes("add_post"):
        added = model.objects.exclude(pk__in=[r["id"] for r in before[0]])
        if added.count() != 1:
            problems.append(f"add_post: {added.count()} rows added, expected 1")
        elif model is not User:
            row = added.get().history.latest()
            if (row.history_change_reason, row.history_user) != ("added in the admin", user):
                problems.append(f"add_post: audit row {row.history_change_reason!r} "
                                f"by {row.history_user}")

    check("change", client.get(_url(model, "change", target.pk, "change")))
    before = _snapshot(model)
    check("change_post", client.post(_url(model, "change", target.pk, "change"), change_data),
          before)
    if writes("change_post") and model is not User:
        row = model.objects.get(pk=target.pk).history.latest()
        if (row.history_change_reason, row.history_user) != ("corrected in the admin", user):
            problems.append(f"change_post: audit row {row.history_change_reason!r} "
                            f"by {row.history_user}")
        if _snapshot(model) == before:
            problems.append("change_post: nothing changed")

    check("history", client.get(_url(model, "history", target.pk, "history")))
    if version_id is not None:
        version_url = _url(model, "version", target.pk, "history", version_id)
        check("version", client.get(version_url))
        before = _snapshot(model)
        check("version_post", client.post(version_url, change_data), before)

    check("delete", client.get(_url(model, "delete", target.pk, "delete")))
    before = _snapshot(model)
    check("delete_post", client.post(_url(model, "delete", target.pk, "delete"),
                                     {"post": "yes"}), before)
    if writes("delete_post"):
        if model.objects.filter(pk=target.pk).exists():
            problems.append("delete_post: the row is still there")
        else:
            row = get_history_model_for_model(model).objects.filter(id=target.pk).latest(
                "history_date", "history_id")
            if (row.history_type, row.history_change_reason, row.history_user) != (
                    "-", DELETED_IN_ADMIN, user):
                problems.append(f"delete_post: audit row {row.history_type} "
                                f"{row.history_change_reason!r} by {row.history_user}")
    assert not problems, "\n".join(problems)


# The findings, one by one.

def test_history_of_another_sites_record_is_not_found_and_cannot_be_reverted(client, world, mel):
    patient = world["patient_a"]
    history = get_history_model_for_model(Patient)
    version = history.objects.filter(id=patient.pk).earliest("history_date")
    before = list(history.objects.filter(id=patient.pk).values())
    client.force_login(mel)
    assert client.get(f"/admin/registry/patient/{patient.pk}/history/").status_code == 404
    page = f"/admin/registry/patient/{patient.pk}/history/{version.history_id}/"
    assert client.get(page).status_code == 404
    data = _changed(Patient, patient, world)
    assert client.post(page, data).status_code == 404
    assert list(history.objects.filter(id=patient.pk).values()) == before
    assert Patient.objects.get(pk=patient.pk).site.code == "SITE-A"


@pytest.mark.parametrize("model", REGISTRY_MODELS, ids=lambda m: m.__name__)
def test_scope_history_keeps_each_site_to_its_own_past(world, model, mel, mona_staff, ada):
    history = get_history_model_for_model(model).objects.all()
    lookup = access.site_lookup(model)
    if lookup is None:  # registry-wide reference data: one history for everybody
        assert access.scope_history(history, mel).count() == history.count()
        return
    site_a, site_b = Site.objects.get(code="SITE-A"), Site.objects.get(code="SITE-B")
    seen_by_b = set(access.scope_history(history, mel).values_list(lookup, flat=True))
    seen_by_a = set(access.scope_history(history, mona_staff).values_list(lookup, flat=True))
    assert seen_by_a == {site_a.pk}
    assert site_b.pk in seen_by_b
    assert site_a.pk not in seen_by_b
    assert access.scope_history(history, ada).count() == history.count()


def test_history_of_a_deleted_row_of_another_site_is_not_found(client, world, mel, ada):
    department = world["targets"][Department]
    pk = department.pk
    department._history_user, department._change_reason = ada, "closed"
    department.delete()
    client.force_login(mel)
    assert client.get(f"/admin/registry/department/{pk}/history/").status_code == 404


def test_revert_of_an_own_sites_record_is_refused(client, world, mona_staff):
    patient = world["patient_a"]
    version = patient.history.earliest("history_date")
    before = list(Patient.history.filter(id=patient.pk).values())
    client.force_login(mona_staff)
    page = f"/admin/registry/patient/{patient.pk}/history/{version.history_id}/"
    shown = client.get(page)
    assert shown.status_code == 200
    assert patient.registry_id in shown.text
    assert 'name="_save"' not in shown.text  # no revert button
    assert client.post(page, _changed(Patient, patient, world)).status_code == 403
    assert list(Patient.history.filter(id=patient.pk).values()) == before


def test_change_form_offers_only_the_users_sites(world, mel, site_b):
    """The FK choices of every admin form are the user's own sites' rows."""
    request = RequestFactory().get("/")
    request.user = mel
    for model in (Patient, Department, Diagnosis, SiteTerm, DataQuery, ImportBatch):
        model_admin = django_admin.site._registry[model]
        for field in model._meta.fields:
            if not field.is_relation or field.related_model not in (
                    Site, Patient, Department, ImportBatch, SiteTerm):
                continue
            formfield = model_admin.formfield_for_foreignkey(field, request)
            lookup = access.site_lookup(field.related_model)
            offered = set(formfield.queryset.values_list(lookup, flat=True))
            assert offered == {site_b.pk}, (model.__name__, field.name, offered)


def test_a_patient_cannot_be_moved_to_another_site(client, world, mona_staff, site_b):
    patient = world["patient_a"]
    client.force_login(mona_staff)
    data = _changed(Patient, patient, world)
    assert data["site"] == str(site_b.pk)
    response = client.post(f"/admin/registry/patient/{patient.pk}/change/", data)
    assert response.status_code == 403
    assert Patient.objects.get(pk=patient.pk).site.code == "SITE-A"


@pytest.mark.parametrize("persona", ["ada", "mona"])
def test_a_locked_record_is_not_edited_in_the_admin(client, world, mona_staff, persona):
    diagnosis = Diagnosis.objects.get(patient=world["patient_a"])
    alice = User.objects.get(username="alice")
    workflow.record_submit(diagnosis, acting_user=alice)
    workflow.record_verify(diagnosis, acting_user=mona_staff, password=persona_password("mona"))
    workflow.record_lock(diagnosis, acting_user=mona_staff, password=persona_password("mona"))
    locked = Diagnosis.objects.get(pk=diagnosis.pk)
    assert locked.status == RecordStatus.LOCKED
    client.force_login(User.objects.get(username=persona))
    data = _changed(Diagnosis, locked, world)
    data["stage_group"] = "I"
    response = client.post(f"/admin/registry/diagnosis/{locked.pk}/change/", data)
    assert response.status_code == 403
    after = Diagnosis.objects.get(pk=locked.pk)
    assert (after.status, after.version, after.stage_group) == (
        RecordStatus.LOCKED, locked.version, locked.stage_group)


def test_the_registry_admin_sees_every_model(client, world, ada):
    client.force_login(ada)
    index = client.get("/admin/")
    assert index.status_code == 200
    assert "You don’t have permission to view or edit anything" not in index.text
    shown = {m["object_name"] for app in index.context["app_list"] for m in app["models"]}
    assert shown == {m.__name__ for m in [*ADMIN_MODELS, *LOGIN_DEFENCE_MODELS,
                                          *REGISTRY_ADMIN_ONLY_MODELS, *RESEARCH_MODELS]}


def test_django_permissions_alone_open_nothing(client, world, carol):
    """Staff with every Django permission but no site role: roles decide, so nothing is shown."""
    _staff_with_every_registry_permission(carol)
    client.force_login(carol)
    assert client.get("/admin/registry/patient/").status_code == 403
    target = world["patient_a"]
    assert client.get(f"/admin/registry/patient/{target.pk}/change/").status_code == 404


def test_a_reason_longer_than_the_audit_column_is_refused_at_the_field(client, world, ada):
    site = world["targets"][Site]
    client.force_login(ada)
    data = _changed(Site, site, world)
    data["change_reason"] = "x" * (CHANGE_REASON_MAX_LENGTH + 37)
    response = client.post(f"/admin/registry/site/{site.pk}/change/", data)
    assert response.status_code == 200
    assert "change_reason" in response.context["adminform"].form.errors
    assert Site.objects.get(pk=site.pk).name == site.name


def test_a_membership_that_breaks_the_role_rule_is_refused_at_the_form(client, world, ada, ivan):
    client.force_login(ada)
    before = Membership.objects.count()
    response = client.post("/admin/registry/membership/add/", {
        "user": ivan.pk, "role": Role.CLERK, "site": "", "is_active": "on",
        "change_reason": "clerk without a site"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Membership.objects.count() == before


def test_malformed_ids_are_not_found(client, world, ada):
    client.force_login(ada)
    # A NUL character in the path is refused before the admin sees it (RefuseNulMiddleware).
    assert client.get("/admin/registry/patient/1%00/history/").status_code == 400
    for url in ["/admin/registry/patient/abc/change/", "/admin/registry/patient/abc/history/",
                f"/admin/registry/patient/{world['patient_a'].pk}/history/abc/",
                "/admin/registry/patient/abc/delete/", "/admin/auth/user/abc/change/"]:
        assert client.get(url).status_code == 404, url


def test_the_registry_admin_cannot_grant_superuser_or_edit_a_superuser(client, world, ada):
    root = User.objects.create_superuser("root", password=STRONG_PASSWORD)
    client.force_login(ada)
    alice = User.objects.get(username="alice")
    data = _changed(User, alice, world)
    data["is_superuser"] = "on"
    assert client.post(f"/admin/auth/user/{alice.pk}/change/", data).status_code == 302
    assert User.objects.get(pk=alice.pk).is_superuser is False
    root_data = _changed(User, root, world)
    assert client.post(f"/admin/auth/user/{root.pk}/change/", root_data).status_code == 403
    assert User.objects.get(pk=root.pk).first_name == ""


def test_a_registry_admin_granted_in_the_admin_can_work_there(client, world, ada, carol):
    client.force_login(ada)
    response = client.post("/admin/registry/membership/add/", {
        "user": carol.pk, "role": Role.ADMIN, "site": "", "is_active": "on",
        "change_reason": "second registry admin"})
    assert response.status_code == 302
    granted = Membership.objects.get(user=carol, role=Role.ADMIN)
    assert granted.history.latest().history_change_reason == "second registry admin"
    client.force_login(User.objects.get(pk=carol.pk))
    assert client.get("/admin/registry/patient/").status_code == 200


def test_a_role_granted_by_the_service_opens_the_admin_to_a_registry_admin(db, carol):
    assert not carol.is_staff
    membership_grant(user=carol, role=Role.ADMIN, site=None, acting_user=None)
    assert User.objects.get(pk=carol.pk).is_staff


def test_bulk_delete_leaves_a_reason_on_each_row(client, world, ada):
    voc = world["targets"][Vocabulary]
    spare = [audited_save(Concept(vocabulary=voc, code=f"x{i}", domain="unit", name_en="x"),
                          acting_user=ada, reason="spare") for i in range(2)]
    client.force_login(ada)
    response = client.post("/admin/registry/concept/", {
        "action": "delete_selected", "_selected_action": [c.pk for c in spare], "post": "yes"})
    assert response.status_code == 302
    assert not Concept.objects.filter(pk__in=[c.pk for c in spare]).exists()
    rows = Concept.history.filter(id__in=[c.pk for c in spare], history_type="-")
    assert sorted((r.history_change_reason, r.history_user_id) for r in rows) == [
        (DELETED_IN_ADMIN, ada.pk)] * 2


def test_admin_pages_work_in_chinese(client, world, ada, mona_staff):
    site = world["targets"][Site]
    client.force_login(ada)
    page = client.get(f"/admin/registry/site/{site.pk}/change/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert page.status_code == 200
    assert "保存" in page.text
    client.force_login(mona_staff)
    patient = world["patient_a"]
    version = patient.history.earliest("history_date")
    page = client.get(f"/admin/registry/patient/{patient.pk}/history/{version.history_id}/",
                      HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert page.status_code == 200
    assert patient.registry_id in page.text


# Hostile input: a clear refusal, never a server error, nothing written.

HOSTILE_VALUES = ["\x00", "a\x00b", "x" * 100_000, "-1", "NaN", "Infinity", "1e400",
                  "99999999999999999999999", "9999-12-31", '{"a": "\\u0000"}', ""]


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_hostile_query_parameters_are_refused_clearly(client, world, ada, model):
    client.force_login(ada)
    url = _url(model, "changelist")
    model_admin = django_admin.site._registry[model]
    filters = [f if isinstance(f, str) else f[0] for f in model_admin.list_filter]
    for name in ["q", *filters, *(f"{f}__exact" for f in filters)]:
        response = client.get(url, {name: "a\x00"})
        assert response.status_code == 400, (name, response.status_code)
    for query in ["o=abc", "o=99", "p=999999", "p=-1", "site__id__exact=abc",
                  "_to_field=password", "e=1", "q=" + "x" * 100_000, "id__gte=NaN"]:
        assert client.get(f"{url}?{query}").status_code < 500, query
    target = world["targets"][model]
    change = _url(model, "change", target.pk, "change")
    assert client.get(change, {"_changelist_filters": "a\x00"}).status_code == 400


@pytest.mark.parametrize("model", [*EDITABLE, User], ids=lambda m: m.__name__)
def test_hostile_form_values_are_refused_at_the_field(client, world, ada, model):
    """Every field of the registry admin's forms, each hostile value in turn: accepted, or
    refused with the form shown again (200) and nothing written; never a server error."""
    target = world["targets"][model]
    url = _url(model, "change", target.pk, "change")
    base = _changed(model, target, world)
    client.force_login(ada)
    for field in [f for f in base if not f.startswith("synonyms-")]:
        for value in HOSTILE_VALUES:
            before = _snapshot(model)
            response = client.post(url, {**base, field: value})
            if "\x00" in value:  # refused for the whole request (RefuseNulMiddleware)
                assert response.status_code == 400, (field, value[:20])
                assert _snapshot(model) == before, (field, value[:20])
                continue
            assert response.status_code in (200, 302), (field, value[:20])
            if response.status_code == 200:
                assert response.context["adminform"].form.errors, (field, value[:20])
                assert _snapshot(model) == before, (field, value[:20])


def test_concept_attributes_must_be_json_that_postgresql_holds(client, world, ada):
    concept = world["targets"][Concept]
    url = _url(Concept, "change", concept.pk, "change")
    base = _changed(Concept, concept, world)
    client.force_login(ada)
    for value in ['{"low": NaN}', '{"high": Infinity}', '[1e400]', '{"a\\u0000": 1}']:
        response = client.post(url, {**base, "attributes": value})
        assert response.status_code == 200, value
        assert "attributes" in response.context["adminform"].form.errors, value
        assert Concept.objects.get(pk=concept.pk).attributes == concept.attributes
    assert client.post(url, {**base, "attributes": ""}).status_code == 302
    assert Concept.objects.get(pk=concept.pk).attributes == {}


# Writes outside the test's wrapping transaction: the admin's own transaction must hold.

@pytest.mark.django_db(transaction=True)
def test_reference_edit_and_refused_revert_outside_a_test_transaction(
        client, vocabulary, site_a, ada, mona):
    _staff_with_every_registry_permission(mona)
    client.force_login(ada)
    data = _form_data(Site, site_a)
    data.update(name="Site A Cancer Centre", change_reason="renamed by the hospital")
    assert client.post(f"/admin/registry/site/{site_a.pk}/change/", data).status_code == 302
    latest = Site.history.filter(id=site_a.pk).latest("history_date", "history_id")
    assert (latest.name, latest.history_change_reason, latest.history_user) == (
        "Site A Cancer Centre", "renamed by the hospital", ada)

    concept = Concept.objects.filter(vocabulary__code="ICD10").first()
    data = _form_data(Concept, concept)
    data.update({"synonyms-TOTAL_FORMS": "1", "synonyms-0-name": "肺癌测试",
                 "synonyms-0-language": "zh",
                 "synonyms-0-concept": str(concept.pk),
                 "change_reason": "a synonym seen at site A"})
    assert client.post(f"/admin/registry/concept/{concept.pk}/change/", data).status_code == 302
    synonym = ConceptSynonym.objects.get(concept=concept, name="肺癌测试")
    assert synonym.history.latest().history_change_reason == "a synonym seen at site A"

    response = client.post("/admin/registry/department/add/", {
        "site": site_a.pk, "name": "Radiotherapy", "change_reason": "new ward opened"})
    assert response.status_code == 302
    ward = Department.objects.get(site=site_a, name="Radiotherapy")
    assert ward.history.latest().history_change_reason == "new ward opened"
    response = client.post(f"/admin/registry/department/{ward.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Department.objects.filter(pk=ward.pk).exists()
    gone = Department.history.filter(id=ward.pk).latest("history_date", "history_id")
    assert (gone.history_type, gone.history_change_reason, gone.history_user) == (
        "-", DELETED_IN_ADMIN, ada)

    client.force_login(mona)
    first = Site.history.filter(id=site_a.pk).earliest("history_date")
    page = f"/admin/registry/site/{site_a.pk}/history/{first.history_id}/"
    before = list(Site.history.filter(id=site_a.pk).values())
    assert client.post(page, _form_data(Site, first.instance)).status_code == 403
    assert list(Site.history.filter(id=site_a.pk).values()) == before
    assert Site.objects.get(pk=site_a.pk).name == "Site A Cancer Centre"


def test_every_registry_model_is_in_the_admin():
    """A new model of the registry must be registered, and so join the matrix above."""
    from django.apps import apps

    models = {m for m in apps.get_app_config("registry").get_models()
              if not m.__name__.startswith("Historical") and m not in DERIVED_MODELS}
    # ConceptSynonym is edited inline in Concept.
    assert models - set(REGISTRY_MODELS) - set(REGISTRY_ADMIN_ONLY_MODELS) == {ConceptSynonym}
    # Roles live in memberships: Django's groups (and permissions) are not offered at all.
    assert set(django_admin.site._registry) == (
        set(ADMIN_MODELS) | set(LOGIN_DEFENCE_MODELS) | set(REGISTRY_ADMIN_ONLY_MODELS)
        | set(RESEARCH_MODELS))
    # Every model of the committee is there (never its history tables).
    assert set(RESEARCH_MODELS) == {
        m for m in apps.get_app_config("research").get_models()
        if not m.__name__.startswith("Historical")}



@pytest.mark.parametrize("model", LOGIN_DEFENCE_MODELS, ids=lambda m: m.__name__)
def test_lockouts_and_devices_are_the_registry_admins_alone(client, model, ada, mona_staff):
    info = model._meta.app_label, model._meta.model_name
    changelist = "/admin/{}/{}/".format(*info)
    client.force_login(mona_staff)  # staff with a site role: no business here
    assert client.get(changelist).status_code == 403
    client.force_login(ada)
    assert client.get(changelist).status_code == 200
    assert client.get(changelist + "add/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_the_registry_admin_unlocks_a_username_and_resets_a_device(client, ada, alice):
    attempt = AccessAttempt.objects.create(
        username="alice", ip_address="10.0.0.1", user_agent="x", failures_since_start=9,
        get_data="", post_data="", http_accept="", path_info="/accounts/login/")
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    client.force_login(ada)
    for obj in (attempt, device):
        url = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/delete/"
        assert client.post(url, {"post": "yes"}).status_code == 302
    assert not AccessAttempt.objects.filter(username="alice").exists()
    assert not TOTPDevice.objects.filter(user=alice).exists()
