"""The risk models' training data, read from the registry through the bulk reader.

One COPY query per record kind (registry.selectors.bulk.records_frame, every site, as the
registry stood at a snapshot time), concept ids replaced by their codes, then the pure feature
builder (predictions.ml.features). Nothing is read row by row.

    python manage.py shell -c "from predictions.extract import training_data_dump as d; d('F')"
    # pickles {risk model: (X, y, groups, meta)} to F, for python -m predictions.ml.quality
"""

from __future__ import annotations

import datetime as dt
import pickle

import pandas as pd
from django.utils import timezone

from predictions.ml import definitions
from predictions.ml.features import FeatureSet, build_features
from registry.models import Concept, Site
from registry.selectors.bulk import ALL_SITES, records_frame

# Record kind -> (frame name for the feature builder, columns read, concept id -> code column).
_KINDS = {
    "cycle": ("cycles", ["patient_id", "line_id", "cycle_no", "start_date", "length_days"],
              {}),
    "treatmentline": ("lines", ["line_no", "regimen_id"], {"regimen_id": "regimen_code"}),
    "patient": ("patients", ["registry_id", "sex", "birth_year"], {}),
    "diagnosis": ("diagnoses", ["patient_id", "diagnosis_date", "cancer_id", "stage_group",
                                "ecog"], {"cancer_id": "cancer_code"}),
    "drugadministration": ("drugs", ["cycle_id", "day", "drug_id", "purpose"],
                           {"drug_id": "drug_code"}),
    "adverseevent": ("adverse_events", ["patient_id", "cycle_id", "ae_id", "grade",
                                        "onset_date"], {"ae_id": "ae_code"}),
    "labresult": ("labs", ["patient_id", "lab_id", "value_canonical", "collected_date"],
                  {"lab_id": "lab_code"}),
}


def registry_frames(*, as_of: dt.datetime | None = None) -> dict[str, pd.DataFrame]:
    """The frames the feature builder reads, for every site, as of `as_of` (default: now)."""
    as_of = as_of or timezone.now()
    codes = dict(Concept.objects.values_list("id", "code"))
    sites = dict(Site.objects.values_list("id", "code"))
    frames = {}
    for kind, (name, columns, coded) in _KINDS.items():
        frame = records_frame(kind, sites=ALL_SITES, as_of=as_of, columns=columns)
        for id_column, code_column in coded.items():
            frame[code_column] = frame[id_column].map(codes)
        frames[name] = frame
    frames["cycles"]["site"] = frames["cycles"]["site_id"].map(sites)
    return frames


def feature_set_extract(*, as_of: dt.datetime | None = None, same_day_labs: bool = False
                        ) -> FeatureSet:
    """Every cycle's features and targets (all risk models), as of `as_of` (default: now);
    meta also carries registry_id, line_no and cycle_no, the cycle's natural key.
    `same_day_labs`: see predictions.ml.features.build_features."""
    frames = registry_frames(as_of=as_of)
    features = build_features(frames, same_day_labs=same_day_labs)
    patients = frames["patients"].set_index("id")["registry_id"]
    features.meta["registry_id"] = features.meta["patient_id"].map(patients)
    features.meta["line_no"] = features.features["line_no"].astype(int)
    features.meta["cycle_no"] = features.features["cycle_no"].astype(int)
    return features


def training_data_extract(model: str, *, as_of: dt.datetime | None = None,
                          features: FeatureSet | None = None
                          ) -> tuple[pd.DataFrame, pd.Series, pd.Series, pd.DataFrame]:
    """(X, y, groups, meta) of one risk model: features, target, site code, and the cycle's
    identity (patient_id, line_id, start_date, site, registry_id, line_no, cycle_no), indexed
    by cycle id. Pass `features` to reuse one extraction for both models."""
    features = features or feature_set_extract(as_of=as_of)
    X, y, groups = features.matrix(definitions.definition(model))
    return X, y, groups, features.meta.copy()


def training_data_dump(path: str, *, as_of: dt.datetime | None = None,
                       same_day_labs: bool = False) -> int:
    """Pickle {risk model: (X, y, groups, meta)} to `path` (for predictions.ml.quality); returns
    the number of cycles."""
    extracted = feature_set_extract(as_of=as_of, same_day_labs=same_day_labs)
    data = {name: training_data_extract(name, features=extracted)
            for name in definitions.DEFINITIONS}
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return len(extracted.features)
