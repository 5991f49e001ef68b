"""The clerk's and the monitor's day in a real browser (Playwright driving Debian's Chromium)."""

import shutil

import pytest
from django.db import connections
from django_otp.plugins.otp_totp.models import TOTPDevice

from registry.models import AdverseEvent, DataQuery, LabResult, Patient, RecordStatus
from tests.conftest import persona_password, totp_token

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_settings(settings):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def page(browser_settings, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # ordinary synchronous code between browser steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        context = browser.new_context(locale="en-US")
        context.set_default_timeout(15_000)
        yield context.new_page()
        # While Playwright marks its loop running, Django keeps this thread's database
        # connections apart from the ones it uses once the loop stops (asgiref's thread-critical
        # Local): close the test's own connection here, or it outlives the test and the test
        # database cannot be dropped at the end of the run.
        connections.close_all()
        browser.close()


def login(page, base, username):
    page.context.clear_cookies()
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", persona_password(username))
    with page.expect_navigation():
        page.click("button[type=submit]")
    if page.url.endswith(("/accounts/login/code/", "/accounts/login/enrol/")):
        # A second factor is asked for (enrolled on the first login of a monitor).
        page.fill("#id_token", totp_token(TOTPDevice.objects.get(user__username=username)))
        page.click("#verify")
    page.wait_for_url(f"{base}/")


def add(page, section_text, link_text, fields: dict, selects: dict | None = None):
    page.locator("section", has=page.locator("h2", has_text=section_text)).get_by_role(
        "link", name=link_text).click()
    for selector, value in fields.items():
        page.fill(selector, value)
    for selector, value in (selects or {}).items():
        page.select_option(selector, value)
    page.click("#save")
    page.wait_for_selector("h1 small")  # back on the chart


def test_clerk_and_monitor_do_their_day_in_the_browser(
        vocabulary, site_a, alice, mona, live_server, page):
    base = live_server.url
    login(page, base, "alice")
    assert page.locator("#count-drafts").inner_text() == "0"
    page.get_by_role("link", name="Register a patient").first.click()
    page.fill("#id_patient_no", "ZY2024000123")
    page.select_option("#id_sex", "F")
    page.fill("#id_birth_year", "1961")
    page.click("#save")
    page.wait_for_selector("h1 small")
    patient = Patient.objects.get(site=site_a)
    assert patient.registry_id in page.locator("h1").inner_text()

    add(page, "Diagnoses", "+ Add", {"#id_diagnosis_date": "2024-03-05", "#id_cancer": "肺癌",
                                     "#id_stage_group": "IVA", "#id_biomarkers": "EGFR-; ALK-"})
    assert "C34" in page.content()
    add(page, "Treatment", "+ Line", {"#id_line_no": "1", "#id_regimen": "PP",
                                      "#id_start_date": "2024-03-15"})
    add(page, "Treatment", "+ Cycle", {"#id_cycle_no": "1", "#id_start_date": "2024-03-15"})
    add(page, "Treatment", "+ Cycle", {"#id_cycle_no": "2", "#id_start_date": "2024-04-05"})
    add(page, "Treatment", "+ Drug", {"#id_drug": "DDP", "#id_dose": "75"},
        {"#id_dose_unit": "mg/m2"})
    assert "cisplatin" in page.content()

    # The grade picker shows the CTCAE definitions of the chosen term.
    page.locator("section", has=page.locator("h2", has_text="Adverse events")).get_by_role(
        "link", name="+ Add").click()
    page.fill("#id_term", "恶心")
    page.wait_for_selector("#grade-help li")
    assert "G3: Inadequate oral caloric" in page.locator("#grade-help").inner_text()
    page.select_option("#id_grade", "2")
    page.fill("#id_onset_date", "2024-03-17")
    page.select_option("#id_cycle", index=1)
    page.click("#save")
    page.wait_for_selector("h1 small")

    # Lab entry shows the canonical value and proposes the CTCAE grade.
    page.locator("section", has=page.locator("h2", has_text="Labs")).get_by_role(
        "link", name="+ Add").click()
    page.fill("#id_test", "ANC")
    page.fill("#id_unit", "/mm3")
    page.fill("#id_value", "800")
    page.fill("#id_collected_date", "2024-03-25")
    # Waits by selector, not by a script string: the page's CSP forbids evaluating strings.
    page.wait_for_selector("#lab-preview:has-text('0.8 10*9/L')")
    assert "Neutrophil count decreased G3" in page.locator("#lab-preview").inner_text()
    page.click("#save")
    page.wait_for_selector("h1 small")
    assert LabResult.objects.get(patient=patient).value_canonical == pytest.approx(0.8)

    page.click("#submit-drafts")
    page.wait_for_selector("text=records submitted")
    ae = AdverseEvent.objects.get(patient=patient)
    assert ae.status == RecordStatus.SUBMITTED

    # The monitor opens a query on the adverse event's grade.
    login(page, base, "mona")
    page.goto(f"{base}/patients/{patient.registry_id}/")
    page.locator("tr", has_text="恶心").get_by_role("link", name="Query").click()
    page.fill("#id_field", "grade")
    page.fill("#id_text", "Notes say tube feeding: grade 3?")
    page.click("#save")
    page.wait_for_selector("text=Query opened.")

    # The clerk corrects the grade, with a reason, and answers.
    login(page, base, "alice")
    assert page.locator("#count-queries").inner_text() == "1"
    page.goto(f"{base}/patients/{patient.registry_id}/")
    page.locator("tr", has_text="恶心").get_by_role("link", name="Edit").click()
    page.select_option("#id_grade", "3")
    page.fill("#id_change_reason", "Tube feeding documented on day 3")
    page.click("#save")
    page.wait_for_selector("text=Saved.")
    page.get_by_role("link", name="Answer").first.click()
    page.fill("#id_answer", "Corrected to grade 3.")
    page.click("#save")
    page.wait_for_selector("h1 small")

    # The monitor closes the query, verifies with a password and locks.
    login(page, base, "mona")
    page.goto(f"{base}/patients/{patient.registry_id}/")
    page.locator("li.query").get_by_role("button", name="Close").click()
    page.wait_for_selector("h1 small")
    page.locator("tr", has_text="恶心").get_by_role("link", name="Verify").click()
    page.fill("#id_password", "wrong")
    page.click("#save")
    page.wait_for_selector("text=The password is not correct")
    page.fill("#id_password", persona_password("mona"))
    page.click("#save")
    page.wait_for_selector("text=Done.")
    page.locator("tr", has_text="恶心").get_by_role("link", name="Lock").click()
    page.fill("#id_password", persona_password("mona"))
    page.click("#save")
    page.wait_for_selector("text=Done.")

    ae.refresh_from_db()
    assert (ae.status, ae.grade) == (RecordStatus.LOCKED, 3)
    assert DataQuery.objects.get(automatic=False).status == DataQuery.Status.CLOSED
    reasons = list(ae.history.values_list("history_change_reason", flat=True))
    assert "Tube feeding documented on day 3" in reasons
    # Locked: the edit link is gone from the row.
    assert page.locator("tr", has_text="恶心").get_by_role("link", name="Edit").count() == 0


def test_the_second_save_is_refused_in_the_browser(vocabulary, site_a, alice, mona,
                                                   live_server, page):
    from tests.registry import factories

    patient = factories.full_record(site_a, alice)
    ae = AdverseEvent.objects.get(patient=patient)
    base = live_server.url
    login(page, base, "alice")
    page.goto(f"{base}/patients/{patient.registry_id}/adverseevent/{ae.pk}/edit/")
    # Meanwhile the monitor saves the same record.
    from registry.services import clinical

    clinical.adverse_event_record(
        patient=patient, term=ae.ae_term.text, grade=3, onset_date=ae.onset_date,
        cycle=ae.cycle, instance=ae, expected_version=ae.version, acting_user=mona)
    page.select_option("#id_grade", "1")
    page.click("#save")
    page.wait_for_selector(".stale")
    assert "mona" in page.locator(".stale").inner_text()
    assert page.locator("#id_grade").input_value() == "1"  # alice's input is still there
    ae.refresh_from_db()
    assert ae.grade == 3


# A hospital's export as its HIS writes it: GB18030, Chinese words, its own drug names.
EXPORT = {
    "patients.csv": "patient_no,sex,birth_year,department\nZY0001,男,1958,肿瘤内科\n"
                    "ZY0002,女,1963,肿瘤内科\n",
    "diagnoses.csv": "patient_no,diagnosis_date,cancer,stage_group\nZY0001,2024-02-20,肺癌,IVA\n"
                     "ZY0002,2024-03-01,肺癌,IIIB\n",
    "regimens.csv": "patient_no,line_no,regimen,start_date\nZY0001,1,PP,2024-03-01\n"
                    "ZY0002,1,DP,2024-03-10\n",
    "cycles.csv": "patient_no,line_no,cycle_no,start_date\nZY0001,1,1,2024-03-01\n"
                  "ZY0002,1,1,2024-03-10\n",
    "drugs.csv": "patient_no,line_no,cycle_no,drug,dose,dose_unit\n"
                 "ZY0001,1,1,顺铂,75,mg/m2\nZY0001,1,1,{pemetrexed},500,mg/m2\n"
                 "ZY0002,1,1,{docetaxel},75,mg/m2\nZY0002,1,1,顺铂,75,mg/m2\n"
                 "ZY0002,1,1,{house},8,mg\n",
    "adverse_events.csv": "patient_no,term,grade,onset_date,line_no,cycle_no\n"
                          "ZY0001,恶心,2级,2024-03-03,1,1\n",
    "labs.csv": "patient_no,collected_date,test,value,unit,line_no,cycle_no\n"
                "ZY0002,2024-03-20,ANC,800,/mm3,1,1\n",
    "followups.csv": "patient_no,followup_date,vital_status\nZY0001,2024-09-01,存活\n",
}
WORDS = {"pemetrexed": "注射用培美曲塞二钠", "docetaxel": "多西他赛注射液",
         "house": "止吐合剂(院内)"}


@pytest.mark.redis
@pytest.mark.postgres
def test_monitor_takes_a_hospital_export_from_upload_to_imported(
        vocabulary, site_a, mona, live_server, page, redis_worker, tmp_path, settings):
    import zipfile

    from registry.models import DrugAdministration, ImportBatch, TreatmentLine

    settings.IMPORT_UPLOAD_DIR = tmp_path / "uploads"
    archive = tmp_path / "肿瘤科导出202409.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, text in EXPORT.items():
            handle.writestr(name, text.format(**WORDS).encode("gb18030"))
    base = live_server.url
    login(page, base, "mona")
    page.select_option("select[name=language]", "zh-hans")
    page.wait_for_selector("html[lang=zh-hans]")

    # Upload: a worker imports it while the page polls; it stops on the hospital's own words.
    page.goto(f"{base}/imports/")
    page.set_input_files("input[type=file]", str(archive))
    page.click("#upload")
    page.wait_for_selector("text=需要映射的本院术语", timeout=60_000)
    batch = ImportBatch.objects.get()
    assert batch.status == ImportBatch.Status.NEEDS_MAPPING
    assert sorted(w["text"] for w in batch.unmapped) == sorted([*WORDS.values(), "DP"])
    for word in WORDS.values():
        assert word in page.locator("table").last.inner_text()
    assert DrugAdministration.objects.count() == 0  # nothing written yet

    # The review queue: approve a top suggestion, bulk-approve another, search for a third,
    # and mark the last not mappable.
    page.click("text=术语映射审核")
    page.wait_for_selector("tr.term")
    pemetrexed = page.locator("tr.term", has_text=WORDS["pemetrexed"])
    assert "pemetrexed" in pemetrexed.locator("ul.suggestions li").first.inner_text()
    # No row is stored yet: the queue shows where the word waits in the uploaded extract.
    assert f"导入 #{batch.pk} · drugs.csv 第" in pemetrexed.inner_text()
    pemetrexed.locator("ul.suggestions li").first.get_by_role("button", name="批准").click()
    page.wait_for_selector(f"tr.term:has-text('{WORDS['docetaxel']}')")
    assert page.locator("tr.term", has_text=WORDS["pemetrexed"]).count() == 0
    docetaxel = page.locator("tr.term", has_text=WORDS["docetaxel"])
    assert "docetaxel" in docetaxel.locator("ul.suggestions li").first.inner_text()
    docetaxel.locator("input[type=checkbox]").check()
    page.get_by_role("button", name="批准所选术语的首选建议").click()
    page.wait_for_selector("text=已批准 1 条映射。")
    house = page.locator("tr.term", has_text=WORDS["house"])
    search = house.locator("input[name=concept_code]")
    search.fill("ondansetron")
    page.wait_for_selector("datalist option[value='ATC:A04AA01']", state="attached")
    search.fill("ATC:A04AA01")
    house.get_by_role("button", name="映射", exact=True).click()
    page.wait_for_selector("tr.term:has-text('DP') >> nth=0")
    assert page.locator("tr.term", has_text=WORDS["house"]).count() == 0
    # The hospital's own regimen name has no standard concept: stored as written, with a why.
    dp = page.locator("tr.term", has_text="DP")
    dp.locator("input[name=reason]").fill("本院自定方案（多西他赛+顺铂），标准词表无此方案")
    dp.get_by_role("button", name="无法映射").click()
    page.wait_for_selector("text=所有术语均已映射。")

    # Back to the import: resume without uploading again, and watch it finish.
    page.goto(f"{base}/imports/{batch.pk}/")
    page.click("#resume")
    page.wait_for_selector("#stage:has-text('已导入')", timeout=60_000)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.IMPORTED and batch.uploaded_by == mona
    assert batch.counts["drugs"]["created"] == 5
    codes = dict(DrugAdministration.objects.values_list("drug_term__text", "drug__code"))
    assert codes == {"顺铂": "L01XA01", WORDS["pemetrexed"]: "L01BA04",
                     WORDS["docetaxel"]: "L01CD02", WORDS["house"]: "A04AA01"}
    regimens = dict(TreatmentLine.objects.values_list("regimen_term__text", "regimen__code"))
    assert regimens == {"PP": "REG-PEM-CIS", "DP": None}
