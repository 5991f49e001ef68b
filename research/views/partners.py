"""The partners' page (registry admin only): partner organisations, their people and each
person's API tokens, with the admin's actions: add an organisation, add a person to it, create
a token (its text shown once, on the answer to the POST) and revoke one with a reason.

Every action is a POST with its CSRF token; refused input shows the page again with the
reasons (400), a refused role is 403, an unknown or non-partner id 404.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from registry.access import is_registry_admin
from registry.api.scopes import Scope, scopes_for_user
from registry.errors import RegistryError
from registry.models.api import (
    API_TOKEN_EXPIRES_DAYS_MAX,
    API_TOKEN_EXPIRES_DAYS_MIN,
    API_TOKEN_NAME_MAX_LENGTH,
    API_TOKEN_REVOKE_REASON_MAX_LENGTH,
)
from registry.services.api_tokens import api_token_create, api_token_revoke
from research import limits as L
from research.selectors.partners import (
    access_partner_organisation,
    access_partner_person,
    access_partner_token,
    partner_organisations,
)
from research.services.partners import partner_organisation_add, partner_person_add
from research.views.common import show_errors

USERNAME_MAX_LENGTH = User._meta.get_field("username").max_length
EMAIL_MAX_LENGTH = User._meta.get_field("email").max_length


class OrganisationForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Organisation"),
                           max_length=L.ORGANISATION_NAME_MAX_LENGTH)


class PersonForm(forms.Form):
    username = forms.CharField(label=gettext_lazy("Username"), max_length=USERNAME_MAX_LENGTH,
                               validators=[UnicodeUsernameValidator()])
    email = forms.EmailField(label=gettext_lazy("Email"), max_length=EMAIL_MAX_LENGTH,
                             required=False)


class TokenForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Token name"),
                           max_length=API_TOKEN_NAME_MAX_LENGTH)
    scopes = forms.MultipleChoiceField(label=gettext_lazy("Scopes"),
                                       widget=forms.CheckboxSelectMultiple)
    expires_days = forms.IntegerField(label=gettext_lazy("Expires after (days)"),
                                      min_value=API_TOKEN_EXPIRES_DAYS_MIN,
                                      max_value=API_TOKEN_EXPIRES_DAYS_MAX, required=False)

    def __init__(self, *args, person: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only what the person's roles allow is offered (and accepted).
        allowed = scopes_for_user(person)
        self.fields["scopes"].choices = [(s.value, s.label) for s in Scope if s in allowed]


class RevokeForm(forms.Form):
    reason = forms.CharField(label=gettext_lazy("Reason"),
                             max_length=API_TOKEN_REVOKE_REASON_MAX_LENGTH, required=False)


def _require_admin(request: HttpRequest) -> None:
    if not is_registry_admin(request.user):
        raise PermissionDenied(_("Only the registry admin manages partners."))


def _page(request: HttpRequest, *, status: int = 200, **context) -> HttpResponse:
    return render(request, "research/partners.html", {
        "organisations": partner_organisations(),
        "organisation_form": context.pop("organisation_form", None) or OrganisationForm(),
        "limits": {"name": API_TOKEN_NAME_MAX_LENGTH, "reason": API_TOKEN_REVOKE_REASON_MAX_LENGTH,
                   "days_min": API_TOKEN_EXPIRES_DAYS_MIN, "days_max": API_TOKEN_EXPIRES_DAYS_MAX,
                   "username": USERNAME_MAX_LENGTH},
        **context,
    }, status=status)


def _refused(request: HttpRequest, form: forms.Form, error: RegistryError | None = None,
             **context) -> HttpResponse:
    if error is not None:
        show_errors(request, form, error)
    return _page(request, status=400, failed_form=form, **context)


@login_required
@require_GET
def partners(request: HttpRequest) -> HttpResponse:
    _require_admin(request)
    return _page(request)


@login_required
@require_POST
def organisation_add(request: HttpRequest) -> HttpResponse:
    _require_admin(request)
    form = OrganisationForm(request.POST)
    if not form.is_valid():
        return _refused(request, form, organisation_form=form)
    try:
        organisation = partner_organisation_add(name=form.cleaned_data["name"],
                                                acting_user=request.user)
    except RegistryError as error:
        return _refused(request, form, error, organisation_form=form)
    messages.success(request, _("Partner organisation %(name)s kept.")
                     % {"name": organisation.name})
    return redirect("research:partners")


@login_required
@require_POST
def person_add(request: HttpRequest, pk: int) -> HttpResponse:
    _require_admin(request)
    organisation = access_partner_organisation(pk)
    form = PersonForm(request.POST)
    if not form.is_valid():
        return _refused(request, form, failed_for=organisation.pk)
    try:
        user, _affiliation = partner_person_add(
            organisation=organisation, username=form.cleaned_data["username"],
            email=form.cleaned_data["email"], acting_user=request.user)
    except RegistryError as error:
        return _refused(request, form, error, failed_for=organisation.pk)
    messages.success(request, _("%(user)s is a partner of %(organisation)s.")
                     % {"user": user.username, "organisation": organisation.name})
    return redirect("research:partners")


@login_required
@require_POST
def token_add(request: HttpRequest, pk: int) -> HttpResponse:
    _require_admin(request)
    person = access_partner_person(pk)
    form = TokenForm(request.POST, person=person)
    if not form.is_valid():
        return _refused(request, form, failed_for=person.pk)
    try:
        token, text = api_token_create(
            user=person, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
            expires_days=form.cleaned_data["expires_days"], acting_user=request.user)
    except RegistryError as error:
        return _refused(request, form, error, failed_for=person.pk)
    # Answered here, not redirected: the text is shown this once and stored nowhere.
    return _page(request, status=201, created_token=token, created_text=text)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    _require_admin(request)
    token = access_partner_token(pk)
    form = RevokeForm(request.POST)
    if not form.is_valid():
        return _refused(request, form, failed_for=token.user_id)
    try:
        api_token_revoke(token=token, acting_user=request.user,
                         reason=form.cleaned_data["reason"])
    except RegistryError as error:
        return _refused(request, form, error, failed_for=token.user_id)
    messages.success(request, _("The token %(prefix)s of %(user)s is revoked.")
                     % {"prefix": token.prefix, "user": token.user.username})
    return redirect("research:partners")
