"""Text from a speech service is untrusted: it is cleaned before any output sees it.

A caption ends up on terminals, serial displays and in files; a stray escape sequence in a
token could clear a console, reprogram an LCD or break a subtitle file. Removed: terminal
escape sequences (CSI, OSC, other ESC sequences), C0 and C1 control characters (line breaks
and tabs become spaces) and the bidirectional *override* and *isolate* controls (which can
reorder the rest of a line). Kept: everything a script needs, including the zero-width
joiners that Devanagari and Arabic depend on.
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]            # CSI … final byte
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)? # OSC … BEL or ST
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?      # DCS, SOS, PM, APC … ST
  | \x1b[ -/]*[0-~]                     # other ESC sequences (RIS, charset …)
  | \x9b[0-?]*[ -/]*[@-~]              # 8-bit CSI
    """,
    re.VERBOSE,
)
_SPACES = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")
_LABEL = re.compile(r"[^\w.\-]", re.UNICODE)


def clean_text(text: str, limit: int = 2000) -> str:
    """``text`` without escapes and controls, at most ``limit`` characters."""
    if text.isprintable() and len(text) <= limit:
        return text  # the common case, fast
    text = _ESCAPES.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _CONTROLS.sub("", text)
    return text[:limit]


def clean_label(label: str | None, limit: int = 32) -> str | None:
    """A speaker or language label: letters, digits, ``.``, ``-`` and ``_`` only."""
    if label is None:
        return None
    cleaned = _LABEL.sub("", label)[:limit]
    return cleaned or None
