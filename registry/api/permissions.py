"""`HasScope`: the scope a view needs (registry/api/scopes.py).

An endpoint declares what it needs, once, on the view:

    class ReleaseList(APIView):
        permission_classes = [HasScope]
        required_scope = Scope.RELEASES

or per method:

        required_scope = {"GET": Scope.REQUESTS, "POST": Scope.REQUESTS}

(HEAD follows GET; a method the mapping does not name is refused, and one the view does not
offer at all is its 405). A token request needs the
scope on its token and in its user's roles; a session request needs it in the user's roles.
Without a login the answer is 401, without the scope 403. A view with HasScope and no
required_scope is a programming error, refused loudly rather than left open.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from registry.api.scopes import Scope, scopes_for_user
from registry.models import ApiToken


def required_scope_of(view: APIView, method: str) -> str | None:
    """The scope `view` needs for `method`; None when its mapping does not name the method."""
    required = getattr(view, "required_scope", None)
    if required is None:
        raise ImproperlyConfigured(
            f"{type(view).__name__} uses HasScope but declares no required_scope.")
    if isinstance(required, Mapping):
        return required.get(method) or (required.get("GET") if method == "HEAD" else None)
    return required


def request_scopes(request: Request) -> frozenset[str]:
    """The scopes this request may use: its token's scopes that the user's roles still allow,
    or (a session) what the roles allow."""
    allowed = scopes_for_user(request.user)
    if isinstance(request.auth, ApiToken):
        return allowed & frozenset(request.auth.scopes)
    return allowed


class HasScope(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        scope = required_scope_of(view, request.method)
        if not request.user or not request.user.is_authenticated:
            return False  # DRF answers 401 with the bearer challenge
        if scope is None:
            if request.method not in view.allowed_methods:
                return True  # the view answers 405 with Allow, as for every other method
            self.message = _("This endpoint does not accept %(method)s.") % {
                "method": request.method}
            return False
        if scope in request_scopes(request):
            return True
        label = Scope(scope).label if scope in Scope.values else scope
        if isinstance(request.auth, ApiToken):
            self.message = _("This needs the scope %(scope)s (%(label)s), which this token "
                             "does not hold or its user's roles no longer allow.") % {
                "scope": scope, "label": label}
        else:
            self.message = _("This needs the scope %(scope)s (%(label)s), which your roles "
                             "do not allow.") % {"scope": scope, "label": label}
        return False
