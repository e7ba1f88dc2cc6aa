"""Captions on an HDMI screen, drawn into the Linux framebuffer with Pillow.

Layout: ``rollup`` keeps the newest ``lines`` rows in a band at the bottom of the screen,
``fullscreen`` fills the screen; words wrap by their measured pixel width; final text is
bright, provisional text dimmed, a translation sits under its line in its own colour (or
only one of them is shown). A status line sits above the captions when there is something to
say ("Listening…" while no captions come, "No microphone", "Speech service refused the
session (…)"); a loss of speech shows there for a while. After ``dim_after`` without
captions they are dimmed, after ``blank_after`` the screen goes dark; the next caption
wakes it.

Fonts: a chain of font files, tried in order for every character, so Latin, Devanagari,
CJK and Arabic captions render once the fonts are installed (a character no font has is
drawn with the first). A line with right-to-left script is drawn whole, right-aligned, by
the first font that has all of it, so raqm can shape and order it.

No flicker: the band is rendered off-screen, packed, and compared with what is on the
screen row by row; only changed rows are written, and at most ``max_fps`` times a second.
"""

from __future__ import annotations

import functools
import time
import unicodedata
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.daemon.status import StatusSnapshot
from edgecap.outputs.base import OutputEvent
from edgecap.outputs.framebuffer import Framebuffer, FramebufferInfo, pack, read_geometry
from edgecap.outputs.rollup import CaptionLines, layout, wrap

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
NORMAL_AUDIO = ("listening", "speech", "starting")
NOTICE_SECONDS = 10.0
DIM = 0.35  # dimmed captions keep this share of their brightness
RAQM = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC


@functools.lru_cache(maxsize=64)
def find_font(name: str) -> Path | None:
    """A font file by path, or by file name under the usual font directories."""
    path = Path(name)
    if path.is_absolute():
        return path if path.is_file() else None
    for base in FONT_DIRS:
        if base.is_dir():
            for hit in base.rglob(name):
                return hit
    return None


def _rtl(text: str) -> bool:
    return any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text)


class FontChain:
    """Fonts tried in order per character (coverage is tested once per font and char)."""

    def __init__(self, names: tuple[str, ...], size: int) -> None:
        self.size = size
        self.fonts: list[ImageFont.FreeTypeFont] = []
        self.missing: list[str] = []
        for name in names:
            path = find_font(name)
            if path is None:
                self.missing.append(name)
                continue
            self.fonts.append(ImageFont.truetype(str(path), size, layout_engine=RAQM))
        if not self.fonts:
            self.fonts.append(ImageFont.load_default(size))
        self._notdef = [self._mask(f, "\U0010fffd") for f in self.fonts]
        self._has: dict[tuple[int, str], bool] = {}

    @staticmethod
    def _mask(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
        try:
            return bytes(font.getmask(ch, mode="L"))
        except Exception:  # a font that cannot render it does not have it
            return b""

    def has(self, index: int, ch: str) -> bool:
        key = (index, ch)
        if key not in self._has:
            if ch.isspace() or unicodedata.category(ch) in ("Mn", "Mc", "Me", "Cf"):
                self._has[key] = True  # joins the run of the character before it
            else:
                self._has[key] = self._mask(self.fonts[index], ch) != self._notdef[index]
        return self._has[key]

    def font_for(self, ch: str) -> int:
        for i in range(len(self.fonts)):
            if self.has(i, ch):
                return i
        return 0

    def runs(self, text: str) -> list[tuple[int, str]]:
        """(font index, text) runs; marks and spaces stay with the run before them."""
        runs: list[tuple[int, str]] = []
        for ch in text:
            keep = runs and (ch.isspace() or unicodedata.category(ch).startswith("M"))
            index = runs[-1][0] if keep else self.font_for(ch)
            if runs and runs[-1][0] == index:
                runs[-1] = (index, runs[-1][1] + ch)
            else:
                runs.append((index, ch))
        return runs

    def whole(self, text: str) -> int:
        """The first font that has every character of ``text`` (0 if none)."""
        for i in range(len(self.fonts)):
            if all(self.has(i, ch) for ch in text):
                return i
        return 0

    def width(self, text: str) -> int:
        if _rtl(text):
            return int(self.fonts[self.whole(text)].getlength(text, direction="rtl"))
        return int(sum(self.fonts[i].getlength(t) for i, t in self.runs(text)))

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill, width: int):  # type: ignore[no-untyped-def]
        x, y = xy
        if _rtl(text):
            font = self.fonts[self.whole(text)]
            w = font.getlength(text, direction="rtl")
            draw.text((x + width - w, y), text, font=font, fill=fill, direction="rtl")
            return
        for index, part in self.runs(text):
            font = self.fonts[index]
            draw.text((x, y), part, font=font, fill=fill)
            x += font.getlength(part)


class HdmiOutput:
    name = "hdmi"
    idle_interval = 0.05

    def __init__(
        self,
        device: Path,
        sysfs: Path,
        *,
        width: int = 0,
        height: int = 0,
        bpp: int = 0,
        stride: int = 0,
        layout_mode: str = "rollup",
        lines: int = 3,
        show: str = "both",
        fonts: tuple[str, ...] = ("DejaVuSans.ttf",),
        font_size: int = 0,
        color: tuple[int, int, int] = (255, 255, 255),
        provisional_color: tuple[int, int, int] = (160, 160, 160),
        translation_color: tuple[int, int, int] = (255, 214, 102),
        background: tuple[int, int, int] = (0, 0, 0),
        max_fps: int = 15,
        dim_after: float = 300.0,
        blank_after: float = 1800.0,
        clock=time.monotonic,  # type: ignore[no-untyped-def]
    ) -> None:
        self.device, self.sysfs = Path(device), Path(sysfs)
        self.geometry = dict(width=width, height=height, bpp=bpp, stride=stride)
        self.layout_mode = layout_mode
        self.lines = lines
        self.show = show
        self.font_names = fonts
        self.font_size = font_size
        self.colors = {
            "final": color,
            "provisional": provisional_color,
            "translation": translation_color,
            "status": provisional_color,
        }
        self.background = background
        self.min_interval = 1.0 / max_fps
        self.dim_after = dim_after
        self.blank_after = blank_after
        self.clock = clock
        self.fb: Framebuffer | None = None
        self.info: FramebufferInfo | None = None
        self._captions = CaptionLines(keep=max(20, lines * 3))
        self._snapshot: StatusSnapshot | None = None
        self._notice = ""
        self._notice_until = 0.0
        self._last_caption = clock()
        self._dirty = True
        self._last_render = -1e9
        self._on_screen: np.ndarray | None = None  # packed band as last written
        self.renders = 0
        self.rows_written = 0
        self.render_ms: deque[float] = deque(maxlen=1000)  # render + pack + write, recent

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        info = read_geometry(self.device, self.sysfs, **self.geometry)
        fb = Framebuffer(info)
        fb.open()
        self.fb, self.info = fb, info
        size = self.font_size or max(14, info.height // 18)
        self.fonts = FontChain(self.font_names, size)
        self.small = FontChain(self.font_names, max(12, size * 2 // 3))
        self.line_height = round(size * 1.35)
        self.margin = max(8, info.width // 40)
        if self.layout_mode == "fullscreen":
            self.band_top = 0
            self.rows = max(1, (info.height - self.line_height) // self.line_height)
        else:
            # `lines` caption lines, each with room for its translation when both are shown
            self.rows = self.lines * (2 if self.show == "both" else 1)
            band = self.line_height * (self.rows + 1) + self.margin
            self.band_top = max(0, info.height - band)
        self._on_screen = None
        self._dirty = True
        # Start from a clean screen: whatever was there (a console) goes.
        blank = np.zeros((info.height, info.width, 3), dtype=np.uint8)
        blank[...] = self.background
        fb.write_rows(0, pack(blank, info.bpp))

    def handle(self, event: OutputEvent) -> None:
        now = self.clock()
        if isinstance(event, CaptionLine):
            if self._captions.apply(event):
                self._dirty = True
                self._last_caption = now
        elif isinstance(event, AudioLoss):
            self._notice = f"⚠ {event.seconds:.1f} s of speech lost ({event.reason})"
            self._notice_until = now + NOTICE_SECONDS
            self._dirty = True
        elif isinstance(event, StatusSnapshot):
            self._snapshot = event
            self._dirty = True
        self.idle(now)

    @property
    def _status(self) -> str:
        """The status line: any trouble; "Listening…" while there are no captions yet."""
        snap = self._snapshot
        if snap is None:
            return ""
        summary = snap.summary()
        normal = snap.state_of("audio") in NORMAL_AUDIO and "·" not in summary
        return "" if normal and len(self._captions) else summary

    def idle(self, now: float) -> None:
        now = self.clock()
        if self._notice and now > self._notice_until:
            self._notice, self._dirty = "", True
        quiet = now - self._last_caption
        state = self._phase(quiet)
        if state != getattr(self, "_phase_drawn", None):
            self._dirty = True
        if not self._dirty or self.fb is None or now - self._last_render < self.min_interval:
            return
        self._render(state)
        self._last_render = now

    def close(self) -> None:
        if self.fb is not None:
            self.fb.close()
            self.fb = None

    # --- drawing ----------------------------------------------------------------------
    def _phase(self, quiet: float) -> str:
        if self.blank_after and quiet >= self.blank_after:
            return "blank"
        if self.dim_after and quiet >= self.dim_after:
            return "dim"
        return "on"

    def _render(self, phase: str) -> None:
        assert self.info is not None and self.fb is not None
        t0 = time.perf_counter()
        info = self.info
        band_h = info.height - self.band_top
        img = Image.new("RGB", (info.width, band_h), self.background)
        if phase != "blank":
            draw = ImageDraw.Draw(img)
            text_w = info.width - 2 * self.margin
            rows = layout(self._captions.lines(), self.rows, text_w, self.show, self.fonts.width)
            y = band_h - self.margin - self.line_height * len(rows)
            for row in rows:
                fill = self._color(self.colors[row.style], phase)
                self.fonts.draw(draw, (self.margin, y), row.text, fill, text_w)
                y += self.line_height
            top = self._notice or self._status
            if top:
                top = (wrap(top, text_w, self.small.width) or [""])[0]
                ys = band_h - self.margin - self.line_height * (self.rows + 1)
                ys = max(0, ys + (self.line_height - self.small.size) // 2)
                self.small.draw(draw, (self.margin, ys), top, self.colors["status"], text_w)
        packed = pack(np.asarray(img), info.bpp)
        self._write_changed(packed)
        self._phase_drawn = phase
        self._dirty = False
        self.renders += 1
        self.render_ms.append((time.perf_counter() - t0) * 1000)

    def _color(self, rgb: tuple[int, int, int], phase: str) -> tuple[int, int, int]:
        if phase != "dim":
            return rgb
        bg = self.background
        return tuple(round(b + (c - b) * DIM) for c, b in zip(rgb, bg, strict=True))  # type: ignore[return-value]

    def _write_changed(self, packed: np.ndarray) -> None:
        assert self.fb is not None
        old = self._on_screen
        if old is None or old.shape != packed.shape:
            changed = np.ones(packed.shape[0], dtype=bool)
        else:
            changed = (old != packed).any(axis=1)
        idx = np.flatnonzero(changed)
        if idx.size:
            # contiguous runs of changed rows, one write each
            breaks = np.flatnonzero(np.diff(idx) > 1)
            starts = np.concatenate(([idx[0]], idx[breaks + 1]))
            ends = np.concatenate((idx[breaks], [idx[-1]]))
            for a, b in zip(starts, ends, strict=True):
                self.fb.write_rows(self.band_top + int(a), packed[a : b + 1])
                self.rows_written += int(b - a + 1)
        self._on_screen = packed
