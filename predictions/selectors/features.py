"""Features of the cycles of some sites, as the registry stands at a snapshot.

A patient's records all carry the patient's site, so the features of a site's cycles read only
that site's rows: scoring after a save reads the site's records (one COPY per kind), not the
whole cohort. Training reads every site through predictions.extract.feature_set_extract.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from predictions import extract
from predictions.ml.features import FeatureSet, build_features
from registry.models import Concept, Site
from registry.selectors.bulk import ALL_SITES, records_frame


def feature_set_for_sites(site_ids: Iterable[int] | None, *, as_of: dt.datetime) -> FeatureSet:
    """Every cycle of the sites (None: all) with its features, as of `as_of`."""
    sites = ALL_SITES if site_ids is None else sorted(set(site_ids))
    if site_ids is None:
        return extract.feature_set_extract(as_of=as_of)
    codes = dict(Concept.objects.values_list("id", "code"))
    site_codes = dict(Site.objects.values_list("id", "code"))
    frames = {}
    # The kinds, columns and coded columns the training extraction reads (one definition).
    for kind, (name, columns, coded) in extract._KINDS.items():
        frame = records_frame(kind, sites=sites, as_of=as_of, columns=columns)
        for id_column, code_column in coded.items():
            frame[code_column] = frame[id_column].map(codes)
        frames[name] = frame
    frames["cycles"]["site"] = frames["cycles"]["site_id"].map(site_codes)
    return build_features(frames)
