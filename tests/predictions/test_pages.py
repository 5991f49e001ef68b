"""The risk-model pages for every persona: who reads them, who is refused, another site's
per-site row never shown, unknown models and versions a 404; the champion moved over HTTP by
the registry admin only, with a reason."""

from __future__ import annotations

import pytest
from django.http import HttpRequest

from predictions.models import Alias, AliasMove, TrainingRun
from predictions.services import versions as v
from tests.conftest import persona_password
from tests.predictions import factories

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("model_dir")]

PER_SITE = [{"site": "SITE-A", "cycles": 200, "events": 40, "auroc": 0.71, "ci": [0.6, 0.8]},
            {"site": "SITE-B", "cycles": 200, "events": 35, "auroc": 0.69, "ci": [0.6, 0.78]}]
READERS = {"ada", "mona", "ivan"}
PERSONAS = ["alice", "bob", "mona", "carol", "ivan", "pat", "ada"]


@pytest.fixture
def models_world(site_a, site_b, alice, bob, mona, carol, ivan, pat, ada):
    y, risk, rng = factories.outcomes(400)
    first = factories.version(y=y, p=risk, per_site=PER_SITE)
    v.promotion_apply(first)
    second = factories.version(y=y, p=risk, per_site=PER_SITE,
                               metrics={"calibration_slope": 1.4})
    v.promotion_apply(second)
    run = TrainingRun.objects.create(trigger="manual", status="done", progress=100,
                                     log="started\ndone\n")
    return {"first": first, "second": second, "run": run}


def _login(client, username):
    assert client.login(request=HttpRequest(), username=username,
                        password=persona_password(username))


def _pages(world):
    return ["/models/", "/models/cinv/", "/models/cinv/v1/", "/models/cinv/v2/",
            "/models/cinv/v1/card/", f"/models/runs/{world['run'].pk}/"]


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_page_for_every_persona(client, models_world, persona):
    _login(client, persona)
    expected = 200 if persona in READERS else 403
    for url in _pages(models_world):
        assert client.get(url).status_code == expected, url
    if persona in READERS:
        for url in ["/models/unknown/", "/models/cinv/v99/", "/models/cinv/v99/card/",
                    "/models/runs/999999/", "/models/unknown/v1/"]:
            assert client.get(url).status_code == 404, url


def test_anonymous_is_sent_to_login(client, models_world):
    assert client.get("/models/").status_code == 302


def test_per_site_rows_only_for_the_sites_one_sees(client, models_world):
    rows = {}
    for persona in ("ada", "mona", "ivan"):
        _login(client, persona)
        page = client.get("/models/cinv/v1/")
        rows[persona] = [r["site"] for r in page.context["per_site"]]
        if persona == "mona":
            assert 'id="site-SITE-B"' not in page.text and "SITE-B" not in page.text
    assert rows == {"ada": ["SITE-A", "SITE-B"], "mona": ["SITE-A"], "ivan": []}


def test_version_page_draws_both_plots_as_inline_svg(client, models_world):
    _login(client, "ivan")
    page = client.get("/models/cinv/v1/")
    assert page.text.count("<svg") == 2
    assert "<script" not in page.text.split("<main>")[1]
    assert "AUROC 0.750" in page.text
    card = client.get("/models/cinv/v1/card/")
    for heading in ("Intended use", "Source of data and participants", "Missing data",
                    "Performance", "Limitations", "Predictors and their timing"):
        assert heading in card.text
    assert client.get("/models/cinv/v1/", HTTP_ACCEPT_LANGUAGE="zh-hans").status_code == 200


def test_only_the_registry_admin_moves_the_champion(client, models_world):
    first = models_world["first"]
    assert v.champion_of("cinv") == first
    for persona in ("mona", "ivan", "alice"):
        _login(client, persona)
        response = client.post("/models/cinv/champion/", {"version": 2, "reason": "better"})
        assert response.status_code == 403, persona
    assert v.champion_of("cinv") == first and AliasMove.objects.count() == 1

    _login(client, "ada")
    response = client.post("/models/cinv/champion/", {"version": 2, "reason": ""})
    assert response.status_code == 400
    assert v.champion_of("cinv") == first and AliasMove.objects.count() == 1
    response = client.post("/models/cinv/champion/", {"version": 7, "reason": "typo"})
    assert response.status_code == 400 and "no version 7" in response.text
    assert AliasMove.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_admin_promotes_and_rolls_back_over_http(client, vocabulary, models_world):
    first, second = models_world["first"], models_world["second"]
    _login(client, "ada")
    response = client.post("/models/cinv/champion/",
                           {"version": 2, "reason": "reviewed: slope acceptable"})
    assert response.status_code == 302
    assert Alias.objects.get(risk_model="cinv").version == second
    move = AliasMove.objects.first()
    assert (move.kind, move.to_version, move.moved_by.username, move.reason) == (
        "promote", second, "ada", "reviewed: slope acceptable")
    response = client.post("/models/cinv/champion/", {"version": 1, "reason": "back to v1"})
    assert response.status_code == 302
    assert Alias.objects.get(risk_model="cinv").version == first
    assert [m.kind for m in AliasMove.objects.order_by("moved_at", "id")] == [
        "automatic", "promote", "rollback"]
    page = client.get("/models/cinv/")
    assert "back to v1" in page.text and "reviewed: slope acceptable" in page.text


def test_train_now_is_the_admins_and_queues_one_run(client, models_world, ada):
    _login(client, "mona")
    assert client.post("/models/train/").status_code == 403
    assert TrainingRun.objects.count() == 1
    _login(client, "ada")
    response = client.post("/models/train/")
    assert response.status_code == 302
    run = TrainingRun.objects.get(status="queued")
    assert (run.trigger, run.requested_by) == ("manual", ada)
    assert client.post("/models/train/").status_code == 302  # the queued run again, not a new one
    assert TrainingRun.objects.count() == 2


def test_numbers_no_row_can_have_are_a_404(client, models_world):
    _login(client, "ada")
    for url in ["/models/cinv/v" + "9" * 40 + "/", "/models/runs/" + "9" * 40 + "/"]:
        assert client.get(url).status_code == 404, url


def test_every_key_the_definitions_use_has_a_translated_label():
    from predictions import labels
    from predictions.ml.definitions import DEFINITIONS

    for name, definition in DEFINITIONS.items():
        assert name in labels.RISK_MODEL_LABELS and name in labels.TARGET_LABELS
        assert set(definition.features) <= set(labels.FEATURE_LABELS), name
        for tier in definition.tiers:
            assert (name, tier.key) in labels.TIER_LABELS
            assert tier.action in labels.ACTION_LABELS
