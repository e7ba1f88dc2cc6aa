"""The roll-up layout shared by the screen, the console and character LCDs.

Outputs that show "the last few lines" keep the recent caption lines by seq
(``CaptionLines``), wrap each by the width their device measures (pixels for a screen,
cells for a terminal or LCD) and show the newest rows at the bottom (``layout``).
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edgecap.captions.events import CaptionLine

Style = Literal["final", "provisional", "translation"]
Measure = Callable[[str], int]


@dataclass(frozen=True)
class Row:
    text: str
    style: Style
    seq: int


class CaptionLines:
    """The most recent ``keep`` caption lines, updated in place by seq."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._lines: OrderedDict[int, CaptionLine] = OrderedDict()

    def apply(self, line: CaptionLine) -> bool:
        """Take an update; True if what is shown changed."""
        old = self._lines.get(line.seq)
        if old == line:
            return False
        if old is None and self._lines and line.seq < next(reversed(self._lines)):
            return False  # an update for a line long scrolled away
        if not line.text and not line.translation:
            self._lines.pop(line.seq, None)  # nothing to show, or a provisional line withdrawn
            return old is not None
        self._lines[line.seq] = line
        while len(self._lines) > self.keep:
            self._lines.popitem(last=False)
        return True

    def lines(self) -> list[CaptionLine]:
        return list(self._lines.values())

    def clear(self) -> None:
        self._lines.clear()

    def __len__(self) -> int:
        return len(self._lines)


def cell_width(text: str) -> int:
    """Terminal cells: East Asian wide characters take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _units(text: str) -> list[str]:
    """Words with their leading space; each wide (CJK) character is a unit of its own."""
    units: list[str] = []
    current = ""
    for ch in text:
        if ch == " ":
            if current.strip():
                units.append(current)
                current = ""
            current += ch
        elif _is_wide(ch):
            if current.strip():
                units.append(current)
            units.append(current + ch if not current.strip() else ch)
            current = ""
        else:
            current += ch
    if current.strip():
        units.append(current)
    return units


def wrap(text: str, width: int, measure: Measure = cell_width) -> list[str]:
    """Break ``text`` into rows no wider than ``width`` as ``measure`` counts, at spaces
    (or between CJK characters); a word wider than a row is cut."""
    if width <= 0:
        raise ValueError("width must be positive")
    rows: list[str] = []
    row = ""
    for unit in _units(text.strip()):
        candidate = row + unit if row else unit.lstrip()
        if measure(candidate) <= width:
            row = candidate
            continue
        if row:
            rows.append(row)
        word = unit.lstrip()
        while measure(word) > width:  # longer than a whole row: cut it
            cut = len(word)
            while cut > 1 and measure(word[:cut]) > width:
                cut -= 1
            rows.append(word[:cut])
            word = word[cut:]
        row = word
    if row:
        rows.append(row)
    return rows


def layout(
    lines: list[CaptionLine],
    rows: int,
    width: int,
    show: str = "both",
    measure: Measure = cell_width,
    offline_mark: str = "",
) -> list[Row]:
    """The newest ``rows`` rows of the lines, oldest first (bottom-aligned roll-up).
    ``offline_mark`` begins the lines of the offline engine (when it stands in for a cloud
    service), so viewers can tell the rougher captions apart."""
    out: list[Row] = []
    for line in lines:
        if show in ("both", "original") and line.text:
            style: Style = "final" if line.final else "provisional"
            text = offline_mark + line.text if line.offline and offline_mark else line.text
            out += [Row(t, style, line.seq) for t in wrap(text, width, measure)]
        if show in ("both", "translation") and line.translation:
            out += [Row(t, "translation", line.seq) for t in wrap(line.translation, width, measure)]
    return out[-rows:] if rows else []
