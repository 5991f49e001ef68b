"""Keyed hashing of hospital patient numbers: duplicates are caught, the number is never kept.

A number is normalised before it is hashed, so the spellings of one number hash alike: NFKC
(full width to half width), no white space or hyphens, upper case ("zy2026-0042",
"ZY2026 0042" and "ＺＹ２０２６－００４２" are one patient).

Patients registered before this normalisation are stored under the hash of the number as then
folded (NFKC, stripped: `hospital_number_hash_legacy`). The registry keeps no number, so no
migration can rehash them; every lookup therefore asks for both hashes
(`hospital_number_hashes`), and a stored legacy hash keeps matching the spelling it was
registered with, while a new registration of another spelling of it is caught only once the
patient is stored under the normalised hash (new patients always are).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

from django.conf import settings

# White space and the dashes a hospital number is written with (after NFKC: ASCII hyphen,
# the Unicode hyphens and dashes, the minus sign).
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


def hospital_number_normalise(patient_no: str) -> str:
    """The form of a hospital number that is hashed: NFKC, no spaces or hyphens, upper case."""
    number = unicodedata.normalize("NFKC", patient_no or "")
    return _SEPARATORS.sub("", number).upper()


def _hmac(site_code: str, number: str) -> str:
    message = f"{site_code}\x1f{number}".encode()
    return hmac.new(settings.REGISTRY_PEPPER.encode(), message, hashlib.sha256).hexdigest()


def hospital_number_hash(site_code: str, patient_no: str) -> str:
    """HMAC-SHA256 of the site's code and its normalised patient number, under the registry
    pepper: the hash every new patient is stored under."""
    return _hmac(site_code, hospital_number_normalise(patient_no))


def hospital_number_hash_legacy(site_code: str, patient_no: str) -> str:
    """The hash patients registered before normalisation are stored under (NFKC, stripped)."""
    return _hmac(site_code, unicodedata.normalize("NFKC", patient_no or "").strip())


def hospital_number_hashes(site_code: str, patient_no: str) -> tuple[str, str]:
    """(normalised hash, legacy hash): a lookup matches a patient stored under either."""
    return (hospital_number_hash(site_code, patient_no),
            hospital_number_hash_legacy(site_code, patient_no))
