"""The fields of a rendered HTML form and the values a browser would submit for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Form:
    action: str
    method: str
    values: dict[str, str] = field(default_factory=dict)  # what a browser would send as is
    options: dict[str, list[str]] = field(default_factory=dict)  # a select's choices
    hidden: set[str] = field(default_factory=set)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._select: str | None = None
        self._textarea: str | None = None
        self._form: Form | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._form)
            return
        form = self._form
        if form is None or "form" in a:  # inputs bound to another form by id are left out
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    form.values[name] = a.get("value", "on")
                else:
                    form.options.setdefault(name, []).append(a.get("value", "on"))
            elif kind not in ("submit", "button", "file"):
                form.values[name] = a.get("value", "")
                if kind == "hidden":
                    form.hidden.add(name)
        elif tag == "select" and name:
            self._select = name
            form.options[name] = []
        elif tag == "option" and self._select:
            value = a.get("value", "")
            form.options[self._select].append(value)
            if "selected" in a or self._select not in form.values:
                form.values[self._select] = value
        elif tag == "textarea" and name:
            self._textarea = name
            form.values[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._form = None

    def handle_data(self, data):
        if self._textarea and self._form is not None:
            self._form.values[self._textarea] += data


def forms_of(html: str) -> list[Form]:
    parser = _Parser()
    parser.feed(html)
    return parser.forms


def record_form(html: str) -> Form:
    """The page's main form: the one posting to the page itself with a csrf token."""
    candidates = [f for f in forms_of(html) if f.method == "post" and not f.action
                  and "csrfmiddlewaretoken" in f.values]
    assert candidates, "no form posting to the page"
    return candidates[-1]
