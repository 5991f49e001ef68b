"""A data request's way through the committee in a real browser (Playwright driving Debian's
Chromium): the investigator drafts it with the live feasibility count, two members vote, the
chair decides, the site PI opts in, and the investigator downloads from the release."""

import hashlib
from pathlib import Path

import pytest
from playwright.sync_api import expect

from research.models import DataRequest, Decision, Download, Release, SiteParticipation, Vote
from tests.registry import test_browser as registry_browser
from tests.research.conftest import submitted_patient

# The browser of the registry's own browser test: the same Chromium, settings and login.
browser_settings = registry_browser.browser_settings
page = registry_browser.page
login = registry_browser.login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_request_goes_from_draft_to_download_in_the_browser(
        vocabulary, committee_rules, site_a, site_b, alice, bob, ivan, carol, cleo, chad, priya,
        live_server, page):
    for _ in range(13):
        submitted_patient(site_a, alice)
    submitted_patient(site_a, alice, cancer="C50")
    submitted_patient(site_b, bob)
    base = live_server.url

    login(page, base, "ivan")
    page.get_by_role("link", name="Research", exact=True).click()
    page.click("#new-request")
    page.fill("#id_title", "Neutropenia under platinum doublets")
    page.fill("#id_question", "How often is neutropenia grade 3 or worse?")
    page.select_option("#id_purpose", "academic")
    page.fill("#id_access_days", "365")
    # The count follows the criteria and the sites as they are edited.
    page.wait_for_selector("#feasibility:has-text('< 11')")
    page.check("input[name=sites][value='SITE-A']")
    page.wait_for_selector("#feasibility:has-text('15')")
    page.fill("#id_cancer", "C50")
    page.wait_for_selector("#feasibility:has-text('< 11')")
    page.fill("#id_cancer", "C34")
    page.wait_for_selector("#feasibility:has-text('15')")
    page.fill("#id_diagnosis_year_from", "1800")
    page.wait_for_selector("#feasibility-error:has-text('1990')")
    page.fill("#id_diagnosis_year_from", "2020")
    expect(page.locator("#feasibility-error")).to_have_text("")
    for name in ("patient.sex", "diagnosis.cancer", "diagnosis.stage_group",
                 "adverseevent.grade"):
        page.check(f"input[name=variables][value='{name}']")
    page.click("#save")
    page.wait_for_selector("#submit-request")
    data_request = DataRequest.objects.get()
    assert data_request.criteria == {"cancer": ["C34"], "diagnosis_year_from": 2020}
    assert page.locator("#feasibility").inner_text() == "15"
    page.click("#submit-request")
    page.wait_for_selector("text=Submitted to the committee.")

    for member, choice in (("carol", "approve"), ("cleo", "approve")):
        login(page, base, member)
        page.goto(f"{base}/research/")
        page.locator("#review-queue").get_by_role("link", name=data_request.reference).click()
        page.check(f"input[name=choice][value={choice}]")
        page.click("#cast-vote")
        page.wait_for_selector("text=Your vote is recorded.")

    login(page, base, "chad")
    page.goto(f"{base}/research/")
    assert "ready to decide" in page.locator("#review-queue").inner_text()
    page.goto(f"{base}/research/requests/{data_request.pk}/")
    page.check("input[name=approved_quasi_identifiers][value='patient.sex']")
    page.fill("#id_k_anonymity", "3")
    page.click("#decide")
    page.wait_for_selector("text=Decision recorded")

    login(page, base, "priya")
    page.goto(f"{base}/research/")
    page.locator("#site-questions").get_by_role("link", name=data_request.reference).click()
    participation = SiteParticipation.objects.get(request=data_request, site=site_a)
    page.check(f"input[name='p{participation.pk}-answer'][value=opted_in]")
    page.fill(f"#id_p{participation.pk}-comment", "Glad to.")
    page.click("#answer-SITE-A-save")
    page.wait_for_selector("text=SITE-A answered.")

    # Ivan asks for a release (built by the task, eager here) and downloads its codebook.
    login(page, base, "ivan")
    page.goto(f"{base}/research/requests/{data_request.pk}/")
    page.click("#request-release")
    page.wait_for_selector("#files a:has-text('codebook.csv')")
    assert page.locator("#release-status").inner_text() == "Ready"
    with page.expect_download() as download:
        page.click("#files a:has-text('codebook.csv')")
    saved = download.value
    assert saved.suggested_filename == "codebook.csv"
    release = Release.objects.get(request=data_request)
    codebook = release.files.get(name="codebook.csv")
    assert hashlib.sha256(Path(saved.path()).read_bytes()).hexdigest() == codebook.sha256

    data_request.refresh_from_db()
    assert (data_request.status, data_request.revision) == (DataRequest.Status.APPROVED, 1)
    assert sorted(Vote.objects.values_list("member__username", "choice")) == [
        ("carol", "approve"), ("cleo", "approve")]
    decision = Decision.objects.get(request=data_request)
    assert (decision.approved_quasi_identifiers, decision.k_anonymity) == (["patient.sex"], 3)
    participation.refresh_from_db()
    assert (participation.answer, participation.answered_by, participation.comment) == (
        SiteParticipation.Answer.OPTED_IN, priya, "Glad to.")
    assert (release.status, release.requested_by, release.patients) == (
        Release.Status.READY, ivan, 13)
    assert list(Download.objects.values_list("user__username", "file__name", "channel")) == [
        ("ivan", "codebook.csv", "web")]
