"""The Input serializers' one base: refuse what the endpoint does not take, by name.

An endpoint validates its body with a nested Input serializer (registry/api/__init__.py). DRF
silently drops fields a serializer does not declare; an API of a clinical registry refuses
them instead, each named, with every other problem of the input in the same answer, so a
caller's misspelt field is never mistaken for an absent one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

# How much of an unknown field's name an error message repeats (control characters shown as ?).
UNKNOWN_NAME_SHOWN = 60
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def shown_name(name: object) -> str:
    """A caller's field name as an error may repeat it: cut, without control characters."""
    return _UNPRINTABLE.sub("?", str(name)[:UNKNOWN_NAME_SHOWN])


class StrictInput(serializers.Serializer):
    """An Input that refuses the fields it does not know, each named, with every other problem
    of the input in the same answer."""

    def to_internal_value(self, data: Any) -> dict:
        unknown = ([shown_name(key) for key in data if key not in self.fields]
                   if isinstance(data, Mapping) else [])
        try:
            value = super().to_internal_value(data)
        except ValidationError as refused:
            if not unknown or not isinstance(refused.detail, dict):
                raise
            errors = dict(refused.detail)
        else:
            if not unknown:
                return value
            errors = {}
        message = _("Unknown field; the fields are %(fields)s.") % {
            "fields": ", ".join(self.fields)}
        for name in unknown:
            errors[name] = [message]
        raise ValidationError(errors)
