"""Fonts for the screen: a fallback chain chosen per character, and bidi-aware runs.

No single font covers Latin, Devanagari, CJK and Arabic, so the screen uses a chain of font
files: each character is drawn with the first font of the chain whose character map (cmap)
has it. Coverage comes from the font file's cmap table, read here directly (formats 4 and
12, the ones every TrueType/OpenType font has), so there is no guessing from rendered
pixels and no extra dependency; a font whose cmap cannot be read falls back to comparing
the character's rendering with the font's "missing glyph" box.

Text is then cut into pieces that one ``draw.text`` call can render correctly:

- one font per piece, and combining marks (virama, vowel signs, harakat) always stay with
  the character before them, so raqm/HarfBuzz shapes whole syllables (क्ष, कै) and whole
  Arabic words (joining forms);
- one direction per piece: a simplified Unicode bidi algorithm (paragraph direction from
  the first strong character, neutrals between two runs of the same direction take it,
  numbers read left to right) orders the pieces on the line, and each right-to-left piece
  is handed to raqm whole with ``direction="rtl"`` so it orders and mirrors its glyphs.

A line whose first strong character is right-to-left is a right-to-left paragraph: the
caller aligns it to the right (``TextLine.rtl``).

Indic scripts (docs/scripts.md). A character of one of the nine scripts Sarvam writes
(Devanagari, Bengali, Gurmukhi, Gujarati, Odia, Tamil, Telugu, Kannada, Malayalam) is
drawn with that script's font: the first font of the chain that has the script's core
letters, else the script's Debian font (``SCRIPTS``: Lohit, one small package per script),
found by file name under the font directories and added to the chain the first time the
script appears — so the configured chain needs to name none of them. A script font whose
common forms (below-base conjuncts, vowel signs under and over a letter) reach beyond the
room a caption row has (``ROOM``) is raised a little and, if that is not enough, drawn
smaller, so nothing is clipped. The dandas (। ॥) every script uses stay in the font of the
text before them, and a space after a font whose space is a sliver (Lohit Odia's is an
eighth of an em) is drawn in the chain's first font that has a space.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import math
import os
import re
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import PIL
from PIL import ImageDraw, ImageFont, features

log = logging.getLogger(__name__)

HAVE_RAQM = features.check("raqm")
RAQM = ImageFont.Layout.RAQM if HAVE_RAQM else ImageFont.Layout.BASIC
# Since Pillow 10.2 (pull request 7497) a glyph is laid over those before it within one
# draw.text call, as it is across calls; before, overlapping glyphs kept the larger coverage.
_version = re.match(r"(\d+)\.(\d+)", PIL.__version__)
GLYPHS_OVER = _version is not None and (int(_version[1]), int(_version[2])) >= (10, 2)

# The room a caption row gives a glyph, in font sizes above and below the baseline (the
# HDMI output's slots: baseline 1.07 from the top of a 1.45 tall slot).
ROOM = (1.07, 0.38)
MAX_RAISE = 0.12  # a script font is raised at most this much (font sizes) to fit ROOM
NARROW_SPACE = 0.2  # a space narrower than this (font sizes) is drawn in another font
DANDAS = frozenset("\u0964\u0965")  # । ॥: Devanagari's, used by the other scripts too


@dataclass(frozen=True)
class Script:
    """One of the Indic scripts and the Debian font that shows it."""

    name: str
    first: int  # its Unicode block: first .. first + 0x7F
    package: str  # the Debian package with its font
    files: tuple[str, ...]  # font file names, preferred first (Lohit, then Noto)
    tall: str  # common forms reaching furthest above and below the baseline

    @property
    def core(self) -> str:
        """Letters a font must have to count as a font for the script: ka, na, ma, ra,
        sa, the vowel sign i and the virama (at the same place in all nine blocks)."""
        return "".join(chr(self.first + off) for off in (0x15, 0x28, 0x2E, 0x30, 0x38, 0x3F, 0x4D))


def _script(name: str, first: int, package: str, tall: str, noto: str = "") -> Script:
    # Lohit-<name>.ttf, else Noto (fonts-noto-core: 40 MB, where someone installed it)
    files = (f"Lohit-{name}.ttf", f"NotoSans{noto or name}-Regular.ttf")
    return Script(name, first, package, files, tall)


# In block order: the nine blocks are contiguous, 0x80 code points each.
SCRIPTS: tuple[Script, ...] = (
    _script("Devanagari", 0x0900, "fonts-lohit-deva", "र्कीं कृ कू द्ध प्र ह्य ँ"),
    _script("Bengali", 0x0980, "fonts-lohit-beng-bengali", "র্কীঁ কৃ কূ ক্র ষ্ণ স্থ"),
    _script("Gurmukhi", 0x0A00, "fonts-lohit-guru", "ਕੀਂ ਕੁ ਕੂ ਪ੍ਰ ਸ੍ਵ ਨੂੰ ਤੁੰ"),
    _script("Gujarati", 0x0A80, "fonts-lohit-gujr", "ર્કીં કૃ કુ કૂ પ્ર દ્ધ"),
    _script("Odia", 0x0B00, "fonts-lohit-orya", "ର୍କୀଁ କୃ କୁ କୂ ପ୍ର ସ୍ତ କ୍ଷ", noto="Oriya"),
    _script("Tamil", 0x0B80, "fonts-lohit-taml", "கீ கு கூ ஸ்ரீ க்ஷ ழு ஞு"),
    _script("Telugu", 0x0C00, "fonts-lohit-telu", "ర్కీ కృ కు కూ ప్ర స్వ క్క"),
    _script("Kannada", 0x0C80, "fonts-lohit-knda", "ರ್ಕೀ ಕೃ ಕು ಕೂ ಪ್ರ ಸ್ವ ಕ್ಕ"),
    _script("Malayalam", 0x0D00, "fonts-lohit-mlym", "ക്കീ കൃ കു കൂ പ്ര സ്വ ർ"),
)
_INDIC_FIRST, _INDIC_END = SCRIPTS[0].first, SCRIPTS[-1].first + 0x80


def script_of(ch: str) -> Script | None:
    """The Indic script ``ch`` belongs to (by its block), or None."""
    cp = ord(ch)
    if _INDIC_FIRST <= cp < _INDIC_END and ch not in DANDAS:
        return SCRIPTS[(cp - _INDIC_FIRST) >> 7]
    return None


def script_fonts(dirs: Iterable[Path] | None = None) -> list[tuple[Script, Path | None]]:
    """Each Indic script with the font file the screen finds for it (None: not installed;
    ``Script.package`` brings it)."""
    dirs = list(dirs) if dirs is not None else None
    found = []
    for script in SCRIPTS:
        path = next((p for p in (find_font(f, dirs) for f in script.files) if p), None)
        found.append((script, path))
    return found


def font_dirs() -> list[Path]:
    """Where font files are looked for by name, in order."""
    home = Path(os.environ.get("HOME") or "~").expanduser()
    dirs = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts")]
    data = os.environ.get("XDG_DATA_HOME")
    dirs.append(Path(data) / "fonts" if data else home / ".local" / "share" / "fonts")
    dirs.append(home / ".fonts")
    return dirs


@functools.lru_cache(maxsize=4)
def _font_index(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """File name (lower case) → first path with it under ``dirs``; built once."""
    index: dict[str, Path] = {}
    seen: set[str] = set()  # real directories walked: a symlink loop is walked once
    for base in dirs:
        if not base.is_dir():
            continue
        for root, subdirs, files in os.walk(base, followlinks=True):
            real = os.path.realpath(root)
            if real in seen:
                subdirs.clear()
                continue
            seen.add(real)
            subdirs.sort()
            for name in sorted(files):
                index.setdefault(name.lower(), Path(root) / name)
    return index


def find_font(name: str, dirs: Iterable[Path] | None = None) -> Path | None:
    """A font file: an absolute path as it is, or a file name ("DejaVuSans.ttf", case
    ignored) looked up under /usr/share/fonts, /usr/local/share/fonts, ~/.local/share/fonts
    and ~/.fonts (subdirectories included)."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    return _font_index(tuple(dirs if dirs is not None else font_dirs())).get(name.lower())


# --- coverage from the cmap table -------------------------------------------------------


class Coverage:
    """The set of code points a font maps to a glyph, as sorted disjoint ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._starts = [r[0] for r in merged]
        self._ends = [r[1] for r in merged]

    def __contains__(self, codepoint: object) -> bool:
        if not isinstance(codepoint, int):
            return False
        i = bisect.bisect_right(self._starts, codepoint) - 1
        return i >= 0 and codepoint <= self._ends[i]

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))


def _cmap_format4(data: bytes, off: int) -> list[tuple[int, int]]:
    seg_count = struct.unpack_from(">H", data, off + 6)[0] // 2
    ends = struct.unpack_from(f">{seg_count}H", data, off + 14)
    starts_at = off + 16 + 2 * seg_count
    starts = struct.unpack_from(f">{seg_count}H", data, starts_at)
    deltas = struct.unpack_from(f">{seg_count}h", data, starts_at + 2 * seg_count)
    range_at = starts_at + 4 * seg_count
    range_offsets = struct.unpack_from(f">{seg_count}H", data, range_at)
    ranges: list[tuple[int, int]] = []
    for i in range(seg_count):
        start, end, delta, ro = starts[i], ends[i], deltas[i], range_offsets[i]
        if start == 0xFFFF or start > end:
            continue
        if ro == 0:
            # glyph = (c + delta) mod 65536; exactly one c can land on glyph 0 (missing)
            hole = (-delta) % 0x10000
            if start <= hole <= end:
                ranges += [(start, hole - 1), (hole + 1, end)]
            else:
                ranges.append((start, end))
            continue
        base = range_at + 2 * i + ro
        for c in range(start, end + 1):
            at = base + 2 * (c - start)
            if at + 2 <= len(data) and struct.unpack_from(">H", data, at)[0] != 0:
                ranges.append((c, c))
    return [(s, e) for s, e in ranges if s <= e]


def _cmap_format12(data: bytes, off: int) -> list[tuple[int, int]]:
    count = struct.unpack_from(">I", data, off + 12)[0]
    ranges = []
    for i in range(count):
        start, end, glyph = struct.unpack_from(">III", data, off + 16 + 12 * i)
        if glyph == 0:  # the first code point maps to the missing glyph
            start += 1
        if start <= end:
            ranges.append((start, end))
    return ranges


def read_coverage(path: Path, index: int = 0) -> Coverage | None:
    """The code points ``path`` (TrueType/OpenType, or font ``index`` of a collection)
    has glyphs for; None when its cmap cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            offset = 0
            if head[:4] == b"ttcf":
                count = struct.unpack_from(">I", head, 8)[0]
                if index >= count:
                    return None
                f.seek(12 + 4 * index)
                offset = struct.unpack(">I", f.read(4))[0]
                f.seek(offset)
                head = f.read(12)
            num_tables = struct.unpack_from(">H", head, 4)[0]
            f.seek(offset + 12)
            records = f.read(16 * num_tables)
            for i in range(num_tables):
                tag, _sum, at, length = struct.unpack_from(">4sIII", records, 16 * i)
                if tag == b"cmap":
                    f.seek(at)
                    return _parse_cmap(f.read(length))
    except (OSError, struct.error, IndexError):
        log.debug("cannot read the cmap of %s", path, exc_info=True)
    return None


def _parse_cmap(data: bytes) -> Coverage | None:
    count = struct.unpack_from(">H", data, 2)[0]
    tables: dict[int, list[int]] = {}  # format → subtable offsets, Unicode ones only
    for i in range(count):
        platform, encoding, off = struct.unpack_from(">HHI", data, 4 + 8 * i)
        if platform == 0 or (platform == 3 and encoding in (1, 10)):
            fmt = struct.unpack_from(">H", data, off)[0]
            tables.setdefault(fmt, []).append(off)
    if 12 in tables:  # full Unicode (includes everything of format 4)
        return Coverage(_cmap_format12(data, tables[12][0]))
    if 4 in tables:
        return Coverage(_cmap_format4(data, tables[4][0]))
    return None


# --- bidi, simplified -------------------------------------------------------------------


def _strong(ch: str) -> str | None:
    kind = unicodedata.bidirectional(ch)
    if kind in ("R", "AL"):
        return "R"
    if kind == "L":
        return "L"
    if kind in ("EN", "AN"):
        return "N"  # a number
    return None


def base_direction(text: str) -> str:
    """The paragraph's direction: "rtl" when its first strong character is right-to-left."""
    for ch in text:
        kind = _strong(ch)
        if kind in ("L", "R"):
            return "rtl" if kind == "R" else "ltr"
    return "ltr"


def _levels(text: str, rtl: bool) -> list[int]:
    """Embedding level of every character: 0/1/2 as the Unicode bidi algorithm gives for
    plain text without explicit embeddings (rules W1–W7, N1–N2, I1–I2, roughly)."""
    base = 1 if rtl else 0
    kinds: list[str | None] = []
    last_strong = "R" if rtl else "L"
    for ch in text:
        kind = _strong(ch)
        if unicodedata.category(ch).startswith("M") and kinds:
            kind = kinds[-1]  # a mark takes the class of its base
        if kind == "N":
            kind = "L" if last_strong == "L" else "N"  # W7: numbers after L are L
        elif kind in ("L", "R"):
            last_strong = kind
        kinds.append(kind)
    # N1/N2: a run of neutrals takes the direction around it when both sides agree
    # (numbers count as R there), else the paragraph's.
    resolved: list[str] = []
    i = 0
    while i < len(kinds):
        if kinds[i] is not None:
            resolved.append(kinds[i])  # type: ignore[arg-type]
            i += 1
            continue
        j = i
        while j < len(kinds) and kinds[j] is None:
            j += 1
        before = resolved[-1] if resolved else ("R" if rtl else "L")
        after = kinds[j] if j < len(kinds) else ("R" if rtl else "L")
        side = {"N": "R"}
        b, a = side.get(before, before), side.get(after, after)  # type: ignore[arg-type]
        fill = b if b == a else ("R" if rtl else "L")
        resolved += [fill] * (j - i)
        i = j
    levels = []
    for kind in resolved:
        if kind == "L":
            levels.append(base + (1 if rtl else 0))  # I2: L in an RTL paragraph goes up
        elif kind == "R":
            levels.append(1)
        else:
            levels.append(2)  # numbers: I1 (LTR paragraph) or I2 (RTL paragraph)
    return levels


def _visual_order(runs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Rule L2 on runs of one level: reverse every sequence at level k or higher, from the
    highest level down to the lowest odd one. Characters inside an odd-level run are left
    in logical order: raqm reverses them when the run is drawn right-to-left."""
    if not runs:
        return runs
    top = max(level for level, _ in runs)
    lowest_odd = min((level for level, _ in runs if level % 2), default=top + 1)
    runs = list(runs)
    for k in range(top, lowest_odd - 1, -1):
        i = 0
        while i < len(runs):
            if runs[i][0] < k:
                i += 1
                continue
            j = i
            while j < len(runs) and runs[j][0] >= k:
                j += 1
            runs[i:j] = runs[i:j][::-1]
            i = j
    return runs


# --- the chain ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One ``draw.text`` call: ``text`` in one font and one direction, at ``x`` (pixels
    from the line's left edge)."""

    font: int  # index into FontChain.fonts
    text: str
    direction: str  # "ltr" or "rtl"
    x: float
    width: float


@dataclass(frozen=True)
class TextLine:
    pieces: tuple[Piece, ...]  # left to right on the screen
    width: int
    rtl: bool  # a right-to-left paragraph: align it to the right


class FontChain:
    """The fonts of ``names`` (files or file names; missing ones are skipped and listed in
    ``missing``) at ``size`` pixels, tried in order for each character; with
    ``script_fonts`` the Indic scripts' Debian fonts are added when a script first appears
    (see the module docstring), fitted into ``room`` (None: drawn as they are)."""

    def __init__(
        self,
        names: Sequence[str],
        size: int,
        *,
        layout_engine: ImageFont.Layout | None = None,
        dirs: Iterable[Path] | None = None,
        script_fonts: bool = True,
        room: tuple[float, float] | None = ROOM,
    ) -> None:
        self.size = size
        self.layout_engine = RAQM if layout_engine is None else layout_engine
        self.fonts: list[ImageFont.FreeTypeFont] = []
        self.paths: list[Path] = []  # the font files loaded
        self.missing: list[str] = []
        self.raise_px: list[int] = []  # each font is drawn this much above the baseline
        self._files: list[Path | None] = []  # each font's file (Pillow's own has none)
        self._coverage: list[Coverage | None] = []
        self._shaping: list[bool] = []  # laid out by raqm
        self._dirs = list(dirs) if dirs is not None else None
        self._script_fonts = script_fonts
        self._room = room
        self._scripts: dict[str, int | None] = {}  # script name → its font (None: none)
        for name in names:
            path = find_font(name, self._dirs)
            if path is None or self._add(path) is None:
                self.missing.append(name)
        if not self.fonts:
            log.warning("none of the fonts %s is installed; using Pillow's own", list(names))
            self.fonts.append(ImageFont.load_default(size))
            self._files.append(None)
            self._coverage.append(None)
            self._shaping.append(False)  # Pillow's own font is laid out without raqm
            self.raise_px.append(0)
        self._notdef: dict[int, bytes] = {}
        self._has: dict[tuple[int, str], bool] = {}
        self._narrow: dict[int, bool] = {}
        self._lines: OrderedDict[str, TextLine] = OrderedDict()

    def _add(self, path: Path, size: int | None = None, raise_px: int = 0) -> int | None:
        """Load ``path`` at ``size`` (default: the chain's) as the chain's last font."""
        try:
            font = ImageFont.truetype(
                str(path), size or self.size, layout_engine=self.layout_engine
            )
        except OSError as exc:
            log.warning("font %s cannot be loaded: %s", path, exc)
            return None
        self.fonts.append(font)
        self.paths.append(path)
        self._files.append(path)
        self._coverage.append(_cached_coverage(path))
        self._shaping.append(font.layout_engine == ImageFont.Layout.RAQM)
        self.raise_px.append(raise_px)
        return len(self.fonts) - 1

    @property
    def shaping(self) -> bool:
        """The first font is shaped by raqm (complex scripts, right to left)."""
        return self._shaping[0]

    # coverage
    def covers(self, index: int, ch: str) -> bool:
        """Font ``index`` has a glyph for ``ch``."""
        key = (index, ch)
        hit = self._has.get(key)
        if hit is None:
            coverage = self._coverage[index]
            if coverage is not None:
                hit = ord(ch) in coverage
            else:
                hit = self._mask(index, ch) != self._missing_glyph(index)
            self._has[key] = hit
        return hit

    def _mask(self, index: int, ch: str) -> bytes:
        try:
            font = self.fonts[index]
            return bytes(font.getmask(ch, mode="L"))
        except Exception:  # a font that cannot render it does not have it
            return b""

    def _missing_glyph(self, index: int) -> bytes:
        if index not in self._notdef:
            self._notdef[index] = self._mask(index, "\U0010fffd")  # a private-use code point
        return self._notdef[index]

    def font_for(self, ch: str) -> int:
        """Index of the font for ``ch``: its script's font for an Indic letter, else the
        first font that has it (0 when none has it: it draws a box)."""
        script = script_of(ch)
        if script is not None:
            index = self.script_font(script)
            if index is not None and self.covers(index, ch):
                return index
        for i in range(len(self.fonts)):
            if self.covers(i, ch):
                return i
        return 0

    def script_font(self, script: Script) -> int | None:
        """Index of the font that draws ``script``: the first of the chain with its core
        letters, else its Debian font (added now); fitted into the room. None when no
        font has the script (its letters draw boxes)."""
        if script.name in self._scripts:
            return self._scripts[script.name]
        count = len(self.fonts)
        index = next((i for i in range(count) if all(self.covers(i, c) for c in script.core)), None)
        if index is None and self._script_fonts:
            for name in script.files:
                path = find_font(name, self._dirs)
                if path is not None and (index := self._add(path)) is not None:
                    break
        if index is not None and self._room is not None:
            index = self._fit(index, script, count)
        self._scripts[script.name] = index
        return index

    def _fit(self, index: int, script: Script, configured: int) -> int:
        """``index`` itself when the script's tall forms fit the room, else the same file
        raised and made smaller as needed (a font added for the script is replaced; a
        font of the chain stays as it is for the other characters it has)."""
        path = self._files[index]
        if path is None or self._room is None:
            return index
        above, below = _ink(path, script.tall, self.layout_engine)
        scale, _lift = fit((above, below), self._room)
        if scale == 1.0 and _lift == 0.0:
            return index
        # In whole pixels, a pixel to spare each way: the row's own edges are rounded,
        # and hinting at a small size can move an outline by one.
        size = max(1, math.floor(self.size * scale))
        low = math.ceil(below * size - self._room[1] * self.size + 1)  # raise at least
        high = math.floor(self._room[0] * self.size - above * size - 1)  # at most
        lift_px = min(max(0, low), high)
        log.debug("%s: %s at %d px, raised %d px", script.name, path, size, lift_px)
        fitted = self._add(path, size, lift_px)
        if fitted is None:
            return index
        if index < configured:
            return fitted
        # The font added for this script just now (the one before the fitted one): gone,
        # so the fitted one takes its index (what was cached for it holds: the same file).
        for column in (self.fonts, self.paths, self._files, self._coverage, self._shaping):
            del column[-2]
        del self.raise_px[-2]
        return index

    def _narrow_space(self, index: int) -> bool:
        hit = self._narrow.get(index)
        if hit is None:
            font = self.fonts[index]
            hit = font.getlength(" ") < NARROW_SPACE * getattr(font, "size", self.size)
            self._narrow[index] = hit
        return hit

    def runs(self, text: str) -> list[tuple[int, str]]:
        """(font index, text) runs in logical order. Marks, joiners and spaces stay in the
        run before them, so a syllable or a word is never split between fonts; so do the
        dandas when that font has them. A space after a font with a sliver of a space
        goes to the font that has a proper one."""
        runs: list[tuple[int, str]] = []
        for ch in text:
            follows = False
            if runs:
                last = runs[-1][0]
                if ch.isspace():
                    follows = not self._narrow_space(last)
                elif ch in DANDAS:
                    follows = self.covers(last, ch)
                else:
                    follows = unicodedata.category(ch) in ("Mn", "Mc", "Me", "Cf")
            index = runs[-1][0] if follows else self.font_for(ch)
            if runs and runs[-1][0] == index:
                runs[-1] = (index, runs[-1][1] + ch)
            else:
                runs.append((index, ch))
        return runs

    # layout
    def line(self, text: str) -> TextLine:
        """``text`` cut into pieces in screen order, measured (cached: captions are laid
        out again at every redraw)."""
        hit = self._lines.get(text)
        if hit is not None:
            self._lines.move_to_end(text)
            return hit
        rtl = base_direction(text) == "rtl"
        levels = _levels(text, rtl)
        level_runs: list[tuple[int, str]] = []
        for ch, level in zip(text, levels, strict=True):
            if level_runs and level_runs[-1][0] == level:
                level_runs[-1] = (level, level_runs[-1][1] + ch)
            else:
                level_runs.append((level, ch))
        pieces: list[Piece] = []
        x = 0.0
        for level, part in _visual_order(level_runs):
            direction = "rtl" if level % 2 else "ltr"
            font_runs = self.runs(part)
            if direction == "rtl":
                font_runs.reverse()
            for index, chunk in font_runs:
                width = self._length(index, chunk, direction)
                pieces.append(Piece(index, chunk, direction, x, width))
                x += width
        line = TextLine(tuple(pieces), round(x), rtl)
        self._lines[text] = line
        if len(self._lines) > 2048:
            self._lines.popitem(last=False)
        return line

    def _length(self, index: int, text: str, direction: str) -> float:
        font = self.fonts[index]
        if self._shaping[index]:
            return font.getlength(text, direction=direction)
        return font.getlength(text[::-1] if direction == "rtl" else text)

    def width(self, text: str) -> int:
        """Pixel width of ``text`` (a ``measure`` for ``rollup.wrap``)."""
        return self.line(text).width

    def draw(
        self,
        draw: ImageDraw.ImageDraw,
        x: float,
        baseline: float,
        text: str,
        fill: tuple[int, ...] | int,
        *,
        align_width: int | None = None,
    ) -> TextLine:
        """Draw ``text`` with its left edge at ``x`` and its baseline at ``baseline``; a
        right-to-left paragraph is aligned to ``x + align_width`` when that is given."""
        line = self.line(text)
        if line.rtl and align_width is not None:
            x += align_width - line.width
        self.draw_pieces(draw, x, baseline, line.pieces, fill)
        return line

    def draw_pieces(
        self,
        draw: ImageDraw.ImageDraw,
        x: float,
        baseline: float,
        pieces: Sequence[Piece],
        fill: tuple[int, ...] | int,
    ) -> None:
        """Draw ``pieces`` (of a ``line``, or from ``appended``) of a line whose left edge
        is at ``x``, in order."""
        for piece in pieces:
            font = self.fonts[piece.font]
            y = baseline - self.raise_px[piece.font]
            if self._shaping[piece.font]:
                draw.text(
                    (x + piece.x, y),
                    piece.text,
                    font=font,
                    fill=fill,
                    anchor="ls",
                    direction=piece.direction,
                )
            else:  # no raqm: no shaping either; right-to-left at least in the right order
                chunk = piece.text[::-1] if piece.direction == "rtl" else piece.text
                draw.text((x + piece.x, y), chunk, font=font, fill=fill, anchor="ls")

    def appended(self, old: str, text: str) -> list[Piece] | None:
        """The pieces that turn ``old``, drawn, into ``text`` drawn whole, when ``text`` is
        ``old``, a space and more: drawn over ``old`` (``draw_pieces`` at the same place),
        they give the same pixels for a fraction of the work — a caption growing word by
        word is drawn a word at a time. Pillow lays each glyph over those drawn before it,
        in one ``draw.text`` call as across calls, so this holds as long as ``old``'s pieces
        stay as they were (the same fonts at the same places), all left to right, with
        nothing kerned or shaped across the space: the advances add up. None otherwise
        (right to left, a font or direction that changes, a word that grew; a Pillow older
        than 10.2, which combined glyphs differently within one call)."""
        if not GLYPHS_OVER or len(text) <= len(old) or not text.startswith(old):
            return None
        if not text[len(old)].isspace():
            return None
        before, after = self.line(old), self.line(text)
        k = len(before.pieces)
        if before.rtl or after.rtl or not k or len(after.pieces) < k:
            return None
        last, grown = before.pieces[-1], after.pieces[k - 1]
        if (
            after.pieces[: k - 1] != before.pieces[: k - 1]
            or (grown.font, grown.x, last.direction) != (last.font, last.x, "ltr")
            or not grown.text.startswith(last.text)
            or any(p.direction != "ltr" for p in after.pieces[k - 1 :])
        ):
            return None
        rest = grown.text[len(last.text) :]
        pieces = list(after.pieces[k:])
        if rest:
            width = self._length(grown.font, rest, "ltr")
            if not rest[0].isspace() or grown.width != last.width + width:
                return None  # kerned, or shaped differently, across the join
            pieces.insert(0, Piece(grown.font, rest, "ltr", grown.x + last.width, width))
        return pieces


def fit(ink: tuple[float, float], room: tuple[float, float]) -> tuple[float, float]:
    """(scale, raise) that bring glyphs reaching ``ink`` (above, below the baseline, in
    font sizes) into ``room``: raised (or lowered) at most MAX_RAISE, shrunk only as much
    as that leaves over. (1, 0) when they fit already."""
    above, below = ink
    room_above, room_below = room
    if above <= room_above and below <= room_below:
        return 1.0, 0.0
    scale = min(
        1.0,
        (room_above + room_below) / max(above + below, 1e-9),
        (room_above + MAX_RAISE) / max(above, 1e-9),
        (room_below + MAX_RAISE) / max(below, 1e-9),
    )
    scale = math.floor(scale * 100) / 100  # whole percents: the same size for every run
    low, high = scale * below - room_below, room_above - scale * above  # raises that fit
    lift = min(max(0.0, low), high)
    return scale, round(lift, 3)


@functools.lru_cache(maxsize=64)
def _ink(path: Path, text: str, engine: ImageFont.Layout) -> tuple[float, float]:
    """How far ``text`` in the font ``path`` reaches above and below the baseline, in
    font sizes (measured large, once)."""
    size = 200
    try:
        font = ImageFont.truetype(str(path), size, layout_engine=engine)
        _left, top, _right, bottom = font.getbbox(text, anchor="ls")
    except Exception:  # a font that cannot lay it out: nothing to fit
        log.debug("cannot measure %s", path, exc_info=True)
        return 0.0, 0.0
    return max(0.0, -top / size), max(0.0, bottom / size)


@functools.lru_cache(maxsize=32)
def _cached_coverage(path: Path) -> Coverage | None:
    with contextlib.suppress(Exception):
        return read_coverage(path)
    return None
