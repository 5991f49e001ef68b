"""The demo: one login per role, a small cohort, and a landing page naming role and sites."""

import pytest
from django.core.management import CommandError, call_command
from django.http import HttpRequest

from registry.demo import DEMO_PASSWORD, DEMO_USERS
from registry.models import Patient, Role


def test_demo_refuses_to_run_in_production(settings, db):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("demo_setup")


def test_demo_setup_and_landing_page(settings, client, vocabulary):
    settings.DEBUG = True
    call_command("demo_setup", "--patients", "60", "--sites", "3")
    call_command("demo_setup", "--patients", "60", "--sites", "3")  # a second run adds nothing
    assert Patient.objects.count() == 60
    assert {role for _, role, _ in DEMO_USERS} == set(Role.values)
    assert client.login(request=HttpRequest(), username="clerk_a", password=DEMO_PASSWORD)
    page = client.get("/")
    assert page.status_code == 200
    assert "Clerk" in page.text and "S001" in page.text and "S002" not in page.text
    n = Patient.objects.filter(site__code="S001").count()
    assert f"{n} patients in your sites" in page.text
    client.logout()
    assert client.get("/").status_code == 302  # login required


def test_landing_page_in_chinese(settings, client, vocabulary):
    settings.DEBUG = True
    call_command("demo_setup", "--patients", "20", "--sites", "3")
    client.login(request=HttpRequest(), username="monitor", password=DEMO_PASSWORD)
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert page.status_code == 200 and 'lang="zh-hans"' in page.text
    assert "监查员" in page.text and "退出" in page.text
