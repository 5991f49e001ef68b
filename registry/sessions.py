"""The absolute limit of a session: SESSION_MAX_HOURS after it began, however active.

The idle limit needs no code (SESSION_COOKIE_AGE with SESSION_SAVE_EVERY_REQUEST). This one
stamps a session the first time it is seen logged in and ends it once the stamp is too old.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login

SESSION_STARTED_KEY = "registry_session_started"


class AbsoluteSessionLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = int(time.time())
            started = request.session.setdefault(SESSION_STARTED_KEY, now)
            if now - started > settings.SESSION_MAX_HOURS * 3600:
                logout(request)
                return redirect_to_login(request.get_full_path())
        return self.get_response(request)
