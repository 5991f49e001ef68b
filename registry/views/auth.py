"""Logging in: the password step (with lockout), then the second factor, and the security page.

The password step is Django's LoginView behind django-axes. A user with a confirmed TOTP device,
or whose role requires one (registry.twofactor.SECOND_FACTOR_ROLES), is not logged in by it:
the session only remembers who passed the password step, for LOGIN_SECOND_STEP_SECONDS, and
the login completes once a valid code is entered (after enrolling a device if they have none).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import user_login_failed
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.text import format_lazy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from registry.sessions import SESSION_STARTED_KEY
from registry.twofactor import (
    TOKEN_DIGITS,
    confirmed_device,
    device_qr_svg,
    device_secret,
    second_factor_required,
    totp_enrolment_confirm,
    totp_enrolment_start,
)

PENDING_KEY = "registry_login_pending"


class TokenForm(forms.Form):
    token = forms.RegexField(
        label=gettext_lazy("Code from your authenticator app"),
        regex=rf"^\s*[0-9]{{{TOKEN_DIGITS}}}\s*$",
        max_length=TOKEN_DIGITS + 4,
        error_messages={"invalid": format_lazy(gettext_lazy("Enter the {digits}-digit code."),
                                               digits=TOKEN_DIGITS)},
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "autofocus": True}),
    )

    def clean_token(self) -> str:
        return self.cleaned_data["token"].strip()


def _start_session(request: HttpRequest, user: User, backend: str) -> None:
    auth_login(request, user, backend=backend)
    request.session[SESSION_STARTED_KEY] = int(time.time())


class RegistryLoginView(LoginView):
    """The password step; completes the login only for users with no second factor to give."""

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        user = form.get_user()
        if confirmed_device(user) is None and not second_factor_required(user):
            _start_session(self.request, user, user.backend)
            return redirect(self.get_success_url())
        self.request.session.cycle_key()
        self.request.session[PENDING_KEY] = {
            "user": user.pk, "backend": user.backend, "at": int(time.time()),
            # get_redirect_url keeps only a URL of this site (else the home page).
            "next": self.get_redirect_url(),
        }
        return redirect("login_token" if confirmed_device(user) else "login_enrol")


def _pending(request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
    """The user who passed the password step in this session, if still in time and active."""
    pending = request.session.get(PENDING_KEY)
    if not isinstance(pending, dict):
        return None
    if time.time() - pending.get("at", 0) > settings.LOGIN_SECOND_STEP_SECONDS:
        del request.session[PENDING_KEY]
        return None
    user = User.objects.filter(pk=pending.get("user"), is_active=True).first()
    return (user, pending) if user else None


def _restart(request: HttpRequest) -> HttpResponse:
    messages.error(request, _("Your login took too long or was not started: log in again."))
    return redirect("login")


def _complete(request: HttpRequest, user: User, pending: dict, device: TOTPDevice) -> HttpResponse:
    del request.session[PENDING_KEY]
    _start_session(request, user, pending["backend"])
    otp_login(request, device)
    return redirect(pending.get("next") or resolve_url(settings.LOGIN_REDIRECT_URL))


def _check_token(request: HttpRequest, user: User, device: TOTPDevice, form: TokenForm,
                 *, confirm: bool) -> bool:
    """Whether the form's code is valid for the device; a wrong code counts as a failed login."""
    allowed, _info = device.verify_is_allowed()
    if not allowed:
        form.add_error("token", _("Too many wrong codes in a row: wait a minute, then enter "
                                  "the current code."))
        return False
    token = form.cleaned_data["token"]
    ok = (totp_enrolment_confirm(device=device, token=token) if confirm
          else device.verify_token(token))
    if not ok:
        form.add_error("token", _("That code is not valid, or it was already used: enter the "
                                  "current code from your authenticator app."))
        user_login_failed.send(sender=__name__, credentials={"username": user.username},
                               request=request)
    return ok


def _locked(request: HttpRequest, user: User) -> bool:
    return not AxesProxyHandler.is_allowed(request, {"username": user.username})


@never_cache
@require_http_methods(["GET", "POST"])
def login_token(request: HttpRequest) -> HttpResponse:
    """The second step for a user with a confirmed device: a valid, unused code logs in."""
    found = _pending(request)
    if found is None:
        return _restart(request)
    user, pending = found
    device = confirmed_device(user)
    if device is None:
        return redirect("login_enrol")
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if _locked(request, user):
            return locked_out(request)
        if _check_token(request, user, device, form, confirm=False):
            return _complete(request, user, pending, device)
    return render(request, "registration/login_token.html", {"form": form})


@never_cache
@require_http_methods(["GET", "POST"])
def login_enrol(request: HttpRequest) -> HttpResponse:
    """The second step for a user whose role requires a device and who has none: enrol one."""
    found = _pending(request)
    if found is None:
        return _restart(request)
    user, pending = found
    if confirmed_device(user) is not None:
        return redirect("login_token")
    device = totp_enrolment_start(user=user)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if _locked(request, user):
            return locked_out(request)
        if _check_token(request, user, device, form, confirm=True):
            return _complete(request, user, pending, device)
    return render(request, "registration/login_enrol.html", _enrol_context(device, form))


def _enrol_context(device: TOTPDevice, form: TokenForm) -> dict[str, Any]:
    return {"form": form, "secret": device_secret(device), "qr_svg": device_qr_svg(device)}


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def security(request: HttpRequest) -> HttpResponse:
    """Whether the user's logins ask for a code; a user without a device may enrol one here."""
    device = confirmed_device(request.user)
    context: dict[str, Any] = {"device": device,
                               "required": second_factor_required(request.user)}
    if device is None:
        pending_device = totp_enrolment_start(user=request.user)
        form = TokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid() and _check_token(
                request, request.user, pending_device, form, confirm=True):
            otp_login(request, pending_device)
            messages.success(request, _("Your authenticator app is set up: every login will "
                                        "ask for its code."))
            return redirect("security")
        context.update(_enrol_context(pending_device, form))
    return render(request, "registration/security.html", context)


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's own login form would skip the lockout's page and the second factor."""
    target = request.GET.get("next") or reverse("admin:index")
    return redirect(f"{reverse('login')}?{urlencode({'next': target})}")


def locked_out(request: HttpRequest, original_response: HttpResponse | None = None,
               credentials: dict | None = None) -> HttpResponse:
    """The login page saying the username is locked out for a while (AXES_LOCKOUT_CALLABLE)."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    request.session.pop(PENDING_KEY, None)
    return render(request, "registration/login.html",
                  {"form": AuthenticationForm(request), "locked_out": True,
                   "cooloff_minutes": minutes}, status=429)
