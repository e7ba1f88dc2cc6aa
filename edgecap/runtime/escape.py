"""Local text shown on a terminal, escaped: what a person reads must be what is there.

A file name, a device name, a config value or a socket record can hold terminal escape
sequences and control characters (a WAV file named ``a\\x1b[2Jb.wav``). Printed raw, they
would clear the screen, recolour it or forge log lines. Unlike service captions (cleaned in
``captions/sanitize.py``, where the words matter and the junk goes), local text is escaped
visibly, so an owner sees the odd name as it is: ``a\\x1b[2Jb.wav``.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidi overrides/isolates that reorder a line on screen
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape (\\x1b, \\u202e);
    a line break too, so one record stays one line."""
    if text.isprintable():
        return text  # the common case, fast
    return _UNSAFE.sub(_escape, text)
