"""Extraction from the registry: one row per cycle through the bulk reader, targets that match
the recorded adverse events, and the site of every cycle."""

from __future__ import annotations

import pandas as pd
import pytest
from django.core.management import call_command
from django.utils import timezone

from predictions.extract import feature_set_extract, training_data_extract
from predictions.ml import definitions as d
from registry.audit import audited_delete
from registry.models import AdverseEvent, Cycle

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("vocabulary")]


def _seed(tmp_path):
    truth = tmp_path / "truth.csv.gz"
    call_command("seed_demo", "--patients", "250", "--sites", "3", "--seed", "8",
                 "--truth", str(truth))
    return pd.read_csv(truth)


@pytest.mark.django_db(transaction=True)
def test_extract_returns_one_row_per_cycle_with_targets_matching_the_adverse_events(tmp_path):
    truth = _seed(tmp_path)
    features = feature_set_extract()
    cycles = pd.DataFrame(list(Cycle.objects.values("id", "site__code", "cycle_no")))
    assert sorted(features.features.index) == sorted(cycles["id"])
    assert features.meta["site"].to_dict() == cycles.set_index("id")["site__code"].to_dict()

    cinv = set(AdverseEvent.objects.filter(ae__code__in=["Nausea", "Vomiting"], grade__gte=2)
               .values_list("cycle_id", flat=True))
    neut = set(AdverseEvent.objects.filter(ae__code="Febrile neutropenia")
               .values_list("cycle_id", flat=True)) | set(AdverseEvent.objects.filter(
                   ae__code="Neutrophil count decreased", grade__gte=3)
               .values_list("cycle_id", flat=True))
    for name, expected in (("cinv", cinv), ("neutropenia", neut)):
        X, y, groups, meta = training_data_extract(name, features=features)
        assert list(X.columns) == list(d.DEFINITIONS[name].features)
        assert len(X) == len(y) == len(groups) == len(meta) == len(cycles)
        assert set(y.index[y == 1]) == expected
        assert 0 < y.mean() < 1
        # The truth file's events are the same cycles (joined on the natural key).
        joined = meta.merge(truth, on=["registry_id", "line_no", "cycle_no"],
                            validate="one_to_one")
        assert len(joined) == len(meta)
        assert (joined[f"y_{name}"].to_numpy() == y.loc[meta.index].to_numpy()).all()
    assert set(features.meta["site"]) == set(cycles["site__code"])
    assert features.features["regimen"].ne("unknown").all()


@pytest.mark.django_db(transaction=True)
def test_extract_reads_the_registry_as_it_stood_at_the_snapshot(tmp_path):
    _seed(tmp_path)
    before = timezone.now()
    victim = Cycle.objects.order_by("id").last()
    victim_id = victim.pk
    audited_delete(victim, acting_user=None, reason="entered twice")
    assert not Cycle.objects.filter(pk=victim_id).exists()
    then = feature_set_extract(as_of=before)
    now = feature_set_extract()
    assert victim_id in then.features.index
    assert victim_id not in now.features.index
    assert len(then.features) == len(now.features) + 1
