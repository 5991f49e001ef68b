"""Forms of the risk-model pages."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from registry import limits


class ChampionMoveForm(forms.Form):
    version = forms.IntegerField(label=_("Version"), min_value=1, max_value=limits.VERSION_MAX)
    reason = forms.CharField(label=_("Reason"), max_length=limits.REASON_MAX_LENGTH,
                             widget=forms.Textarea(attrs={"rows": 2}))
