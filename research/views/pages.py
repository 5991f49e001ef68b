"""The research home (what each role has to do) and the variable catalog."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from research import catalog
from research.forms import CLASS_LABELS, CatalogFilterForm
from research.selectors.pages import catalog_browse, research_home, table_label


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "research/home.html", research_home(request.user))


@login_required
def catalog_page(request: HttpRequest) -> HttpResponse:
    tables = [(name, f"{table_label(name)} ({name})") for name in catalog.tables()]
    form = CatalogFilterForm(request.GET, tables=tables)
    filters = {"q": "", "table": "", "klass": ""}
    if form.is_valid():
        filters.update(form.cleaned_data)
    else:
        messages.warning(request, _("These filters were not valid and were ignored: "
                                    "%(fields)s.") % {"fields": ", ".join(form.errors)})
        form = CatalogFilterForm(tables=tables)
    return render(request, "research/catalog.html", {
        "form": form, "tables": catalog_browse(**filters), "class_labels": CLASS_LABELS,
        "filtered": any(filters.values())})
