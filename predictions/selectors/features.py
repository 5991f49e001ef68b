"""Features of the cycles of some sites, or of some patients, as the registry stands at a
snapshot.

A cycle's features read only its patient's records (the patient, diagnoses, lines, cycles,
drugs, adverse events and labs; nothing of other patients), and a patient's records all carry
the patient's site. Scoring after a save therefore reads the saved patients' records (one COPY
per kind, narrowed to them), not their whole sites; an import, which may touch every patient
of a site, reads the site. Training reads every site through
predictions.extract.feature_set_extract.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from predictions import extract
from predictions.ml.features import FeatureSet, build_features
from registry.models import Concept, Site
from registry.selectors.bulk import ALL_SITES, records_frame


def feature_set_for_sites(site_ids: Iterable[int] | None, *, as_of: dt.datetime,
                          patient_ids: Iterable[int] | None = None) -> FeatureSet:
    """Every cycle of the sites (None: all) with its features, as of `as_of`; with
    `patient_ids`, only those patients' cycles (their records alone are read)."""
    if site_ids is None and patient_ids is None:
        return extract.feature_set_extract(as_of=as_of)
    sites = ALL_SITES if site_ids is None else sorted(set(site_ids))
    patients = None if patient_ids is None else sorted(set(patient_ids))
    codes = dict(Concept.objects.values_list("id", "code"))
    site_codes = dict(Site.objects.values_list("id", "code"))
    frames = {}
    # The kinds, columns and coded columns the training extraction reads (one definition).
    for kind, (name, columns, coded) in extract._KINDS.items():
        frame = records_frame(kind, sites=sites, as_of=as_of, columns=columns,
                              patients=patients)
        for id_column, code_column in coded.items():
            frame[code_column] = frame[id_column].map(codes)
        frames[name] = frame
    frames["cycles"]["site"] = frames["cycles"]["site_id"].map(site_codes)
    return build_features(frames)
