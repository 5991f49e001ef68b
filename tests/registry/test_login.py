"""Logging in: lockout, the second factor, passwords the validators accept, session limits, CSP.

Each finding of the hardening probe has its test here: 20 wrong passwords then the right one
logged in; add_user accepted "123"; there was no second factor; sessions lasted 8 hours whatever
the activity; there was no Content-Security-Policy.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone, translation
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from registry.errors import ValidationFailed
from registry.models import Membership, Role
from registry.services.organisation import user_add
from registry.twofactor import SECOND_FACTOR_ROLES, second_factor_required
from tests.conftest import persona_password, totp_token
from tests.registry import factories

LOGIN = "/accounts/login/"
CODE = "/accounts/login/code/"
ENROL = "/accounts/login/enrol/"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _post_login(client, username, password, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def _logged_in_as(client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


@pytest.fixture(autouse=True)
def _english():
    """Messages are matched in English, whatever language an earlier request left active."""
    with translation.override("en"):
        yield


@pytest.fixture
def travel():
    """The clock, frozen now and moved on by the test."""
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


# Lockout (django-axes)

@pytest.mark.django_db(transaction=True)
def test_twenty_wrong_passwords_lock_the_username_out_even_for_the_right_one(client, alice):
    for _ in range(20):
        wrong = _post_login(client, "alice", "not-her-password")
        assert wrong.status_code in {200, 429}
    right = _post_login(client, "alice", persona_password("alice"))
    assert right.status_code == 429
    assert "Too many failed logins" in right.text and 'id="locked-out"' in right.text
    assert _logged_in_as(client) is None
    assert client.get("/").status_code == 302
    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.failures_since_start >= 5


def test_the_fifth_failure_locks_and_the_cool_off_ends_it(client, alice, settings, travel):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _post_login(client, "alice", "wrong-password-1").status_code == 200
    assert _post_login(client, "alice", "wrong-password-1").status_code == 429
    travel.shift(settings.AXES_COOLOFF_TIME - dt.timedelta(minutes=1))
    # A try during the lockout is refused and starts the cool-off again.
    assert _post_login(client, "alice", persona_password("alice")).status_code == 429
    travel.shift(settings.AXES_COOLOFF_TIME - dt.timedelta(minutes=1))
    assert _post_login(client, "alice", persona_password("alice")).status_code == 429
    travel.shift(settings.AXES_COOLOFF_TIME + dt.timedelta(minutes=1))
    response = _post_login(client, "alice", persona_password("alice"))
    assert response.status_code == 302 and response.url == "/"
    assert _logged_in_as(client) == "alice"
    assert not AccessAttempt.objects.filter(username="alice").exists()  # reset on success


def test_lockout_is_per_username_and_address(client, alice, bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _post_login(client, "alice", "wrong-password-1")
    assert _post_login(client, "alice", persona_password("alice")).status_code == 429
    # bob from the same address, and alice from another, are not locked out.
    assert _post_login(client, "bob", persona_password("bob")).status_code == 302
    client.logout()
    other = _post_login(client, "alice", persona_password("alice"), REMOTE_ADDR="10.1.2.3")
    assert other.status_code == 302 and _logged_in_as(client) == "alice"


def test_axes_reset_unlocks(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _post_login(client, "alice", "wrong-password-1")
    assert _post_login(client, "alice", persona_password("alice")).status_code == 429
    call_command("axes_reset_username", "alice")
    assert _post_login(client, "alice", persona_password("alice")).status_code == 302


def test_lockout_message_in_chinese(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _post_login(client, "alice", "wrong-password-1", HTTP_ACCEPT_LANGUAGE="zh-hans")
    locked = _post_login(client, "alice", persona_password("alice"),
                         HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert locked.status_code == 429 and 'lang="zh-hans"' in locked.text
    assert 'id="locked-out"' in locked.text


def test_the_admin_login_goes_through_the_registry_login(client):
    response = client.get("/admin/login/", {"next": "/admin/registry/patient/"})
    assert response.status_code == 302
    assert response.url == "/accounts/login/?next=%2Fadmin%2Fregistry%2Fpatient%2F"


# Passwords: the validators wherever a password is set

@pytest.mark.django_db(transaction=True)
def test_user_add_refuses_a_weak_password_and_writes_nothing(site_a):
    with pytest.raises(ValidationFailed) as refused:
        user_add(username="lin", role=Role.CLERK, site_codes=["SITE-A"], password="123",
                 acting_user=None)
    messages = refused.value.errors["password"]
    assert any("at least 12 characters" in m for m in messages)
    assert any("too common" in m for m in messages) and any("numeric" in m for m in messages)
    assert not User.objects.filter(username="lin").exists()
    assert not Membership.objects.filter(user__username="lin").exists()


def test_user_add_refuses_a_password_like_the_username(site_a):
    with pytest.raises(ValidationFailed, match="too similar to the username"):
        user_add(username="lin.wenjing", role=Role.CLERK, site_codes=["SITE-A"],
                 password="lin.wenjing1", acting_user=None)
    assert not User.objects.filter(username="lin.wenjing").exists()


def test_user_add_refuses_a_weak_new_password_for_an_existing_user(alice):
    with pytest.raises(ValidationFailed, match="too short"):
        user_add(username="alice", role=Role.CLERK, site_codes=["SITE-A"], password="short1x",
                 acting_user=None)
    alice.refresh_from_db()
    assert alice.check_password(persona_password("alice"))


@pytest.mark.django_db(transaction=True)
def test_add_user_command_prints_the_validator_messages_and_fails(site_a, monkeypatch):
    monkeypatch.setenv("LIN_PASSWORD", "123")
    with pytest.raises(CommandError) as refused:
        call_command("add_user", "lin", "--role", "clerk", "--site", "SITE-A",
                     "--password-env", "LIN_PASSWORD")
    assert "at least 12 characters" in str(refused.value)
    assert "too common" in str(refused.value)
    assert not User.objects.filter(username="lin").exists()
    monkeypatch.setenv("LIN_PASSWORD", "long enough and uncommon 42")
    call_command("add_user", "lin", "--role", "clerk", "--site", "SITE-A",
                 "--password-env", "LIN_PASSWORD")
    assert User.objects.get(username="lin").check_password("long enough and uncommon 42")


def test_the_admin_user_form_refuses_a_weak_password(client, db):
    root = User.objects.create_superuser("root", "root@example.org", "root-password-long-1")
    client.force_login(root)
    response = client.post("/admin/auth/user/add/", {
        "username": "lin", "password1": "123", "password2": "123", "usable_password": "true"})
    assert response.status_code == 200
    assert "This password is too short" in response.text
    assert not User.objects.filter(username="lin").exists()


# The second factor (django-otp, TOTP)

@pytest.mark.parametrize(("persona", "required"), [
    ("alice", False), ("mona", True), ("carol", True), ("ivan", False), ("pat", False),
    ("ada", True)])
def test_who_must_use_a_second_factor(request, persona, required):
    user = request.getfixturevalue(persona)
    assert second_factor_required(user) is required
    assert {Role.MONITOR, Role.COMMITTEE, Role.CHAIR, Role.ADMIN} == SECOND_FACTOR_ROLES


@pytest.mark.django_db(transaction=True)
def test_a_monitor_without_a_device_enrols_before_the_session_is_logged_in(client, mona):
    response = _post_login(client, "mona", persona_password("mona"))
    assert response.status_code == 302 and response.url == ENROL
    assert _logged_in_as(client) is None
    assert client.get("/").status_code == 302  # nothing is open yet

    page = client.get(ENROL)
    assert page.status_code == 200
    device = TOTPDevice.objects.get(user=mona)
    assert not device.confirmed
    assert "<svg" in page.text and 'id="totp-secret"' in page.text

    wrong = client.post(ENROL, {"token": _wrong_token(device)})
    assert wrong.status_code == 200 and "not valid" in wrong.text
    device.refresh_from_db()
    assert not device.confirmed and _logged_in_as(client) is None

    device.throttle_reset()
    right = client.post(ENROL, {"token": totp_token(device)})
    assert right.status_code == 302 and right.url == "/"
    device.refresh_from_db()
    assert device.confirmed
    assert _logged_in_as(client) == "mona"
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id  # OTP-verified
    assert client.get("/").status_code == 200


def _wrong_token(device: TOTPDevice) -> str:
    return "000000" if totp_token(device) != "000000" else "111111"


def _enrolled(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=True)


@pytest.mark.django_db(transaction=True)
def test_a_confirmed_device_is_asked_for_and_a_code_is_not_taken_twice(client, mona):
    device = _enrolled(mona)
    response = _post_login(client, "mona", persona_password("mona"))
    assert response.status_code == 302 and response.url == CODE
    assert _logged_in_as(client) is None
    token = totp_token(device)
    assert client.post(CODE, {"token": token}).status_code == 302
    assert _logged_in_as(client) == "mona"

    client.logout()
    _post_login(client, "mona", persona_password("mona"))
    again = client.post(CODE, {"token": token})
    assert again.status_code == 200 and "already used" in again.text
    assert _logged_in_as(client) is None
    device.throttle_reset()
    assert client.post(CODE, {"token": totp_token(device)}).status_code == 302
    assert _logged_in_as(client) == "mona"


def test_wrong_codes_are_slowed_down_then_lock_the_login_out(client, mona, settings, travel):
    device = _enrolled(mona)
    _post_login(client, "mona", persona_password("mona"))
    assert client.post(CODE, {"token": "12345x"}).status_code == 200  # not a code: no attempt
    wrong = _wrong_token(device)
    assert "not valid" in client.post(CODE, {"token": wrong}).text
    # django-otp's throttle: straight after a wrong code even the right one is refused.
    throttled = client.post(CODE, {"token": totp_token(device)})
    assert "Too many wrong codes" in throttled.text and _logged_in_as(client) is None
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        travel.shift(dt.timedelta(seconds=40))
        device.throttle_reset()
        client.post(CODE, {"token": wrong})
    # Wrong codes count as failed logins: the password step is now locked too.
    locked = _post_login(client, "mona", persona_password("mona"))
    assert locked.status_code == 429 and _logged_in_as(client) is None


def test_the_second_step_expires(client, mona, settings, travel):
    device = _enrolled(mona)
    _post_login(client, "mona", persona_password("mona"))
    travel.shift(dt.timedelta(seconds=settings.LOGIN_SECOND_STEP_SECONDS + 1))
    late = client.post(CODE, {"token": totp_token(device)})
    assert late.status_code == 302 and late.url == LOGIN
    assert _logged_in_as(client) is None


def test_the_code_pages_need_the_password_step_first(client, mona):
    _enrolled(mona)
    for url in (CODE, ENROL):
        response = client.post(url, {"token": "123456"})
        assert response.status_code == 302 and response.url == LOGIN
    assert _logged_in_as(client) is None


@pytest.mark.parametrize(
    "token", ["", "abc", "1234567890123", "12\x003456", "９９９９９９", "-12345", "1" * 100_000])
def test_bad_code_input_is_a_message_not_an_error(client, mona, token):
    _enrolled(mona)
    _post_login(client, "mona", persona_password("mona"))
    response = client.post(CODE, {"token": token})
    if "\x00" in token:  # refused for the whole request (RefuseNulMiddleware)
        assert response.status_code == 400
    else:
        assert response.status_code == 200 and 'class="errorlist' in response.text
    assert _logged_in_as(client) is None


def test_after_the_code_only_a_registry_page_is_the_next_page(client, mona):
    device = _enrolled(mona)
    client.post(LOGIN, {"username": "mona", "password": persona_password("mona"),
                        "next": "https://evil.example/steal"})
    response = client.post(CODE, {"token": totp_token(device)})
    assert response.status_code == 302 and response.url == "/"
    client.logout()
    client.post(LOGIN, {"username": "mona", "password": persona_password("mona"),
                        "next": "/patients/"})
    response = client.post(CODE, {"token": totp_token(device)})
    assert response.status_code == 302 and response.url == "/patients/"


@pytest.mark.django_db(transaction=True)
def test_a_clerk_may_enrol_from_the_security_page_and_is_then_asked(client, alice):
    assert _post_login(client, "alice", persona_password("alice")).url == "/"
    page = client.get("/accounts/security/")
    assert page.status_code == 200 and 'id="second-factor-off"' in page.text
    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    confirmed = client.post("/accounts/security/", {"token": totp_token(device)})
    assert confirmed.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert 'id="second-factor-on"' in client.get("/accounts/security/").text

    client.logout()
    assert _post_login(client, "alice", persona_password("alice")).url == CODE
    assert _logged_in_as(client) is None
    assert client.post(CODE, {"token": totp_token(device)}).status_code == 302
    assert _logged_in_as(client) == "alice"


def test_the_second_factor_pages_in_chinese(client, mona):
    _post_login(client, "mona", persona_password("mona"))
    page = client.get(ENROL, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert page.status_code == 200 and 'lang="zh-hans"' in page.text


def test_force_login_still_stands_for_a_whole_session(client, mona):
    client.force_login(mona)
    assert client.get("/").status_code == 200


# Sessions: idle timeout and absolute limit

def test_a_session_ends_after_the_idle_minutes(client, alice, settings, travel):
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_IDLE_MINUTES * 60
    _post_login(client, "alice", persona_password("alice"))
    idle = dt.timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    for _ in range(3):  # activity keeps it going past the idle limit
        travel.shift(idle - dt.timedelta(minutes=1))
        assert client.get("/").status_code == 200
    travel.shift(idle + dt.timedelta(minutes=1))
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith(LOGIN)


def test_a_session_ends_after_the_maximum_hours_however_active(client, alice, settings, travel):
    _post_login(client, "alice", persona_password("alice"))
    step = dt.timedelta(minutes=settings.SESSION_IDLE_MINUTES // 2)
    elapsed = dt.timedelta()
    while elapsed < dt.timedelta(hours=settings.SESSION_MAX_HOURS) - step:
        travel.shift(step)
        elapsed += step
        assert client.get("/").status_code == 200
    travel.shift(2 * step)
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith(LOGIN)
    assert _logged_in_as(client) is None


# Content-Security-Policy

def test_every_page_carries_a_policy_without_inline_script(client):
    policy = client.get(LOGIN).headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert "unsafe" not in policy


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|<[^>]*\sstyle\s*=", re.IGNORECASE)


def _inline(html: str) -> list[str]:
    return (INLINE_SCRIPT.findall(html) + INLINE_HANDLER.findall(html)
            + INLINE_STYLE.findall(html))


def test_rendered_pages_have_no_inline_script_handler_or_style(client, alice, mona, vocabulary):
    record = factories.full_record(alice.memberships.get().site, alice)
    anonymous = [LOGIN]
    for url in anonymous:
        assert _inline(client.get(url).text) == []
    _post_login(client, "mona", persona_password("mona"))
    assert _inline(client.get(ENROL).text) == []
    client.force_login(alice)
    chart = f"/patients/{record.registry_id}/"
    for url in ["/", "/patients/", chart, "/patients/new/", f"{chart}adverseevent/new/",
                f"{chart}labresult/new/", f"{chart}followup/new/", "/accounts/security/",
                "/imports/"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "Content-Security-Policy" in response.headers
        assert _inline(response.text) == [], url


# The two templates whose inline scripts their owners are moving to static files.
def test_no_template_has_inline_script_or_handlers():
    offenders = {}
    for path in TEMPLATES.rglob("*.html"):
        name = path.relative_to(TEMPLATES).as_posix()
        found = _inline(path.read_text(encoding="utf-8"))
        if found:
            offenders[name] = found
    assert offenders == {}
