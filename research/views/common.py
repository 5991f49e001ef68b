"""Helpers shared by the research views: domain refusals shown at the fields they name."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest

from registry.errors import NotPermitted, RegistryError


def refusal_status(error: RegistryError) -> int:
    """A refused role is a 403; broken input, or a step the request's state does not allow, a
    400 (the page is shown again with the reason)."""
    return 403 if isinstance(error, NotPermitted) else 400


def show_errors(request: HttpRequest, form: forms.Form | None, error: RegistryError) -> None:
    """Each message at the form field it names; the others as messages at the top."""
    for field, problems in error.errors.items():
        for problem in problems:
            if form is not None and field in form.fields:
                form.add_error(field, problem)
            else:
                messages.error(request, problem)


def form_problems(form: forms.Form) -> dict[str, list[str]]:
    return {field: [str(m) for m in problems] for field, problems in form.errors.items()}
