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
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import os
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageDraw, ImageFont, features

log = logging.getLogger(__name__)

HAVE_RAQM = features.check("raqm")
RAQM = ImageFont.Layout.RAQM if HAVE_RAQM else ImageFont.Layout.BASIC


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
    ``missing``) at ``size`` pixels, tried in order for each character."""

    def __init__(
        self,
        names: Sequence[str],
        size: int,
        *,
        layout_engine: ImageFont.Layout | None = None,
        dirs: Iterable[Path] | None = None,
    ) -> None:
        self.size = size
        self.layout_engine = RAQM if layout_engine is None else layout_engine
        self.fonts: list[ImageFont.FreeTypeFont] = []
        self.paths: list[Path] = []
        self.missing: list[str] = []
        self._coverage: list[Coverage | None] = []
        dirs = list(dirs) if dirs is not None else None
        for name in names:
            path = find_font(name, dirs)
            if path is None:
                self.missing.append(name)
                continue
            try:
                font = ImageFont.truetype(str(path), size, layout_engine=self.layout_engine)
            except OSError as exc:
                log.warning("font %s cannot be loaded: %s", path, exc)
                self.missing.append(name)
                continue
            self.fonts.append(font)
            self.paths.append(path)
            self._coverage.append(_cached_coverage(path))
        if not self.fonts:
            log.warning("none of the fonts %s is installed; using Pillow's own", list(names))
            self.fonts.append(ImageFont.load_default(size))
            self._coverage.append(None)
        self._notdef: dict[int, bytes] = {}
        self._has: dict[tuple[int, str], bool] = {}
        self._lines: OrderedDict[str, TextLine] = OrderedDict()
        # raqm per font: Pillow's own font (the last resort) is always laid out without it
        self._shaping = [f.layout_engine == ImageFont.Layout.RAQM for f in self.fonts]

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
        """Index of the first font that has ``ch`` (0 when none has it: it draws a box)."""
        for i in range(len(self.fonts)):
            if self.covers(i, ch):
                return i
        return 0

    def runs(self, text: str) -> list[tuple[int, str]]:
        """(font index, text) runs in logical order. Marks, joiners and spaces stay in the
        run before them, so a syllable or a word is never split between fonts."""
        runs: list[tuple[int, str]] = []
        for ch in text:
            follows = ch.isspace() or unicodedata.category(ch) in ("Mn", "Mc", "Me", "Cf")
            index = runs[-1][0] if runs and follows else self.font_for(ch)
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
        for piece in line.pieces:
            font = self.fonts[piece.font]
            if self._shaping[piece.font]:
                draw.text(
                    (x + piece.x, baseline),
                    piece.text,
                    font=font,
                    fill=fill,
                    anchor="ls",
                    direction=piece.direction,
                )
            else:  # no raqm: no shaping either; right-to-left at least in the right order
                chunk = piece.text[::-1] if piece.direction == "rtl" else piece.text
                draw.text((x + piece.x, baseline), chunk, font=font, fill=fill, anchor="ls")
        return line


@functools.lru_cache(maxsize=32)
def _cached_coverage(path: Path) -> Coverage | None:
    with contextlib.suppress(Exception):
        return read_coverage(path)
    return None
