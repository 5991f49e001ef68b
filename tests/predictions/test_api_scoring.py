"""The partner API's risk-model endpoints: scores equal the champion's own predictions, tiers at
their boundaries, batches up to the limit, hostile input refused with the cycle and the field,
scopes, the model card read from the stored version with per-site rows that name no site, the
feature schema, the process cache, and no row written by scoring.

The champion is a small real model (tests/predictions/factories.py: trained once per process
on the pure test cohort); the cycles sent are that cohort's own feature rows.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from drf_spectacular.validation import validate_schema

from predictions.feature_schema import NUMERIC_DOMAINS, schema_of
from predictions.ml import definitions as d
from predictions.ml.features import build_features
from predictions.ml.training import RiskPredictor
from predictions.models import AliasMove
from predictions.selectors import scoring
from predictions.services import versions as v
from registry.services.api_tokens import api_token_create
from tests.predictions import factories
from tests.predictions.ml.cohort import frames

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("model_dir")]

V1 = "/api/v1"
MODELS = tuple(d.DEFINITIONS)
ENDPOINTS = [("GET", "/models/"), ("POST", "/models/cinv/score/"),
             ("GET", "/models/cinv/schema/"), ("GET", "/models/cinv/card/")]
PER_SITE = [  # (site, cycles, events): shown, shown, too few events, too few without
    {"site": "SITE-B", "cycles": 203, "events": 41, "auroc": 0.71, "ci": [0.6, 0.8]},
    {"site": "SITE-A", "cycles": 498, "events": 103, "auroc": 0.74, "ci": [0.7, 0.78]},
    {"site": "SITE-C", "cycles": 120, "events": 6, "auroc": None, "ci": None},
    {"site": "SITE-D", "cycles": 30, "events": 25, "auroc": None, "ci": None},
]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_cache():
    scoring.models_cache_clear()
    yield
    scoring.models_cache_clear()


def _features(risk_model: str) -> pd.DataFrame:
    """The pure test cohort's feature rows of the model (the data the champion trained on)."""
    X, _, _ = build_features(frames(200, seed=3, sites=3)).matrix(d.definition(risk_model))
    return X


_ROWS: dict[str, pd.DataFrame] = {}


def rows(risk_model: str = "cinv") -> pd.DataFrame:
    if risk_model not in _ROWS:
        _ROWS[risk_model] = _features(risk_model)
    return _ROWS[risk_model]


def cycle(risk_model: str = "cinv", i: int = 0, **changes) -> dict:
    """Row i of the cohort as a partner sends it (NaN as null)."""
    row = rows(risk_model).iloc[i]
    body = {k: (None if isinstance(x, float) and math.isnan(x) else
                x.item() if hasattr(x, "item") else x) for k, x in row.items()}
    body.update(changes)
    return body


def champion(risk_model: str = "cinv", *, per_site=None):
    y, risk, rng = factories.outcomes(200, seed=1)
    version = factories.version(risk_model, y=y, p=factories.predictions(y, risk, rng,
                                                                         signal=0.8),
                                per_site=per_site)
    v.promotion_apply(version)  # the first calibrated version: champion automatically
    assert v.champion_of(risk_model) == version
    return version


class Api:
    def __init__(self, text: str | None) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {text}"} if text else {}

    def get(self, path: str, **extra):
        return self.client.get(f"{V1}{path}", **self.headers, **extra)

    def post(self, path: str, body, **extra):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.post(f"{V1}{path}", data, content_type="application/json",
                                **self.headers, **extra)

    def send(self, method: str, path: str):
        return self.get(path) if method == "GET" else self.post(path, {"cycles": [cycle()]})


def token(user, scopes) -> str:
    return api_token_create(user=user, name="tests", scopes=scopes, expires_days=30,
                            acting_user=None)[1]


@pytest.fixture
def partner(pat) -> Api:
    return Api(token(pat, ["scoring"]))


def error(response) -> dict:
    return response.json()["error"]


# -- scores -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("risk_model", MODELS)
def test_scores_equal_the_champions_own_predictions(partner, risk_model):
    version = champion(risk_model)
    sent = [cycle(risk_model, i, ref=f"mine-{i}") for i in range(25)]
    response = partner.post(f"/models/{risk_model}/score/", {"cycles": sent})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == {
        "risk_model": risk_model, "number": version.number, "algorithm": version.algorithm,
        "algorithm_label": "Regularised logistic regression",
        "trained_at": body["model"]["trained_at"], "artifact_sha256": version.artifact_sha256}
    assert body["model"]["trained_at"].startswith(version.created_at.date().isoformat())
    model = v.version_load(version)  # loaded directly, as the registry's own scoring does
    expected = model.predict_proba(rows(risk_model).iloc[:25])
    got = [s["probability"] for s in body["scores"]]
    assert got == pytest.approx(list(expected), abs=1e-12)
    definition = d.definition(risk_model)
    for i, score in enumerate(body["scores"]):
        assert (score["index"], score["ref"]) == (i, f"mine-{i}")
        tier = d.tier_of(definition, expected[i])
        assert (score["tier"], score["action"]) == (tier.tier, tier.action)
        assert score["tier_label"] and score["action_label"]


@pytest.mark.django_db
def test_the_action_is_in_the_requests_language(partner):
    champion()
    english = partner.post("/models/cinv/score/", {"cycles": [cycle()]}).json()["scores"][0]
    chinese = partner.post("/models/cinv/score/", {"cycles": [cycle()]},
                           HTTP_ACCEPT_LANGUAGE="zh-hans").json()["scores"][0]
    assert english["action"] == chinese["action"]
    labels = {t.action: t.action_label for t in d.CINV.tiers}
    assert english["action_label"] == labels[english["action"]]


class _Fixed:
    """A model answering fixed probabilities (the tiers' boundaries)."""

    def __init__(self, p):
        self.p = np.asarray(p, dtype=float)

    def predict_proba(self, X):
        return self.p[:len(X)]


BOUNDARIES = [0.0, 0.0999, 0.10, 0.15, 0.1999, 0.20, 0.5, 0.90, 0.9001, 1.0]


@pytest.mark.parametrize("risk_model", MODELS)
def test_tiers_at_their_boundaries(risk_model):
    definition = d.definition(risk_model)
    served = scoring.Served(version=type("V", (), {"risk_model": risk_model})(),
                            model=_Fixed(BOUNDARIES), schema=None)
    frame = pd.DataFrame({"x": range(len(BOUNDARIES))})
    scores = scoring.cycles_score(served, frame, [None] * len(BOUNDARIES))
    for p, score in zip(BOUNDARIES, scores, strict=True):
        assert (score["tier"], score["action"]) == tuple(vars(d.tier_of(definition, p))
                                                         .values()), p
    keys = [s["tier"] for s in scores]
    if risk_model == "cinv":  # < 10% none, 10-90% one or two, > 90% three
        assert keys == ["low", "low", "moderate", "moderate", "moderate", "moderate",
                        "moderate", "moderate", "high", "high"]
    else:  # < 10%, 10-20%, >= 20%
        assert keys == ["low", "low", "intermediate", "intermediate", "intermediate", "high",
                        "high", "high", "high", "high"]


@pytest.mark.django_db
def test_a_batch_of_the_limit_is_one_prediction_and_one_more_is_refused(partner, monkeypatch):
    champion()
    calls = []
    original = RiskPredictor.predict_proba

    def counted(self, X):
        calls.append(len(X))
        return original(self, X)

    monkeypatch.setattr(RiskPredictor, "predict_proba", counted)
    n = len(rows())
    batch = [cycle("cinv", i % n, ref=str(i)) for i in range(scoring.SCORE_BATCH_MAX)]
    response = partner.post("/models/cinv/score/", {"cycles": batch})
    assert response.status_code == 200
    scores = response.json()["scores"]
    assert len(scores) == scoring.SCORE_BATCH_MAX == 1_000
    assert [s["ref"] for s in scores] == [str(i) for i in range(1_000)]
    assert calls == [1_000]  # vectorised: one predict_proba for the batch
    response = partner.post("/models/cinv/score/", {"cycles": [*batch, cycle()]})
    assert response.status_code == 400
    assert set(error(response)["fields"]) == {"cycles"}
    assert "1001" in error(response)["fields"]["cycles"][0].replace(",", "")
    assert calls == [1_000]


HOSTILE = [  # (what, cycle changes or a whole body, the field named)
    ("unknown feature", {"bogus": 1}, "cycles.0.bogus"),
    ("missing feature", {"age": "__drop__"}, "cycles.0.age"),
    ("text for a number", {"age": "70"}, "cycles.0.age"),
    ("boolean for a flag", {"female": True}, "cycles.0.female"),
    ("list for a number", {"age": [70]}, "cycles.0.age"),
    ("object for a category", {"regimen": {"code": "REG-DOC"}}, "cycles.0.regimen"),
    ("number for a category", {"cancer": 34}, "cycles.0.cancer"),
    ("unknown category", {"regimen": "REG-NOT-A-REGIMEN"}, "cycles.0.regimen"),
    ("NUL in a category", {"cancer": "C3\x004"}, "cycles.0.cancer"),
    ("huge category", {"stage": "I" * 100_000}, "cycles.0.stage"),
    ("null where never missing", {"cycle_no": None}, "cycles.0.cycle_no"),
    ("out of range", {"ecog": 7}, "cycles.0.ecog"),
    ("negative", {"cycle_no": -1}, "cycles.0.cycle_no"),
    ("half a flag", {"first_cycle": 0.5}, "cycles.0.first_cycle"),
    ("fraction of a whole number", {"line_no": 1.5}, "cycles.0.line_no"),
    ("huge number", {"age": 10**400}, "cycles.0.age"),
    ("huge float", {"platelets": 1e308}, "cycles.0.platelets"),
    ("ref not text", {"ref": 12}, "cycles.0.ref"),
    ("ref too long", {"ref": "r" * (scoring.REF_MAX_LENGTH + 1)}, "cycles.0.ref"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("what", "changes", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_cycles_are_refused_naming_the_cycle_and_field(partner, what, changes, field):
    champion()
    bad = cycle(**{k: x for k, x in changes.items() if x != "__drop__"})
    for key in [k for k, x in changes.items() if x == "__drop__"]:
        del bad[key]
    body = {"cycles": [bad, cycle(i=1)]}
    response = partner.post("/models/cinv/score/", body)
    assert response.status_code == 400, (what, response.content)
    assert error(response)["code"] == "validation_failed"
    assert set(error(response)["fields"]) == {field}, what


@pytest.mark.django_db
@pytest.mark.parametrize(("literal", "feature"), [("NaN", "platelets"), ("Infinity", "age"),
                                                  ("-Infinity", "log_anc"), ("1e999", "age")])
def test_non_finite_numbers_are_refused_by_field(partner, literal, feature):
    champion()
    good = json.dumps({"cycles": [cycle(i=1), cycle(**{feature: 12345.0})]})
    text = good.replace("12345.0", literal)
    assert literal in text
    response = partner.post("/models/cinv/score/", text)
    assert response.status_code == 400
    assert set(error(response)["fields"]) == {f"cycles.1.{feature}"}


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), [
    ({"cycles": []}, "cycles"),
    ({"cycles": "all"}, "cycles"),
    ({"cycles": [1]}, "cycles.0"),
    ({}, "cycles"),
    ([{"cycles": []}], "__all__"),
    ({"cycles": [{}], "model": "cinv"}, "model"),
])
def test_malformed_bodies_are_refused(partner, body, field):
    champion()
    response = partner.post("/models/cinv/score/", body)
    assert response.status_code == 400
    assert field in error(response)["fields"]


@pytest.mark.django_db
def test_many_bad_cycles_get_a_bounded_answer(partner):
    champion()
    response = partner.post("/models/cinv/score/",
                            {"cycles": [{"bogus": i} for i in range(1_000)]})
    assert response.status_code == 400
    fields = error(response)["fields"]
    assert len(fields) <= scoring.ERRORS_SHOWN_MAX + 1 and "__all__" in fields
    assert len(response.content) < 20_000


@pytest.mark.django_db
def test_unreadable_and_oversized_bodies(partner, settings):
    champion()
    assert partner.post("/models/cinv/score/", "{not json").status_code == 400
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    response = partner.post("/models/cinv/score/", {"cycles": [cycle()] * 50})
    assert response.status_code == 413
    assert error(response)["code"] == "request_too_large"


@pytest.mark.django_db
def test_without_a_champion_the_answer_is_409_no_champion(partner):
    for path in ("/models/cinv/card/", "/models/cinv/schema/"):
        response = partner.get(path)
        assert response.status_code == 409
        assert error(response)["code"] == "no_champion"
    response = partner.post("/models/cinv/score/", {"cycles": [cycle()]})
    assert (response.status_code, error(response)["code"]) == (409, "no_champion")
    listed = partner.get("/models/").json()
    assert listed == [{"risk_model": "cinv", "label": str(d.CINV.label), "champion": None},
                      {"risk_model": "neutropenia", "label": str(d.NEUTROPENIA.label),
                       "champion": None}]


@pytest.mark.django_db
def test_an_unknown_risk_model_is_a_404(partner):
    champion()
    assert partner.get("/models/nope/card/").status_code == 404
    response = partner.post("/models/nope/score/", {"cycles": [cycle()]})
    assert (response.status_code, error(response)["code"]) == (404, "not_found")


# -- the process cache and the artifact's checksum ----------------------------------------------


@pytest.mark.django_db
def test_the_model_is_loaded_once_and_a_changed_artifact_is_refused(partner, monkeypatch,
                                                                    model_dir):
    version = champion()
    loads = []
    original = scoring.version_load
    monkeypatch.setattr(scoring, "version_load",
                        lambda ver: loads.append(ver.pk) or original(ver))
    for _ in range(3):
        assert partner.post("/models/cinv/score/", {"cycles": [cycle()]}).status_code == 200
    assert partner.get("/models/cinv/card/").status_code == 200
    assert loads == [version.pk]

    (model_dir / version.artifact).write_bytes(b"not the model")
    scoring.models_cache_clear()
    response = partner.post("/models/cinv/score/", {"cycles": [cycle()]})
    assert (response.status_code, error(response)["code"]) == (503, "model_unavailable")
    assert partner.get("/models/cinv/schema/").status_code == 503


# -- scopes -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_a_token_401_and_without_the_scope_403(method, path, pat, ivan, ada):
    champion()
    response = Api(None).send(method, path)
    assert (response.status_code, error(response)["code"]) == (401, "not_authenticated")
    response = Api("rwe_000000000000_nope").send(method, path)
    assert (response.status_code, error(response)["code"]) == (401, "authentication_failed")
    for user, scopes in ((pat, ["aggregates", "feasibility", "releases"]),
                         (ivan, ["requests", "releases"])):
        response = Api(token(user, scopes)).send(method, path)
        assert (response.status_code, error(response)["code"]) == (403, "permission_denied")
        assert "scoring" in error(response)["message"]
    assert Api(token(ada, ["scoring"])).send(method, path).status_code == 200
    assert Api(token(pat, ["scoring"])).send(method, path).status_code == 200


# -- the model card and the schema --------------------------------------------------------------


@pytest.mark.django_db
def test_the_card_is_the_stored_versions(partner, ada, site_a, site_b):
    version = champion(per_site=PER_SITE)
    card = partner.get("/models/cinv/card/")
    assert card.status_code == 200
    body = card.json()
    for key in scoring.METRIC_KEYS:
        assert body["metrics"][key] == version.metrics.get(key), key
    assert body["metrics"]["loso_auroc"] == factories.GOOD["loso_auroc"]
    assert body["version"]["number"] == version.number
    assert body["version"]["artifact_sha256"] == version.artifact_sha256
    assert body["training"] == {**{k: version.snapshot[k] for k in scoring.SNAPSHOT_KEYS},
                                "events": version.events, "fingerprint": version.fingerprint}
    assert body["calibration_curve"] == version.calibration_curve
    assert [t["key"] for t in body["tiers"]] == [t.key for t in d.CINV.tiers]
    assert [t["action_label"] for t in body["tiers"]] == [t.action_label for t in d.CINV.tiers]
    assert [f["name"] for f in body["features"]] == list(d.CINV.features)
    assert body["intended_use"] and body["out_of_scope_use"]
    assert body["target"]["terms"] == [{"ctcae_term": "Nausea", "min_grade": 2},
                                       {"ctcae_term": "Vomiting", "min_grade": 2}]
    chinese = partner.get("/models/cinv/card/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert chinese.status_code == 200 and chinese.json()["metrics"] == body["metrics"]


@pytest.mark.django_db
def test_per_site_rows_are_anonymous_rounded_and_small_sites_hidden(partner, site_a, site_b):
    champion(per_site=PER_SITE)
    card = partner.get("/models/cinv/card/")
    text = card.content.decode()
    for row in PER_SITE:
        assert row["site"] not in text
    for name in (site_a.name, site_b.name, site_a.code, site_b.code, "SITE-"):
        assert name not in text
    per_site = card.json()["per_site"]
    assert per_site["sites"] == [  # by size; counts rounded to 5
        {"site": "Site A", "cycles": 500, "events": 105, "auroc": 0.74, "auroc_ci": [0.7, 0.78]},
        {"site": "Site B", "cycles": 205, "events": 40, "auroc": 0.71, "auroc_ci": [0.6, 0.8]},
    ]
    assert (per_site["hidden_sites"], per_site["min_cell"], per_site["rounded_to"]) == (2, 11, 5)


def test_the_per_site_minimum_cell_is_the_registrys():
    from research.disclosure import MIN_CELL, ROUND_TO

    assert (scoring.PER_SITE_MIN_CELL, scoring.PER_SITE_ROUND_TO) == (MIN_CELL, ROUND_TO)


@pytest.mark.django_db
def test_the_alias_history_names_no_person(partner, ada):
    first = champion()
    y, risk, rng = factories.outcomes(200, seed=2)
    second = factories.version("cinv", y=y, p=factories.predictions(y, risk, rng, signal=0.9))
    v.champion_move(risk_model="cinv", version_number=second.number, acting_user=ada,
                    reason="Dr. Wang at SITE-A asked for it")
    body = partner.get("/models/cinv/card/").json()
    history = body["alias_history"]
    assert [(m["kind"], m["from_version"], m["to_version"]) for m in history] == [
        ("promote", first.number, second.number), ("automatic", None, first.number)]
    assert history[0]["reason"] is None
    assert history[1]["reason"] == AliasMove.objects.get(kind="automatic").reason
    assert "Wang" not in json.dumps(body, ensure_ascii=False)
    assert all(set(m) == {"moved_at", "kind", "kind_label", "from_version", "to_version",
                          "reason"} for m in history)  # no one's name, no moved_by
    assert body["version"]["number"] == second.number


@pytest.mark.django_db
@pytest.mark.parametrize("risk_model", MODELS)
def test_the_schema_endpoint_lets_a_partner_build_valid_input(partner, risk_model):
    version = champion(risk_model)
    response = partner.get(f"/models/{risk_model}/schema/")
    assert response.status_code == 200
    body = response.json()
    assert body["version"]["number"] == version.number
    assert body["batch_max"] == scoring.SCORE_BATCH_MAX
    features = {f["name"]: f for f in body["features"]}
    assert list(features) == list(d.definition(risk_model).features)
    # A cycle built from the schema alone (each feature's lowest value or first category).
    built = {name: (f["categories"][0] if f["type"] == "category" else f["minimum"])
             for name, f in features.items()}
    assert partner.post(f"/models/{risk_model}/score/", {"cycles": [built]}).status_code == 200
    cancer = features["cancer"]
    assert "unknown" in cancer["categories"] and set(rows(risk_model)["cancer"]) <= \
        set(cancer["categories"])
    assert features["ecog"]["type"] == "integer" and features["ecog"]["nullable"] is True
    assert features["first_cycle"]["type"] == "binary"


def test_every_numeric_feature_has_a_domain_the_builder_respects():
    """The schema's ranges are checked against the feature builder: every numeric feature of
    every definition has a domain, and the features built from a cohort lie inside it."""
    numeric = {n for definition in d.DEFINITIONS.values() for n in definition.numeric_features}
    assert numeric == set(NUMERIC_DOMAINS)
    built = build_features(frames(300, seed=5, sites=4)).features
    for name, domain in NUMERIC_DOMAINS.items():
        column = built[name]
        if not domain.nullable:
            assert column.notna().all(), name
        values = column.dropna()
        assert values.between(domain.minimum, domain.maximum).all(), name
        if domain.kind in ("binary", "integer"):
            assert (values == values.round()).all(), name


def test_the_schema_categories_are_the_trained_ones():
    model = factories_model()
    schema = schema_of("cinv", model)
    categories = {s.name: set(s.categories) for s in schema.features if s.kind == "category"}
    for name in d.CINV.categorical_features:
        assert categories[name] == set(rows("cinv")[name]) | {"unknown"}, name


def factories_model() -> RiskPredictor:
    from predictions.ml.training import artifact_loads

    data, sha = factories.artifact("cinv")
    return artifact_loads(data, sha)


# -- nothing is written -------------------------------------------------------------------------


def _row_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


@pytest.mark.django_db(transaction=True)
def test_scoring_writes_nothing(partner, vocabulary):
    champion()
    partner.get("/models/")  # the token's first use is recorded before counting
    before = _row_counts()
    with CaptureQueriesContext(connection) as queries:
        response = partner.post("/models/cinv/score/",
                                {"cycles": [cycle(i=i) for i in range(50)]})
        assert partner.get("/models/cinv/card/").status_code == 200
        assert partner.get("/models/cinv/schema/").status_code == 200
    assert response.status_code == 200
    assert _row_counts() == before
    writes = [q["sql"] for q in queries.captured_queries
              if q["sql"].lstrip().upper().startswith(("INSERT", "DELETE"))]
    assert writes == []


# -- the OpenAPI schema -------------------------------------------------------------------------

DOCUMENTED = {
    "/models/": {"get": {"200", "401", "403"}},
    "/models/{risk_model}/score/": {"post": {"200", "400", "401", "403", "404", "409", "413",
                                             "415", "503"}},
    "/models/{risk_model}/schema/": {"get": {"200", "401", "403", "404", "409", "503"}},
    "/models/{risk_model}/card/": {"get": {"200", "401", "403", "404", "409", "503"}},
}


@pytest.mark.django_db
def test_the_openapi_schema_documents_every_status_and_the_inputs(client):
    schema = json.loads(client.get(f"{V1}/schema/", {"format": "json"}).content)
    validate_schema(schema)
    paths = {p.removeprefix(V1): ops for p, ops in schema["paths"].items()
             if p.startswith(f"{V1}/models/")}
    assert set(paths) == set(DOCUMENTED)
    for path, methods in DOCUMENTED.items():
        for method, statuses in methods.items():
            operation = paths[path][method]
            # 429 and 503 of the rate limits are on every operation (test_api_matrix.py).
            assert set(operation["responses"]) == statuses | {"400", "429", "503"}, path
            for status in statuses - {"200"}:
                assert operation["responses"][status]["content"]["application/json"][
                    "schema"] == {"$ref": "#/components/schemas/Error"}
            assert {"bearerAuth": []} in operation["security"]
    components = schema["components"]["schemas"]
    for definition in d.DEFINITIONS.values():
        title = definition.name.title()
        cycle_schema = components[f"{title}CycleRequest"]
        assert set(cycle_schema["properties"]) == {"ref", *definition.features}
        assert set(cycle_schema["required"]) == set(definition.features)
    assert components["CinvCycleRequest"]["properties"]["ecog"]["maximum"] == \
        NUMERIC_DOMAINS["ecog"].maximum
    assert {"no_champion", "model_unavailable"} <= set(components["ErrorCode"]["enum"])
    body = paths["/models/{risk_model}/score/"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/"
                                                          "ScoreInputRequest"}
    assert {"TierKey", "TierAction"} <= set(components)
