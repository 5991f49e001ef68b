"""The text of an API token, its digest and its parsing.

`rwe_<prefix>_<secret>`: `rwe` says what the string is (secret scanners can match it), the
prefix (12 hex characters) finds the token's row, the secret (32 random bytes, URL-safe
base64) proves possession. The database keeps HMAC-SHA256 of the whole text under
REGISTRY_PEPPER: a copy of the database alone can neither use nor verify a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from django.conf import settings

from registry.models.api import API_TOKEN_PREFIX_LENGTH

TOKEN_LEAD = "rwe"  # noqa: S105 (what the string is, not a secret)
SECRET_BYTES = 32
# 32 bytes in URL-safe base64 without padding are 43 characters.
_SECRET_LENGTH = 43
TOKEN_PATTERN = re.compile(
    rf"{TOKEN_LEAD}_(?P<prefix>[0-9a-f]{{{API_TOKEN_PREFIX_LENGTH}}})_"
    rf"(?P<secret>[A-Za-z0-9_-]{{{_SECRET_LENGTH}}})"
)
# Keeps this digest apart from the other uses of the pepper (registry/pseudonyms.py).
_DIGEST_CONTEXT = b"registry api token\x00"


def token_generate() -> tuple[str, str]:
    """A new token: (prefix, whole token text)."""
    prefix = secrets.token_hex(API_TOKEN_PREFIX_LENGTH // 2)
    return prefix, f"{TOKEN_LEAD}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def token_digest(text: str) -> str:
    """The digest stored for a token's text (hex HMAC-SHA256 under REGISTRY_PEPPER)."""
    return hmac.new(settings.REGISTRY_PEPPER.encode(), _DIGEST_CONTEXT + text.encode(),
                    hashlib.sha256).hexdigest()


def token_prefix(text: str) -> str | None:
    """The prefix of a well-formed token text, else None."""
    match = TOKEN_PATTERN.fullmatch(text)
    return match["prefix"] if match else None


def token_matches(text: str, digest: str) -> bool:
    return hmac.compare_digest(token_digest(text), digest)
