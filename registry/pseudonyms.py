"""Keyed hashing of hospital patient numbers: duplicates are caught, the number is never kept."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from django.conf import settings


def hospital_number_hash(site_code: str, patient_no: str) -> str:
    """HMAC-SHA256 of the site's code and its patient number, under the registry pepper.

    The number is NFKC-folded and stripped first, so "００１２３" and "00123 " are one patient.
    """
    number = unicodedata.normalize("NFKC", patient_no or "").strip()
    message = f"{site_code}\x1f{number}".encode()
    return hmac.new(settings.REGISTRY_PEPPER.encode(), message, hashlib.sha256).hexdigest()
