"""The second factor: who must use one, and TOTP devices (django-otp) enrolled and confirmed.

Monitors, committee members and registry admins must log in with a time-based code from an
authenticator app; anyone else may enrol one from the security page, and once it is confirmed
it is asked for at every login.
"""

from __future__ import annotations

from base64 import b32encode

import qrcode
import qrcode.image.svg
from django.contrib.auth.models import User
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from registry.access import AnyUser, user_roles
from registry.models import Role

# The roles whose holders must log in with a second factor.
SECOND_FACTOR_ROLES: frozenset[str] = frozenset(
    {Role.MONITOR, Role.COMMITTEE, Role.CHAIR, Role.ADMIN})

# Digits of a TOTP code: the token field's length and pattern read it.
TOKEN_DIGITS = 6

DEVICE_NAME = "authenticator app"


def second_factor_required(user: AnyUser) -> bool:
    return bool(user_roles(user) & SECOND_FACTOR_ROLES)


def confirmed_device(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def totp_enrolment_start(*, user: User) -> TOTPDevice:
    """The user's unconfirmed device (a new secret the first time); confirmed ones are untouched."""
    with transaction.atomic():
        device = (TOTPDevice.objects.select_for_update()
                  .filter(user=user, confirmed=False).order_by("pk").first())
        if device is None:
            device = TOTPDevice.objects.create(
                user=user, name=DEVICE_NAME, confirmed=False, digits=TOKEN_DIGITS)
    return device


def totp_enrolment_confirm(*, device: TOTPDevice, token: str) -> bool:
    """Confirm the device if `token` is a valid, unused code of it; else False, nothing confirmed.

    django-otp refuses a code already used and slows down repeated wrong codes.
    """
    with transaction.atomic():
        if not device.verify_token(token):
            return False
        device.confirmed = True
        device.save(update_fields=["confirmed"])
    return True


def device_secret(device: TOTPDevice) -> str:
    """The secret as an authenticator app asks for it when typed in (base32, no padding)."""
    return b32encode(device.bin_key).decode("ascii").rstrip("=")


def device_qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// address of the device as an SVG QR code (no image library needed)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage)
    return image.to_string(encoding="unicode")
