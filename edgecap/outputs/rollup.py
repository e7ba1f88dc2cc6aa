"""The roll-up layout shared by the screen, the console and character LCDs.

Outputs that show "the last few lines" keep the recent caption lines by seq
(``CaptionLines``), wrap each by the width their device measures (pixels for a screen,
cells for a terminal or LCD) and show the newest rows at the bottom (``layout``): a line's
original first, then each translation shown (``choose_translations``) on its own row(s).
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
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
    language: str = ""  # a translation's language
    order: int = 0  # a translation's place under its line: 0 = the first shown


def choose_translations(
    translations: Mapping[str, str], languages: Sequence[str] = (), limit: int | None = None
) -> list[tuple[str, str]]:
    """The (language, text) pairs of a line's translations an output shows, in display
    order: those in ``languages`` in that order (a code matches regardless of case), or,
    when ``languages`` is empty, all of them in the line's (target) order — at most
    ``limit`` of them. A language the line has no text for yet is left out."""
    keys: list[str] = list(translations)
    if languages:
        by_code = {code.lower(): code for code in keys}
        wanted = dict.fromkeys(lang.lower() for lang in languages)  # in order, once each
        keys = [by_code[lang] for lang in wanted if lang in by_code]
    pairs = [(key, translations[key]) for key in keys if translations[key]]
    return pairs if limit is None else pairs[:limit]


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
        if not line.text and not any(line.translations.values()):
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
    languages: Sequence[str] = (),
    max_translations: int | None = None,
) -> list[Row]:
    """The newest ``rows`` rows of the lines, oldest first (bottom-aligned roll-up).
    ``offline_mark`` begins the lines of the offline engine (when it stands in for a cloud
    service), so viewers can tell the rougher captions apart. Under each line come its
    translations chosen by ``languages`` and ``max_translations`` (choose_translations),
    each on rows of its own; ``show`` keeps only the original or only the translations."""
    out: list[Row] = []
    for line in lines:
        out += line_rows(line, width, show, measure, offline_mark, languages, max_translations)
    return out[-rows:] if rows else []


def line_rows(
    line: CaptionLine,
    width: int,
    show: str = "both",
    measure: Measure = cell_width,
    offline_mark: str = "",
    languages: Sequence[str] = (),
    max_translations: int | None = None,
) -> list[Row]:
    """All the rows of one line (see ``layout``)."""
    out: list[Row] = []
    if show in ("both", "original") and line.text:
        style: Style = "final" if line.final else "provisional"
        text = offline_mark + line.text if line.offline and offline_mark else line.text
        out += [Row(t, style, line.seq) for t in wrap(text, width, measure)]
    if show in ("both", "translation"):
        chosen = choose_translations(line.translations, languages, max_translations)
        for order, (lang, text) in enumerate(chosen):
            out += [
                Row(t, "translation", line.seq, lang, order) for t in wrap(text, width, measure)
            ]
    return out
