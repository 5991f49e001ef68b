"""Site-term frequencies kept by imports as they go (proportional to the extract): after an
import, a correction, a wait for a mapping, its resume and a re-coding, the counts equal a full
recount done here independently of the service; the full recount stays as the repair."""

import collections

import pytest
from django.db.models import Count

from registry.models import (
    AdverseEvent,
    Concept,
    Diagnosis,
    DrugAdministration,
    ImportBatch,
    LabResult,
    SiteTerm,
    TreatmentLine,
)
from registry.services.imports import batch_resume, extract_import
from registry.services.mapping import mapping_approve
from registry.services.mapping_files import mappings_import
from registry.services.terminology import site_term_frequencies_refresh_all
from tests.registry import factories
from tests.registry.test_imports import AES, DRUGS, GOOD, LABS, REGIMENS, run, write

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary")]

# Where each domain's words are used, written out here rather than taken from the service.
USES = [
    ("condition", Diagnosis, "cancer_term"),
    ("morphology", Diagnosis, "morphology_term"),
    ("regimen", TreatmentLine, "regimen_term"),
    ("drug", DrugAdministration, "drug_term"),
    ("adverse_event", AdverseEvent, "ae_term"),
    ("lab", LabResult, "test_term"),
    ("unit", LabResult, "unit_term"),
]


def recount(site) -> dict[tuple[str, str], int]:
    """Every word of the site: the stored rows using it, plus the rows of the site's imports
    waiting in "needs mapping" for it."""
    terms = {t.pk: (t.domain, t.text) for t in SiteTerm.objects.filter(site=site)}
    counts = collections.Counter({key: 0 for key in terms.values()})
    for domain, model, field in USES:
        rows = (model.objects.filter(site=site, **{f"{field}__isnull": False})
                .values_list(field).annotate(n=Count("id")))
        for term_id, n in rows:
            if terms[term_id][0] == domain:
                counts[terms[term_id]] += n
    for batch in ImportBatch.objects.filter(site=site, dry_run=False,
                                            status=ImportBatch.Status.NEEDS_MAPPING):
        for word in batch.unmapped:
            counts[(word["domain"], word["text"])] += word["rows"]
    return dict(counts)


def stored(site) -> dict[tuple[str, str], int]:
    return {(t.domain, t.text): t.frequency for t in SiteTerm.objects.filter(site=site)}


@pytest.mark.django_db(transaction=True)
def test_an_import_adds_its_rows_to_its_sites_words_only(tmp_path, site_a, site_b, alice, bob):
    batch = run(site_a, write(tmp_path / "a", GOOD), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors or batch.unmapped
    frequencies = stored(site_a)
    assert frequencies == recount(site_a)
    assert (frequencies[("drug", "DDP")], frequencies[("drug", "顺铂")],
            frequencies[("lab", "ANC")], frequencies[("unit", "/mm3")]) == (1, 1, 2, 1)
    before_b = stored(site_b)
    other = run(site_b, write(tmp_path / "b", dict(GOOD, **{"labs.csv": LABS + LABS.replace(
        "2024-03-25", "2024-03-26").replace("2024-04-15", "2024-04-16").split("\n", 1)[1]})),
        bob)
    assert other.status == ImportBatch.Status.IMPORTED, other.errors or other.unmapped
    assert stored(site_a) == frequencies  # another site's import leaves A's words alone
    assert stored(site_b) == recount(site_b) != before_b
    assert stored(site_b)[("lab", "ANC")] == 4


def test_a_correction_moves_counts_from_the_old_word_to_the_new(tmp_path, site_a, alice):
    run(site_a, write(tmp_path / "a", GOOD), alice)
    # The regimen and one lab unit change on stored rows (updates), one adverse event is new.
    corrected = dict(GOOD, **{
        "regimens.csv": REGIMENS.replace(",PP,", ",AP,"),
        "labs.csv": LABS.replace("ANC,800,/mm3", "ANC,0.8,10^9/L"),
        "adverse_events.csv": AES + "H001,恶心,1级,2024-04-08,N,1,2\n"})
    batch = run(site_a, write(tmp_path / "b", corrected), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors or batch.unmapped
    assert batch.counts["regimens"]["updated"] == 1 and batch.counts["labs"]["updated"] == 1
    assert batch.counts["adverse_events"]["created"] == 1
    frequencies = stored(site_a)
    assert frequencies == recount(site_a)
    assert (frequencies[("regimen", "PP")], frequencies[("regimen", "AP")]) == (0, 1)
    assert (frequencies[("unit", "/mm3")], frequencies[("unit", "10^9/L")]) == (0, 2)
    assert frequencies[("adverse_event", "恶心")] == 2
    again = run(site_a, write(tmp_path / "c", corrected), alice)
    assert again.status == ImportBatch.Status.IMPORTED
    assert stored(site_a) == frequencies  # nothing written, nothing counted


def test_waiting_rows_count_until_the_import_ends_and_then_its_stored_rows(
        tmp_path, site_a, alice, mona):
    drugs = DRUGS.replace("DDP", "本院化疗药A")
    folder = write(tmp_path / "x", dict(GOOD, **{"drugs.csv": drugs}))
    checked = run(site_a, folder, alice, dry_run=True)
    assert checked.status == ImportBatch.Status.NEEDS_MAPPING
    assert SiteTerm.objects.filter(site=site_a, text="本院化疗药A").count() == 0
    batch = run(site_a, folder, alice)
    assert batch.status == ImportBatch.Status.NEEDS_MAPPING
    assert stored(site_a) == recount(site_a)
    assert stored(site_a)[("drug", "本院化疗药A")] == 1
    batch = batch_resume(batch=batch, acting_user=alice)  # no longer waiting: not counted
    assert batch.status == ImportBatch.Status.RECEIVED
    assert stored(site_a) == recount(site_a)
    assert stored(site_a)[("drug", "本院化疗药A")] == 0
    mapping = tmp_path / "map.csv"
    mapping.write_text("domain,local_term,vocabulary,code\ndrug,本院化疗药A,ATC,L01XA02\n",
                       encoding="utf-8")
    mappings_import(site=site_a, path=mapping, acting_user=mona)
    batch = extract_import(batch)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors or batch.unmapped
    assert stored(site_a) == recount(site_a)
    assert stored(site_a)[("drug", "本院化疗药A")] == 1


def test_recoding_after_a_mapping_change_leaves_the_counts_right(tmp_path, site_a, alice,
                                                                 mona):
    run(site_a, write(tmp_path / "a", GOOD), alice)
    frequencies = stored(site_a)
    ddp = SiteTerm.objects.get(site=site_a, domain="drug", text="DDP")
    mapping_approve(site_term=ddp, concept=Concept.objects.get(code="L01XA02"),
                    acting_user=mona, reason="the site's DDP was carboplatin")
    assert DrugAdministration.objects.get(drug_term=ddp).drug.code == "L01XA02"
    assert stored(site_a) == recount(site_a) == frequencies


def test_a_count_gone_wrong_never_fails_an_import_and_the_recount_repairs_it(
        tmp_path, site_a, alice):
    factories.full_record(site_a, alice)  # rows entered in forms are counted by the recount
    run(site_a, write(tmp_path / "a", GOOD), alice)
    SiteTerm.objects.filter(site=site_a, domain="regimen", text="PP").update(frequency=0)
    batch = run(site_a, write(tmp_path / "b", dict(GOOD, **{
        "regimens.csv": REGIMENS.replace(",PP,", ",AP,")})), alice)
    assert batch.status == ImportBatch.Status.IMPORTED, batch.errors
    assert stored(site_a)[("regimen", "PP")] == 0  # not below zero
    assert stored(site_a) != recount(site_a)
    assert site_term_frequencies_refresh_all() > 0
    assert stored(site_a) == recount(site_a)
    assert stored(site_a)[("regimen", "PP")] == 1  # the form's line
