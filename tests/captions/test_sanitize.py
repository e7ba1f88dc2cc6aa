"""Service text is cleaned of anything that could act on a terminal, display or file."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecap.captions.sanitize import clean_label, clean_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (" hello", " hello"),
        ("a\x1b[2Jb", "ab"),  # clear screen
        ("a\x1b[31;1mred\x1b[0m", "ared"),
        ("x\x1b]0;pwned title\x07y", "xy"),  # OSC window title
        ("x\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\y", "xlinky"),
        ("x\x1bPdevice control\x1b\\y", "xy"),
        ("x\x1bcy", "xy"),  # full reset
        ("x\x9b2Jy", "xy"),  # 8-bit CSI
        ("line\r\nbreak\ttab", "line  break tab"),
        ("bell\x07 nul\x00 del\x7f", "bell nul del"),
        ("\u202eevil\u202c", "evil"),  # right-to-left override
        ("नमस्ते", "नमस्ते"),  # virama and ZWJ-free Devanagari stays intact
        ("क्\u200dष", "क्\u200dष"),  # zero-width joiner kept
        ("مرحبا", "مرحبا"),
        ("\ufeffbom", "bom"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_length_is_bounded():
    assert len(clean_text("a" * 5000, limit=100)) == 100
    assert len(clean_text("\x1b[1m" + "b" * 5000, limit=100)) == 100


@given(st.text())
def test_nothing_that_controls_a_terminal_survives(text):
    out = clean_text(text)
    assert "\x1b" not in out and "\x9b" not in out
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_labels():
    assert clean_label("1") == "1"
    assert clean_label("pt-BR") == "pt-BR"
    assert clean_label("\x1b[2J") == "2J"
    assert clean_label("\x1b") is None
    assert clean_label(None) is None
    assert len(clean_label("x" * 100) or "") == 32
