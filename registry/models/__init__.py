from registry.models.api import ApiToken
from registry.models.clinical import (
    AdverseEvent,
    Cycle,
    Diagnosis,
    DrugAdministration,
    FollowUp,
    LabResult,
    Patient,
    RecordStatus,
    TreatmentLine,
)
from registry.models.imports import ImportBatch
from registry.models.organisation import Department, Membership, Role, Site
from registry.models.quality import QualityResult, QualityRun
from registry.models.terminology import (
    Concept,
    ConceptSynonym,
    Domain,
    MappingStatus,
    SiteTerm,
    TermMapping,
    UnitConversion,
    Vocabulary,
)
from registry.models.workflow import DataQuery

# Derived figures, recomputed by every data-quality run and shown on their own pages: they
# carry no history (nothing is entered into them) and are not offered in the admin.
DERIVED_MODELS = (QualityRun, QualityResult)

__all__ = [
    "DERIVED_MODELS",
    "AdverseEvent",
    "ApiToken",
    "Concept",
    "ConceptSynonym",
    "Cycle",
    "DataQuery",
    "Department",
    "Diagnosis",
    "Domain",
    "DrugAdministration",
    "FollowUp",
    "ImportBatch",
    "LabResult",
    "MappingStatus",
    "Membership",
    "Patient",
    "QualityResult",
    "QualityRun",
    "RecordStatus",
    "Role",
    "Site",
    "SiteTerm",
    "TermMapping",
    "TreatmentLine",
    "UnitConversion",
    "Vocabulary",
]
