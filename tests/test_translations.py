"""The Chinese catalogue is complete and compiled: every message has a translation, none is
fuzzy, and the compiled .mo is the one the .po gives."""

from __future__ import annotations

import subprocess
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parents[1] / "locale" / "zh_Hans" / "LC_MESSAGES"


def test_every_message_is_translated_and_none_is_fuzzy():
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(CATALOGUE / "django.po")],
        capture_output=True, text=True, check=True, env={"LC_ALL": "C"})
    assert "translated message" in result.stderr
    assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr, result.stderr


def test_the_compiled_catalogue_is_up_to_date(tmp_path):
    compiled = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(compiled), str(CATALOGUE / "django.po")],
                   check=True)
    assert compiled.read_bytes() == (CATALOGUE / "django.mo").read_bytes()
