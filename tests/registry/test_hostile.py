"""The hostile walk: every URL of the registry (read from the resolver, so a new URL is walked
without touching this file) with hostile values in every path parameter, query parameter and
form field, for each persona. Any 5xx fails the test, listing persona, method, URL, field and
value.

Sampling keeps it within a few minutes on two cores: every persona GETs every URL, with its
share of the hostile values in the query string (the clerk and the monitor all of them); each
path parameter takes every hostile value once; every form found on the pages of the clerk and
the monitor gets every hostile value in every field (the other fields valid), and each other
persona posts each of those forms once.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern

from registry.models import DataQuery, ImportBatch, Patient
from registry.services import workflow
from registry.views.kinds import KINDS
from tests.registry import factories
from tests.registry.formdata import Form, forms_of

pytestmark = [pytest.mark.usefixtures("vocabulary"), pytest.mark.postgres,
              pytest.mark.django_db(transaction=True)]

HOSTILE = {
    "NUL": "a\x00b",
    "1 MB": "x" * 1_000_000,
    "negative": "-1",
    "non-numeric": "abc",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "1e308": "1e308",
    "40 digits": "9" * 40,
    "emoji": "🧪💊👩‍⚕️",
    "RTL": "\u202eمرحبا\u202c עברית",
    "far future": "2999-01-01",
    "empty": "",
}
# Query parameters read by some view; a page's own GET forms add theirs.
QUERY_PARAMS = ["q", "page", "domain", "site", "status", "department", "cancer", "format",
                "field", "term", "test", "unit", "value", "next"]
# Forms whose POST ends the session or changes the language of the walk.
NOT_POSTED = ("/accounts/logout/", "/admin/logout/")


@dataclass
class Failure:
    persona: str
    method: str
    url: str
    field: str
    value: str
    status: int

    def __str__(self) -> str:
        url = self.url if len(self.url) < 160 else self.url[:160] + "..."
        return (f"{self.status} {self.method} {url} as {self.persona}: "
                f"{self.field}={self.value}")


def _route_patterns():
    """(name, route template with {param} holes, param names) for every URL of the site."""
    out = []

    def walk(patterns, prefix):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
                continue
            assert isinstance(p, URLPattern)
            route = str(p.pattern)
            if isinstance(p.pattern, RegexPattern):
                route = route.lstrip("^").rstrip("$")
                names = []

                def group(match, names=names):
                    names.append(f"group{len(names)}")
                    return "{" + names[-1] + "}"

                route = re.sub(r"\([^)]*\)", group, route)
            else:
                names = list(p.pattern.converters)
                route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
            callback = getattr(p.callback, "__qualname__", "") or repr(p.callback)
            # Patterns served by the same view code (the admin's pages of each model) form a
            # group: all are walked, one of them with every hostile path value.
            group_key = (prefix.split("/")[0], callback.split(".")[-1], len(names))
            out.append((p.name or route, prefix + route, names, group_key))

    walk(get_resolver().url_patterns, "")
    return out


def _real_values(patient: Patient) -> list[dict[str, str]]:
    """Real path parameters for a patient's pages: each kind with its record's id."""
    query = DataQuery.objects.filter(patient=patient).order_by("pk").first()
    batch = ImportBatch.objects.filter(site=patient.site).order_by("pk").first()
    base = {"registry_id": patient.registry_id, "query_id": str(query.pk if query else 1),
            "batch_id": str(batch.pk if batch else 1)}
    combos = [{**base, "kind": "patient", "pk": str(patient.pk)}]
    for name, spec in KINDS.items():
        row = spec.model.objects.filter(patient=patient).order_by("pk").first()
        combos.append({**base, "kind": name, "pk": str(row.pk if row else 1)})
    return combos


ACTIONS = ["verify", "lock", "unlock", "answer", "close"]


def _urls(patterns, patient: Patient) -> list[tuple[str, str, tuple]]:
    """(pattern name, URL, group) with real values: every kind, and every action with one
    kind each (the kinds take turns)."""
    urls, seen = [], set()
    combos = _real_values(patient)
    for name, route, params, group in patterns:
        if "action" in params:
            choices = [{**combos[i % len(combos)], "action": action}
                       for i, action in enumerate(ACTIONS)]
        else:
            choices = combos
        for combo in choices:
            url = "/" + route.format(**{p: combo.get(p, "1") for p in params})
            if url not in seen:
                seen.add(url)
                urls.append((name, url, group))
    return urls


class Walker:
    def __init__(self, patterns) -> None:
        self.patterns = patterns
        self.failures: list[Failure] = []
        self.requests = 0
        self.started = time.monotonic()

    def check(self, persona, method, url, field, value_name, response) -> None:
        self.requests += 1
        if response.status_code >= 500:
            self.failures.append(Failure(persona, method, url, field, value_name,
                                         response.status_code))

    def get(self, client, persona, url, params=None, field="", value_name="") -> object:
        response = client.get(url, params or {})
        self.check(persona, "GET", url, field, value_name, response)
        return response

    def post(self, client, persona, url, data, field="", value_name=""):
        response = client.post(url, data)
        self.check(persona, "POST", url, field, value_name, response)
        return response


def _query_fuzz(walker: Walker, client, persona, url, page, value_names) -> None:
    names = set(QUERY_PARAMS)
    for form in forms_of(getattr(page, "text", "") if _is_html(page) else ""):
        if form.method == "get":
            names |= set(form.values) | set(form.options)
    for value_name in value_names:
        value = HOSTILE[value_name]
        response = walker.get(client, persona, url, {n: value for n in names},
                              field="(all query parameters)", value_name=value_name)
        if response.status_code >= 500:  # name the parameter
            for n in sorted(names):
                walker.get(client, persona, url, {n: value}, field=n, value_name=value_name)


def _is_html(response) -> bool:
    return response.get("Content-Type", "").startswith("text/html")


def _path_fuzz(walker: Walker, client, persona, patterns, patient) -> None:
    """Each path parameter of one pattern of each group takes every hostile value, the others
    real."""
    combo = _real_values(patient)[1]  # a diagnosis: a kind with a form and a record
    groups = set()
    for _name, route, params, group in patterns:
        if group in groups:
            continue
        groups.add(group)
        for param in params:
            for value_name, value in HOSTILE.items():
                values = {p: combo.get(p, "verify" if p == "action" else "1") for p in params}
                values[param] = value.replace("/", "")
                if not values[param]:
                    continue  # an empty segment is another URL, walked on its own
                walker.get(client, persona, "/" + route.format(**values), field=param,
                           value_name=value_name)


def _form_key(page_url: str, form: Form) -> tuple:
    hidden_action = form.values.get("action", "")
    kind = next((k for k in ("patient", *KINDS) if f"/{k}/" in page_url), "")
    target = form.action or re.sub(r"/\d+/", "/N/", page_url)
    if form.action:
        kind = ""
    return (target, kind, hidden_action, tuple(sorted(set(form.values) | set(form.options))))


def _collect_forms(pages: dict[str, object]) -> dict[tuple, tuple[str, Form]]:
    found: dict[tuple, tuple[str, Form]] = {}
    for url, response in pages.items():
        if not _is_html(response):
            continue
        for form in forms_of(response.text):
            if form.method != "post" or (form.action or url) in NOT_POSTED:
                continue
            found.setdefault(_form_key(url, form), (url, form))
    return found


def _fuzzed_by(key: tuple) -> str:
    """The clerk fills the record forms; the monitor signs, queries and maps."""
    target, _kind, _action, _fields = key
    monitor = ("/verify/", "/lock/", "/unlock/", "/query/", "/queries/", "/mapping")
    return "mona" if any(m in target for m in monitor) else "alice"


def _form_data(form: Form) -> dict[str, str]:
    data = dict(form.values)
    for name, options in form.options.items():
        if name not in data and options:
            data[name] = next((o for o in options if o), options[0])
    return data


def _edit_values(pages: dict[str, object]) -> dict[str, dict[str, str]]:
    """Each kind's values as its edit page shows them: valid input for its new-record form,
    so that a hostile value in one field reaches the service, not only the empty-field check."""
    out = {}
    for url, response in pages.items():
        match = re.search(r"/(\w+)/\d+/edit/$", url)
        if match and _is_html(response):
            form = next((f for f in forms_of(response.text)
                         if f.method == "post" and not f.action), None)
            if form is not None:
                out[match.group(1)] = {k: v for k, v in _form_data(form).items()
                                       if k not in ("version", "change_reason")}
    return out


def _post_fuzz(walker: Walker, client, persona, forms, edit_values) -> None:
    for (_target, _kind, _action, fields), (page_url, form) in forms.items():
        action = form.action or page_url
        data = _form_data(form)
        new = re.search(r"/(\w+)/new/$", page_url)
        if new and new.group(1) in edit_values:
            data = {**data, **{k: v for k, v in edit_values[new.group(1)].items()
                               if not data.get(k)}}
        for field in fields:
            if field == "csrfmiddlewaretoken":
                continue
            for value_name, value in HOSTILE.items():
                response = walker.post(client, persona, action, {**data, field: value},
                                       field=field, value_name=value_name)
                if response.status_code in (301, 302) and not form.action:
                    # Saved: the page's form now carries the new version.
                    fresh = client.get(page_url)
                    if fresh.status_code == 200:
                        same = [f for f in forms_of(fresh.text)
                                if f.method == "post" and not f.action]
                        if same:
                            data = _form_data(same[-1])


@pytest.fixture
def quiet_request_log():
    """Django logs every 4xx with its URL; thousands of megabyte URLs would be kept in memory
    by pytest's log capture. The walk reads status codes instead."""
    loggers = [logging.getLogger(n) for n in ("django.request", "django.security")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
def seeded(site_a, site_b, alice, bob, mona, carol, pat, ada):
    a_draft = factories.full_record(site_a, alice)
    a_submitted = factories.full_record(site_a, alice)
    workflow.patient_submit(a_submitted, acting_user=alice)
    b_draft = factories.full_record(site_b, bob)
    return {"alice": a_draft, "mona": a_submitted, "bob": b_draft}


def test_no_url_answers_a_hostile_input_with_a_server_error(quiet_request_log, seeded, alice,
                                                            bob, mona, carol, pat, ada):
    patterns = _route_patterns()
    assert any(name == "record_edit" for name, _r, _p, _g in patterns)
    walker = Walker(patterns)
    personas = {"alice (clerk A)": alice, "mona (monitor A)": mona, "bob (clerk B)": bob,
                "ada (admin)": ada, "carol (committee)": carol, "pat (partner)": pat,
                "anonymous": None}
    names = list(HOSTILE)
    posted_forms: dict[tuple, tuple[str, Form]] = {}
    for index, (label, user) in enumerate(personas.items()):
        client = Client(raise_request_exception=False)
        if user is not None:
            client.force_login(user)
        patient = seeded.get(label.split()[0], seeded["alice"])
        thorough = label.split()[0] in ("alice", "mona")
        # Every URL with real parameters, and with hostile query strings.
        pages, groups = {}, set()
        for position, (_name, url, group) in enumerate(_urls(patterns, patient)):
            if group[0] == "admin" and (position + index) % len(personas):
                continue  # the admin's pages (owned elsewhere): each URL by one persona
            pages[url] = walker.get(client, label, url)
            if thorough and group not in groups:
                share = names  # every value in every query parameter
            else:  # the others take turns: each value reaches each URL from some persona
                share = [names[(position + index) % len(names)]]
            groups.add(group)
            _query_fuzz(walker, client, label, url, pages[url], share)
        if label.startswith("alice"):
            _path_fuzz(walker, client, label, patterns, patient)
        if thorough:
            forms = {k: v for k, v in _collect_forms(pages).items() if k not in posted_forms
                     and _fuzzed_by(k) == label.split()[0]}
            posted_forms.update(forms)
            _post_fuzz(walker, client, label, forms, _edit_values(pages))
        # Forms found on others' pages, posted once as they are (a refusal, never a 5xx).
        for (_t, _k, _a, _f), (page_url, form) in list(posted_forms.items()):
            walker.post(client, label, form.action or page_url, _form_data(form),
                        field="(as found)", value_name="valid")
    elapsed = time.monotonic() - walker.started
    unexpected = walker.failures
    assert not unexpected, (f"{len(unexpected)} server errors in {walker.requests} requests:\n"
                            + "\n".join(map(str, unexpected[:60])))
    assert walker.requests > 2000
    assert posted_forms, "no form was found to post"
    print(f"hostile walk: {walker.requests} requests, {len(posted_forms)} forms, "
          f"{elapsed:.0f} s")
