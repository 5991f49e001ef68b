"""Creating and revoking API tokens: the service's refusals and permissions, and the command
line (`add_api_token`), which prints a token once and nothing secret otherwise."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registry.api.tokens import TOKEN_PATTERN, token_digest
from registry.audit import SYSTEM_USERNAME
from registry.errors import NotPermitted, ValidationFailed
from registry.models import ApiToken
from registry.models.api import API_TOKEN_EXPIRES_DAYS_MAX, API_TOKEN_NAME_MAX_LENGTH
from registry.services.api_tokens import api_token_create, api_token_revoke

pytestmark = pytest.mark.postgres

ME = "/api/v1/me/"


def _create(**overrides):
    return api_token_create(**{"name": "pipeline", "scopes": ["aggregates"],
                               "expires_days": None, **overrides})


# -- the service -------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "field"), [
    ({"scopes": []}, "scopes"),
    ({"scopes": ["aggregates", "everything"]}, "scopes"),
    ({"scopes": ["requests"]}, "scopes"),  # a partner's roles do not allow it
    ({"scopes": "aggregates"}, "scopes"),  # a string, not a list
    ({"scopes": [1]}, "scopes"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * (API_TOKEN_NAME_MAX_LENGTH + 1)}, "name"),
    ({"name": "a\x00b"}, "name"),
    ({"expires_days": 0}, "expires_days"),
    ({"expires_days": -5}, "expires_days"),
    ({"expires_days": API_TOKEN_EXPIRES_DAYS_MAX + 1}, "expires_days"),
    ({"expires_days": 10**40}, "expires_days"),
    ({"expires_days": 1.5}, "expires_days"),
    ({"expires_days": True}, "expires_days"),
])
def test_the_service_refuses_bad_input_and_writes_nothing(pat, overrides, field):
    with pytest.raises(ValidationFailed) as refused:
        _create(user=pat, acting_user=None, **overrides)
    assert field in refused.value.errors, refused.value.errors
    assert not ApiToken.objects.exists()


def test_every_problem_is_reported_at_once(pat):
    with pytest.raises(ValidationFailed) as refused:
        _create(user=pat, acting_user=None, name="", scopes=["nope"], expires_days=0)
    assert set(refused.value.errors) == {"name", "scopes", "expires_days"}
    message = refused.value.summary()
    assert "nope" in message and "aggregates" in message  # names the bad and the good scopes


def test_an_inactive_user_gets_no_token(pat):
    pat.is_active = False
    pat.save(update_fields=["is_active"])
    with pytest.raises(ValidationFailed) as refused:
        _create(user=pat, acting_user=None)
    assert "user" in refused.value.errors
    assert not ApiToken.objects.exists()


def test_limits_are_inclusive(pat):
    token, _ = _create(user=pat, acting_user=None, expires_days=API_TOKEN_EXPIRES_DAYS_MAX,
                       name="x" * API_TOKEN_NAME_MAX_LENGTH)
    assert (token.expires_at - token.created_at).days == API_TOKEN_EXPIRES_DAYS_MAX
    token, _ = _create(user=pat, acting_user=None, expires_days=1, name="  padded  ")
    assert token.name == "padded"


def test_who_may_create_and_revoke_for_whom(pat, ivan, carol, ada):
    with pytest.raises(NotPermitted):
        _create(user=pat, acting_user=ivan, scopes=["releases"])
    assert not ApiToken.objects.exists()
    own, _ = _create(user=ivan, acting_user=ivan, scopes=["releases"])
    assert own.created_by == ivan
    by_admin, _ = _create(user=pat, acting_user=ada)
    assert by_admin.created_by == ada

    with pytest.raises(NotPermitted):
        api_token_revoke(token=own, acting_user=carol)
    assert ApiToken.objects.get(pk=own.pk).revoked_at is None
    api_token_revoke(token=own, acting_user=ivan)
    assert ApiToken.objects.get(pk=own.pk).revoked_by == ivan
    api_token_revoke(token=by_admin, acting_user=ada)
    first = ApiToken.objects.get(pk=by_admin.pk).revoked_at
    api_token_revoke(token=by_admin, acting_user=None)  # again: nothing changes
    again = ApiToken.objects.get(pk=by_admin.pk)
    assert (again.revoked_at, again.revoked_by) == (first, ada)
    assert ApiToken.history.filter(id=by_admin.pk).count() == 2


def test_an_inactive_acting_user_may_do_nothing(ivan):
    token, _ = _create(user=ivan, acting_user=ivan, scopes=["releases"])
    ivan.is_active = False
    ivan.save(update_fields=["is_active"])
    with pytest.raises(NotPermitted):
        api_token_revoke(token=token, acting_user=ivan)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_prefixes_are_unique_and_texts_distinct(pat):
    made = [_create(user=pat, acting_user=None) for _ in range(20)]
    assert len({t.prefix for t, _ in made}) == 20
    assert len({text for _, text in made}) == 20
    assert all(token.digest == token_digest(text) for token, text in made)


# -- the command line --------------------------------------------------------------------------

def _command(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("add_api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_a_working_token_once(client, pat, capsys):
    out, _err = _command("pat", "--scopes", "aggregates, feasibility", "--expires", "90",
                         "--name", "warehouse")
    text = out.strip()
    assert TOKEN_PATTERN.fullmatch(text)
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.scopes) == (pat, "warehouse",
                                                      ["aggregates", "feasibility"])
    assert (token.expires_at - token.created_at).days == 90
    assert token.created_by.username == SYSTEM_USERNAME
    assert token.history.get().history_change_reason == "API token created from the command line"
    # What it is goes to standard error, without the secret.
    told = capsys.readouterr().err
    assert token.prefix in told and "warehouse" in told
    assert text not in told and text.split("_", 2)[2] not in told
    response = client.get(ME, HTTP_AUTHORIZATION=f"Bearer {text}")
    assert response.status_code == 200
    assert response.json()["scopes"] == ["aggregates", "feasibility"]


@pytest.mark.parametrize(("args", "says"), [
    (["nobody", "--scopes", "aggregates"], "No user is named 'nobody'"),
    (["pat", "--scopes", "aggregates,everything"], "everything"),
    (["pat", "--scopes", "requests"], "do not allow"),
    (["pat", "--scopes", ""], "at least one scope"),
    (["pat", "--scopes", "aggregates", "--expires", "0"], "1 to 730 days"),
    (["pat", "--scopes", "aggregates", "--expires", "731"], "1 to 730 days"),
    (["pat", "--scopes", "aggregates", "--name", "x" * 101], "at most 100"),
    ([], "Name the user"),
    (["pat", "--revoke", "abc"], "no username"),
    (["--revoke", "000000000000"], "No API token has the prefix"),
])
def test_the_command_refuses_bad_input_clearly(pat, args, says):
    with pytest.raises(CommandError, match=says):
        _command(*args)
    assert not ApiToken.objects.exists()


def test_the_command_refuses_a_non_integer_expiry(pat):
    with pytest.raises(CommandError, match="invalid int value"):
        _command("pat", "--scopes", "aggregates", "--expires", "NaN")


def test_the_command_revokes_by_prefix(client, pat):
    out, _ = _command("pat", "--scopes", "aggregates")
    text = out.strip()
    prefix = text.split("_")[1]
    said, _ = _command("--revoke", prefix)
    assert f"API token {prefix}" in said and "is revoked" in said and text not in said
    token = ApiToken.objects.get(prefix=prefix)
    assert token.revoked_at is not None and token.revoked_by.username == SYSTEM_USERNAME
    assert client.get(ME, HTTP_AUTHORIZATION=f"Bearer {text}").status_code == 401
    said, _ = _command("--revoke", prefix)
    assert "was already revoked" in said
