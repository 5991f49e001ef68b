"""Template filters of the research pages (the navigation's link among them)."""

from django import template

from registry.access import AnyUser
from research.selectors.pages import uses_research as _uses_research

register = template.Library()


@register.filter
def uses_research(user: AnyUser) -> bool:
    """Whether the research pages have something for this person."""
    return _uses_research(user)
