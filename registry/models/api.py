"""Bearer tokens of the REST API (docs/api.md).

A token's text is `rwe_<prefix>_<secret>`: the prefix finds the row, the secret proves
possession. Only a keyed digest of the whole text is stored (registry/api/tokens.py), so the
table, its history and a backup cannot be used to call the API.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from registry import limits as L
from registry.models.history import history_records

# Limits on what a person chooses for a token: the column, the admin form, the command and
# the service read these.
API_TOKEN_NAME_MAX_LENGTH = 100
API_TOKEN_EXPIRES_DAYS_MIN = 1
API_TOKEN_EXPIRES_DAYS_MAX = 730
# Why a token was revoked (a leaked token, a person who left): shown beside it.
API_TOKEN_REVOKE_REASON_MAX_LENGTH = 300
# Hex characters of the prefix that identifies a token (6 random bytes).
API_TOKEN_PREFIX_LENGTH = 12


class ApiToken(models.Model):
    """A person's token for the REST API, limited to some scopes (registry/api/scopes.py).

    A token acts as its user: it never grants more than the user's roles allow at the time of
    the request. It ends at `expires_at` (when set) or when revoked; revoked tokens are kept,
    with who revoked them.
    """

    class State(models.TextChoices):
        ACTIVE = "active", _("Active")
        EXPIRED = "expired", _("Expired")
        REVOKED = "revoked", _("Revoked")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(_("name"), max_length=API_TOKEN_NAME_MAX_LENGTH)
    prefix = models.CharField(_("prefix"), max_length=API_TOKEN_PREFIX_LENGTH, unique=True)
    # HMAC-SHA256 (hex) of the whole token text; never the token itself.
    digest = models.CharField(max_length=L.HASH_HEX_LENGTH)
    scopes = models.JSONField(_("scopes"), default=list, blank=True)
    # Set by the service, so that the expiry is exactly its days after the creation.
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
        verbose_name=_("created by"),
    )
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="+", verbose_name=_("revoked by"),
    )
    revoke_reason = models.CharField(_("reason for revoking"),
                                     max_length=API_TOKEN_REVOKE_REASON_MAX_LENGTH, blank=True)
    # Moved at most once a minute (registry.services.api_tokens.api_token_mark_used).
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    # The digest stays in one place; the last use is bookkeeping, not a change of the token.
    history = history_records(excluded_fields=["digest", "last_used_at"])

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        constraints = [
            models.CheckConstraint(condition=~Q(prefix=""), name="api_token_prefix_not_empty"),
            models.CheckConstraint(condition=~Q(digest=""), name="api_token_digest_not_empty"),
            models.CheckConstraint(
                condition=Q(revoked_at__isnull=True, revoked_by__isnull=True)
                | Q(revoked_at__isnull=False, revoked_by__isnull=False),
                name="api_token_revoked_with_who",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def state_at(self, when: dt.datetime) -> str:
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at is not None and self.expires_at <= when:
            return self.State.EXPIRED
        return self.State.ACTIVE
