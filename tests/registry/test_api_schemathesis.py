"""Schemathesis against the API's own schema (/api/v1/schema/), in-process through the WSGI
application, with a partner's token of every partner scope: no server error, no status the
schema does not document, no response that breaks its schema. Examples are bounded
(MAX_EXAMPLES per operation, derandomized) so that the run stays within CI's minutes.

pat (a partner of Acme Pharma) has one ready release of an approved commercial request, so that
the lists he may read are not empty.
"""

from __future__ import annotations

import datetime as dt

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from registry.api.scopes import ROLE_SCOPES
from registry.models import Role
from registry.services.api_tokens import api_token_create
from registry.wsgi import application
from research.models import DataRequest, Organisation, Purpose, Release
from research.services.requests import affiliation_set, organisation_upsert

pytestmark = [pytest.mark.postgres]

MAX_EXAMPLES = 50
SCHEMA_URL = "/api/v1/schema/?format=json"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def in_test_transaction():
    """The WSGI handler closes the database connection after each request, which would end
    the test's transaction; Django's test client stops it the same way."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def partner_world(db, in_test_transaction, settings, tmp_path, pat):
    settings.RELEASE_DIR = tmp_path / "releases"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]  # schemathesis's host
    settings.API_RATE_LIMITS = {name: "1000000/min" for name in
                                ("default", "scoring", "aggregates", "feasibility")}
    acme = organisation_upsert(name="Acme Pharma", kind=Organisation.Kind.COMPANY,
                               acting_user=None)
    affiliation_set(user=pat, organisation=acme, acting_user=None)
    request = DataRequest.objects.create(
        requester=pat, organisation=acme, title="Neutropenia", question="How often?",
        protocol_summary="Retrospective.", purpose=Purpose.COMMERCIAL, access_days=365,
        status=DataRequest.Status.APPROVED, revision=1)
    Release.objects.create(request=request, number=1, status=Release.Status.READY,
                           snapshot_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), key="0" * 64,
                           requested_by=pat, expires_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    return api_token_create(user=pat, name="schemathesis",
                            scopes=sorted(ROLE_SCOPES[Role.PARTNER]), expires_days=30,
                            acting_user=None)[1]


# Loaded when the module is collected, as served (the schema view reads no database); pytest
# 9 has no node id that schemathesis' lazy fixture loader can rename, so it is not used.
with override_settings(ALLOWED_HOSTS=["localhost"]):
    schema = schemathesis.openapi.from_wsgi(SCHEMA_URL, application)


@schema.parametrize()
@hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_schema_for_a_partner(case, partner_world):
    case.call_and_validate(headers={"Authorization": f"Bearer {partner_world}"},
                           checks=CHECKS)
