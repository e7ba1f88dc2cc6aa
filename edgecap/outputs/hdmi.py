"""Captions on an HDMI screen, drawn into the Linux framebuffer with Pillow.

Layout. The screen is a stack of text rows ("slots") of one height. ``rollup`` uses a band
at the bottom of the screen: one status slot on top, then ``lines`` caption slots for each
row a line takes (the original, plus one per translation shown: the languages listed in
``translations``, else one); the newest rows sit at the bottom. ``fullscreen`` uses the
whole screen: the status slot at the top, captions filling the page from the top and
rolling once it is full. Words wrap by their measured pixel width (``rollup.wrap`` with the
font chain as the measure).

Translations stack under their line, each on row(s) of its own, in the order of
``translations`` (only those languages), or when that is empty the line's own (target)
order, at most ``MAX_STACK`` of them. Final text is drawn in ``color``, provisional text in
``provisional_color``, the translations in ``translation_color`` — one colour per place in
the stack (the last one repeats), so viewers can tell the languages apart. ``show`` keeps
only the original or only the translations.

The status slot says what is wrong or that nothing is happening: the status summary
("No microphone", "Speech service refused the session (…)") whenever audio or the link is
in trouble, and also ("Listening…") while there are no captions yet or none came for
``IDLE_STATUS_AFTER`` seconds. A loss of speech (AudioLoss) shows there for
``NOTICE_SECONDS``. After ``dim_after`` without captions everything is dimmed, after
``blank_after`` the screen is painted black and powered down (FBIOBLANK) where the driver
allows; the next caption wakes it.

Joining from a phone (``join_url``, from ``[web]``): the caption page's address is shown as a
QR code at the right end of the band, as tall as the status slot and the caption slots
together (at the top right in ``fullscreen``), black on white whatever the colours (what
every phone camera reads), and the captions keep to its left. It is drawn once per layout
and stays while the screen is on or dimmed; a blanked screen shows nothing.

Font size (``font_size`` 0): min(height / 16, width / 26) — 67 px at 1920×1080, 30 px at
800×480 — then shrunk, if needed, until every slot of the roll-up fits on the screen.

No flicker, little work: the output knows what each slot shows (its strip key: the kind,
text and colour) and writes only the slots whose key changed — one ``pwrite`` of the rows
the slot's old and new text cover (whole rows: the framebuffer is row-major), composed from
the background row, the text and the QR code's columns where it stands beside them. A
provisional line that grew by a word costs one strip and one write; a roll-up scroll changes
every slot's key and rewrites each once, from strips kept while they stay on screen (a line
that scrolls up is not drawn again). A strip is drawn only as wide as its text, into a
coverage mask ("L"), and packed through a 256-entry table of its colour over the
background (the arithmetic Pillow uses to draw text in RGB: the same pixels), over the
text's bounding box only; the rest of the slot is the background row. Its coverage is kept:
the same words in another colour (final, dimmed) are not drawn again, and a caption that
continues one on screen by a word or more is drawn over that one's coverage, the added
words only (``FontChain.appended``: exactly what drawing it whole gives).

Redraws happen at most ``max_fps`` times a second: ``handle`` only records what changed, and
the redraw happens in ``handle`` or ``idle`` once 1/max_fps has passed since the last one.
Once a minute the whole screen is composed and written again, a slot's height at a time
(identical pixels: no flicker), which repairs anything a console drew over the captions;
while nothing is drawn in between, the rewrites back off (2, 4 … 16 minutes: a full frame
costs a Pi Zero some 25 ms), and none is done while the screen is blanked (black and
powered down) but one at once when it wakes. A write that fails leaves the screen unknown:
the next frame is written whole.

Between events the output sleeps until the next thing that changes the screen by itself
(``wake_in``): a held-back frame, the end of a loss notice, "Listening…" coming back, the
dim and blank times, the minute's rewrite. A blanked screen with no captions sleeps until
the next event.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.outputs.base import TEXT, OutputEvent, OutputUnavailable
from edgecap.outputs.fonts import FontChain
from edgecap.outputs.framebuffer import (
    Framebuffer,
    FramebufferInfo,
    Packed,
    coverage_tables,
    pack_color,
    pack_coverage,
    pack_image,
    read_geometry,
)
from edgecap.outputs.rollup import CaptionLines, Row, choose_translations, line_rows, wrap
from edgecap.runtime.status import LINK_PROBLEMS, StatusSnapshot

if TYPE_CHECKING:
    from edgecap.config.schema import HdmiConfig

RGB = tuple[int, int, int]
StripKey = tuple[str, str, RGB]  # (kind: "caption" or "status", text, colour)

NORMAL_AUDIO = ("listening", "speech", "starting")
IDLE_STATUS_AFTER = 10.0  # seconds without captions before "Listening…" shows again
NOTICE_SECONDS = 10.0  # how long a loss of speech is shown
DIM = 0.35  # dimmed text keeps this share of its brightness against the background
LINE_HEIGHT = 1.45  # slot height, in font sizes: room for Devanagari marks above and below
BASELINE = 1.07  # baseline from the top of a slot, in font sizes
STATUS_SCALE = 0.6  # status text size, in caption font sizes
REFRESH_SECONDS = 60.0  # rewrite the whole screen this often (heals what others drew)
REFRESH_QUIET_MAX = 960.0  # while nothing changes, the rewrites back off (×2) up to this
MAX_STACK = 2  # translations under a line when no languages are listed


@dataclass(frozen=True)
class Strip:
    """A slot's text, packed: ``pixels`` (rows × bytes) stand ``top`` rows into the slot and
    ``left`` bytes into a row; everything else in the slot is background. ``cover`` is the
    text's coverage over the same box (``x`` pixels into the row), kept so that the text
    can grow or change colour without being drawn again."""

    top: int
    left: int
    pixels: Packed
    text: str = ""
    x: int = 0
    cover: Image.Image | None = None
    fill: RGB | None = None

    @property
    def rows(self) -> tuple[int, int]:
        """The slot's rows the text covers (top, end); (0, 0) when it has no ink."""
        h = self.pixels.height
        return (self.top, self.top + h) if h else (0, 0)


NO_INK = Strip(0, 0, Packed.empty())


def screen_margin(width: int, height: int) -> int:
    """Space kept free at the screen's edges (TVs may crop a little: overscan)."""
    return max(6, min(width // 32, height // 18))


def auto_font_size(width: int, height: int, slots: int = 0) -> int:
    """The caption font size for a screen: min(height/16, width/26), shrunk so that
    ``slots`` rows (0 = any number) fit between the margins."""
    size = min(height // 16, width // 26)
    if slots:
        size = min(size, int((height - 2 * screen_margin(width, height)) / (slots * LINE_HEIGHT)))
    return max(8, size)


def _rgb(color: tuple[int, ...]) -> RGB:
    r, g, b = color
    return (int(r), int(g), int(b))


def _rgb_list(colors: RGB | Sequence[RGB]) -> list[RGB]:
    """One colour, or several (one per translation in the stack)."""
    if len(colors) == 3 and all(isinstance(c, int) for c in colors):
        return [_rgb(colors)]  # type: ignore[arg-type]
    out = [_rgb(c) for c in colors]  # type: ignore[union-attr]
    if not out:
        raise ValueError("no translation colour")
    return out


class HdmiOutput:
    """The ``hdmi`` output (see the module docstring). ``clock`` (default
    time.monotonic) times redraws, the status line, the notice and dimming."""

    name = "hdmi"
    takes = TEXT

    def __init__(
        self,
        device: Path,
        sysfs: Path = Path("/sys/class/graphics"),
        *,
        width: int = 0,
        height: int = 0,
        bpp: int = 0,
        stride: int = 0,
        layout_mode: str = "rollup",
        lines: int = 3,
        show: str = "both",
        translations: Sequence[str] = (),
        fonts: tuple[str, ...] = ("DejaVuSans.ttf",),
        font_size: int = 0,
        color: RGB = (255, 255, 255),
        provisional_color: RGB = (160, 160, 160),
        translation_color: RGB | Sequence[RGB] = ((255, 214, 102), (125, 200, 255)),
        background: RGB = (0, 0, 0),
        max_fps: int = 8,
        dim_after: float = 300.0,
        blank_after: float = 1800.0,
        offline_mark: str = "",
        join_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if layout_mode not in ("rollup", "fullscreen"):
            raise ValueError(f"unknown layout {layout_mode!r}")
        self.device, self.sysfs = Path(device), Path(sysfs)
        self.geometry = {"width": width, "height": height, "bpp": bpp, "stride": stride}
        self.layout_mode = layout_mode
        self.lines = lines
        self.show = show
        self.languages = tuple(translations)
        self.offline_mark = offline_mark
        self.join_url = join_url
        self._qr: Packed | None = None  # the join QR code, packed, with its place
        self._qr_at = (0, 0)  # (top within the band, left in bytes)
        self.font_names = tuple(fonts)
        self.font_size = font_size
        self.colors: dict[str, RGB] = {
            "final": _rgb(color),
            "provisional": _rgb(provisional_color),
            "status": _rgb(provisional_color),
        }
        self.translation_colors = _rgb_list(translation_color)
        self.background = _rgb(background)
        self.min_interval = 1.0 / max_fps
        self.dim_after = dim_after
        self.blank_after = blank_after
        self.clock = clock

        self.fb: Framebuffer | None = None
        self.info: FramebufferInfo | None = None
        self.fonts: FontChain | None = None
        self.small: FontChain | None = None
        self._captions = CaptionLines(keep=60)
        self._snapshot: StatusSnapshot | None = None
        self._notice = ""
        self._notice_until = 0.0
        self._last_caption = clock()
        self._dirty = True
        self._last_render = float("-inf")
        self._last_refresh = float("-inf")
        self._refresh_every = REFRESH_SECONDS
        self._renders_refreshed = 0  # renders when the screen was last rewritten whole
        self._drawn: tuple[str, str] | None = None  # (phase, status text) on screen
        # What the screen shows: each slot's strip key (0 = the status slot, then the
        # caption slots top to bottom; None = background) and whether the QR code is up.
        self._slots: list[StripKey | None] = []
        self._qr_on = False
        self._unknown = False  # a write failed: the next frame is written whole
        self._strips: dict[StripKey, Strip] = {}  # the strips on screen
        self._laid_out: dict[int, tuple[CaptionLine, list[Row]]] = {}  # seq → its rows
        # colour → for each byte of a packed pixel, its value per coverage 0..255
        self._luts: dict[RGB, tuple[list[int], ...]] = {}
        self._fonts_key: tuple[tuple[str, ...], int] | None = None
        # counters, for tests and bench/outputs.py
        self.renders = 0
        self.render_ms: deque[float] = deque(maxlen=1000)  # layout + draw + pack + write
        self.strips_drawn = 0  # strips whose text was drawn (rendered with FreeType)
        self.strips_grown = 0  # … of them, only the words added to one on screen

    @classmethod
    def from_config(
        cls,
        cfg: HdmiConfig,
        *,
        offline_mark: str = "",
        join_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> HdmiOutput:
        """The output as ``[hdmi]`` describes it. ``offline_mark`` begins the lines of the
        offline engine when it stands in for a cloud service (empty: no mark); ``join_url``
        is shown as a QR code (None: none)."""
        return cls(
            cfg.device,
            cfg.sysfs,
            width=cfg.width,
            height=cfg.height,
            bpp=cfg.bpp,
            stride=cfg.stride,
            layout_mode=cfg.layout,
            lines=cfg.lines,
            show=cfg.show,
            translations=cfg.translations,
            fonts=cfg.fonts,
            font_size=cfg.font_size,
            color=cfg.color,
            provisional_color=cfg.provisional_color,
            translation_color=cfg.translation_color,
            background=cfg.background,
            max_fps=cfg.max_fps,
            dim_after=cfg.dim_after,
            blank_after=cfg.blank_after,
            offline_mark=offline_mark,
            join_url=join_url,
            clock=clock,
        )

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        """Read the geometry, open the device, lay out the slots and clear the screen
        (a full-frame write: whatever was there, a console, goes)."""
        info = read_geometry(self.device, self.sysfs, **self.geometry)
        fb = Framebuffer(info)
        fb.open()
        try:
            self._setup(info)  # every slot empty, no QR code: the frame is background
            fb.set_power(True)
            self._write_frame(fb)
        except BaseException:
            fb.close()
            raise
        self.fb, self.info = fb, info
        self._drawn = None
        self._dirty = True
        self._last_render = float("-inf")
        self._last_refresh = self.clock()
        self._refresh_every = REFRESH_SECONDS

    def handle(self, event: OutputEvent) -> None:
        now = self.clock()
        if isinstance(event, CaptionLine):
            if self._captions.apply(event):
                self._dirty = True
                self._last_caption = now
        elif isinstance(event, AudioLoss):
            where = f" ({event.reason})" if event.reason else ""
            self._notice = f"⚠ {event.seconds:.1f} s of speech lost{where}"
            self._notice_until = now + NOTICE_SECONDS
            self._dirty = True
        elif isinstance(event, StatusSnapshot):
            self._snapshot = event  # redrawn only if the status line's text changes
        self._maybe_render(now)

    def idle(self, now: float) -> None:
        # The output's own clock, not ``now``: handle() has no ``now``, and both must agree
        # (tests inject one clock for everything).
        self._maybe_render(self.clock())

    def wake_in(self, now: float) -> float | None:
        """Seconds until the screen changes without an event (see the module docstring);
        None while it has nothing to change by itself (blanked, or not open)."""
        if self.fb is None:
            return None
        t = self.clock()  # the output's clock, like idle()
        due: list[float] = []
        if self._dirty:
            due.append(self._last_render + self.min_interval)  # a frame held back
        if self._notice:
            due.append(self._notice_until)
        if self._snapshot is not None and len(self._captions):
            due.append(self._last_caption + IDLE_STATUS_AFTER)  # "Listening…" again
        for after in (self.dim_after, self.blank_after):
            if after:
                due.append(self._last_caption + after)
        if self._drawn is None or self._drawn[0] != "blank":
            due.append(self._last_refresh + self._refresh_every)
        if not due:
            return None
        if self._dirty:  # held back: due no later than its frame (even if in the past)
            return max(0.0, min(due) - t)
        upcoming = [d for d in due if d > t]  # what is past has been drawn already
        return min(upcoming) - t if upcoming else None

    def close(self) -> None:
        if self.fb is not None:
            if self._drawn and self._drawn[0] == "blank":
                self.fb.set_power(True)  # never leave the console on a powered-down screen
            self.fb.close()
            self.fb = None
        self._slots = []
        self._strips.clear()
        self._laid_out.clear()

    # --- what to show -------------------------------------------------------------------
    def phase(self, now: float) -> str:
        """The screen's phase from the time since the last caption: "on", "dim" or "blank"."""
        quiet = now - self._last_caption
        if self.blank_after and quiet >= self.blank_after:
            return "blank"
        if self.dim_after and quiet >= self.dim_after:
            return "dim"
        return "on"

    def status_text(self, now: float) -> str:
        """The status slot: a loss notice, else the status summary when something is
        wrong, or when there are no captions (yet, or for IDLE_STATUS_AFTER seconds)."""
        if self._notice and now < self._notice_until:
            return self._notice
        snap = self._snapshot
        if snap is None:
            return ""
        link = snap.state_of("link")
        trouble = (
            snap.state_of("audio") not in NORMAL_AUDIO
            or link in LINK_PROBLEMS
            or bool(snap.fresh_notice())
        )
        idle = not len(self._captions) or now - self._last_caption >= IDLE_STATUS_AFTER
        return snap.summary() if trouble or idle else ""

    def _maybe_render(self, now: float) -> None:
        if self.fb is None:
            return
        wanted = (self.phase(now), self.status_text(now))
        if wanted != self._drawn:
            self._dirty = True
        if self._dirty and now - self._last_render >= self.min_interval:
            waking = self._drawn is not None and self._drawn[0] == "blank"
            self._render(*wanted)
            self._last_render = now
            self._refresh_every = REFRESH_SECONDS  # something changed: every minute again
            if waking and wanted[0] != "blank":
                self._last_refresh = float("-inf")  # it was not rewritten while blanked
        if wanted[0] != "blank" and now - self._last_refresh >= self._refresh_every:
            self._refresh()
            self._last_refresh = now
            if self.renders == self._renders_refreshed:  # nothing drawn since the last
                self._refresh_every = min(2 * self._refresh_every, REFRESH_QUIET_MAX)
            self._renders_refreshed = self.renders

    def _refresh(self) -> None:
        """Write the whole screen again as it should be. The slot keys only know what this
        output wrote: kernel messages on a console bound to the framebuffer, or another
        program, may have drawn over it since. Identical pixels written again do not
        flicker; this costs one full-frame write a minute."""
        assert self.fb is not None
        self._write_frame(self.fb)

    # --- geometry ---------------------------------------------------------------------
    def _setup(self, info: FramebufferInfo) -> None:
        margin = screen_margin(info.width, info.height)
        rollup = self.layout_mode == "rollup"
        wanted = self.lines * self.rows_per_line if rollup else 0
        size = self.font_size or auto_font_size(
            info.width, info.height, wanted + 1 if rollup else 0
        )
        line_h = max(4, round(size * LINE_HEIGHT))
        fit = max(1, (info.height - 2 * margin) // line_h - 1)  # caption slots that fit
        rows = min(wanted, fit) if rollup else fit
        if rollup:
            self.band_top = max(0, info.height - margin - line_h * (rows + 1))
            self.status_y = 0  # slots are relative to band_top
        else:
            self.band_top = 0
            self.status_y = margin
        self.margin, self.line_height, self.rows = margin, line_h, rows
        self.size = size
        self.text_width = max(1, info.width - 2 * margin)
        self.band_height = info.height - self.band_top
        self._qr = None
        if self.join_url:
            self._setup_qr(info)
        if self._fonts_key != (self.font_names, size):  # fonts survive a reopen
            small = max(8, round(size * STATUS_SCALE))
            self.fonts = FontChain(self.font_names, size)
            self.small = FontChain(self.font_names, small)
            self._fonts_key = (self.font_names, size)
        self.baseline = round(size * BASELINE)
        small_size = self.small.size if self.small else size
        self.status_baseline = round(line_h / 2 + small_size * 0.38)  # centred in its slot
        # rows are composed here before they are written: a slot's worth at a time, on
        # the background's rows
        self._bg_rows = pack_color(self.background, info.bpp) * (info.width * line_h)
        self._scratch = bytearray(self._bg_rows)
        self._row_bytes = info.row_bytes
        self._bpp = info.bpp
        self._width, self._height = info.width, info.height
        self._slots = [None] * (rows + 1)
        self._qr_on = False
        self._unknown = False
        self._strips.clear()
        self._laid_out.clear()
        self._luts.clear()

    def _setup_qr(self, info: FramebufferInfo) -> None:
        """The join QR code, packed once for this layout; the text keeps to its left."""
        from edgecap.outputs.web.address import qr_image

        assert self.join_url is not None
        if self.layout_mode == "rollup":
            area = self.line_height * (self.rows + 1)  # the status slot and the captions
        else:
            area = info.height // 3
        img = qr_image(self.join_url, min(area, info.width // 4))
        left = info.width - self.margin - img.width
        if img.width < 21 + 8:
            return  # a screen too small for one pixel a module: the captions keep it all
        self._qr = pack_image(img, info.bpp)
        # at the bottom of the roll-up band, beside the newest line; at the top in fullscreen
        top = self.status_y + (area - img.height if self.layout_mode == "rollup" else 0)
        self._qr_at = (top, left * info.bpp // 8)
        self.text_width = max(1, left - 2 * self.margin)

    @property
    def rows_per_line(self) -> int:
        """Slots the roll-up band keeps per caption line: the original and a row per
        translation shown (the listed languages, else one; a line with more translations
        than that, or text that wraps, takes more and fewer lines show)."""
        original = self.show in ("both", "original")
        translations = self.show in ("both", "translation")
        return int(original) + (max(1, len(self.languages)) if translations else 0)

    def slot_y(self, index: int) -> int:
        """Top of caption slot ``index`` (0 = the first under the status slot), relative to
        ``band_top``."""
        return self.status_y + self.line_height * (index + 1)

    def _slot_top(self, slot: int) -> int:
        """Screen row where slot ``slot`` of ``_slots`` begins (0 = the status slot)."""
        return self.band_top + self.status_y + self.line_height * slot

    # --- drawing ----------------------------------------------------------------------
    def _render(self, phase: str, status: str) -> None:
        assert self.fb is not None
        t0 = time.perf_counter()
        wanted: list[StripKey | None] = [None] * len(self._slots)
        if phase != "blank":
            rows = self._rows()
            first = self.rows - len(rows) if self.layout_mode == "rollup" else 0
            for i, row in enumerate(rows):
                wanted[1 + first + i] = (
                    "caption",
                    row.text,
                    self._color(self._row_color(row), phase),
                )
            if status:
                wanted[0] = ("status", status, self._color(self.colors["status"], phase))
        strips: dict[StripKey, Strip] = {}  # keep only what is on screen now
        for key in wanted:
            if key is not None and key not in strips:
                strip = self._strips.get(key)
                strips[key] = strip if strip is not None else self._draw_strip(*key)
        qr_on = phase != "blank" and self._qr is not None
        spans = self._changed_rows(wanted, strips, qr_on)
        self._slots, self._strips, self._qr_on = wanted, strips, qr_on
        if phase != "blank" and self._drawn and self._drawn[0] == "blank":
            self.fb.set_power(True)  # wake before drawing
        if self._unknown:
            self._write_frame(self.fb)
        else:
            self._write_spans(spans)
        if phase == "blank" and (self._drawn is None or self._drawn[0] != "blank"):
            self.fb.set_power(False)
        self._drawn = (phase, status)
        self._dirty = False
        self.renders += 1
        self.render_ms.append((time.perf_counter() - t0) * 1000)

    def _rows(self) -> list[Row]:
        """The caption rows to show, oldest first. Only the newest lines are laid out: a
        line with something to show gives at least one row, so no more of them than rows
        can be visible. A line's rows are kept while it is among them and unchanged (only
        the provisional line is wrapped again when it grows)."""
        assert self.fonts is not None
        recent: list[CaptionLine] = []
        visible = 0
        limit = None if self.languages else MAX_STACK
        for line in reversed(self._captions.lines()):
            recent.append(line)
            shown_text = self.show in ("both", "original") and line.text
            shown_translation = self.show in ("both", "translation") and choose_translations(
                line.translations, self.languages, limit
            )
            visible += bool(shown_text or shown_translation)
            if visible >= self.rows:
                break
        recent.reverse()
        out: list[Row] = []
        laid_out: dict[int, tuple[CaptionLine, list[Row]]] = {}
        for line in recent:
            hit = self._laid_out.get(line.seq)
            if hit is None or not (hit[0] is line or hit[0] == line):
                rows = line_rows(
                    line,
                    self.text_width,
                    self.show,
                    self.fonts.width,
                    self.offline_mark,
                    self.languages,
                    limit,
                )
                hit = (line, rows)
            laid_out[line.seq] = hit
            out += hit[1]
        self._laid_out = laid_out
        return out[-self.rows :] if self.rows else []

    def _row_color(self, row: Row) -> RGB:
        if row.style == "translation":
            return self.translation_colors[min(row.order, len(self.translation_colors) - 1)]
        return self.colors[row.style]

    def _draw_strip(self, kind: str, text: str, fill: RGB) -> Strip:
        """Draw one slot's text: into a coverage mask only as wide as the text (and an em
        either side for overhangs), packed through the colour's table over its ink. A
        caption that continues one on screen by a word or more is drawn over that one's
        coverage, only the words added (``FontChain.appended``); the same words in
        another colour are not drawn at all."""
        assert self.fonts is not None and self.small is not None
        if kind == "status":
            chain, baseline = self.small, self.status_baseline
            rows = wrap(text, self.text_width, chain.width) or [""]
            text = rows[0] if len(rows) == 1 else self._ellipsize(chain, rows[0])
        else:
            chain, baseline = self.fonts, self.baseline
        base = self._base_for(text) if kind == "caption" else None
        if base is not None and base.cover is not None and base.text == text:
            return self._packed(base.cover, base.x, base.top, text, fill)
        added = chain.appended(base.text, text) if base is not None else None
        self.strips_drawn += 1
        line = chain.line(text)
        x = self.margin + (self.text_width - line.width if line.rtl else 0)  # its left edge
        left = max(0, x - chain.size)
        right = min(self._width, x + line.width + chain.size)
        if right <= left:
            return NO_INK
        mask = Image.new("L", (right - left, self.line_height))
        draw = ImageDraw.Draw(mask)
        # At the same fractional positions as on a full-width strip: the shift is whole
        # pixels, so the glyphs come out the same.
        if added and base is not None and base.cover is not None:
            mask.paste(base.cover, (base.x - left, base.top))
            chain.draw_pieces(draw, self.margin - left, baseline, added, 255)
            self.strips_grown += 1
        else:
            added = None
            chain.draw(draw, self.margin - left, baseline, text, 255, align_width=self.text_width)
        box = mask.getbbox()
        if box is None:
            return NO_INK
        if not added:
            return self._packed(mask.crop(box), left + box[0], box[1], text, fill)
        # Ink two ems or more left of the added words is the base's, packed already.
        keep = math.floor(self.margin + added[0].x) - 2 * chain.size - (left + box[0])
        return self._packed(mask.crop(box), left + box[0], box[1], text, fill, base, keep)

    def _base_for(self, text: str) -> Strip | None:
        """The caption strip on screen whose text ``text`` is, or continues after a space
        (the longest such); None when there is none."""
        found: Strip | None = None
        for key, strip in self._strips.items():
            old = strip.text
            if (
                key[0] == "caption"
                and strip.cover is not None
                and text.startswith(old)
                and (len(text) == len(old) or text[len(old)].isspace())
                and (found is None or len(old) > len(found.text))
            ):
                found = strip
        return found

    def _packed(
        self,
        cover: Image.Image,
        x: int,
        top: int,
        text: str,
        fill: RGB,
        base: Strip | None = None,
        keep: int = 0,
    ) -> Strip:
        """A strip from the coverage of its ink box (at ``x``, ``top`` in the slot). With
        ``base``: its first ``keep`` columns are the same as ``base``'s, which are taken as
        they are when the box begins at the same place in the same colour."""
        tables = self._lut(fill)
        size = self._bpp // 8
        keep = min(keep, cover.width)
        if (
            base is not None
            and keep > 0
            and (base.x, base.top, base.fill) == (x, top, fill)
            and base.pixels.height == cover.height
            and base.pixels.row_bytes >= keep * size
        ):
            added = cover.crop((keep, 0, cover.width, cover.height))
            pixels = base.pixels.columns(0, keep * size).beside(
                pack_coverage(added, tables, self._bpp)
            )
        else:
            pixels = pack_coverage(cover, tables, self._bpp)
        return Strip(top, x * size, pixels, text, x, cover, fill)

    def _lut(self, fill: RGB) -> tuple[list[int], ...]:
        """Per byte of a packed pixel, its value for each coverage 0..255 of ``fill`` over
        the background (:func:`~edgecap.outputs.framebuffer.coverage_tables`)."""
        tables = self._luts.get(fill)
        if tables is None:
            tables = self._luts[fill] = coverage_tables(fill, self.background, self._bpp)
        return tables

    def _ellipsize(self, chain: FontChain, text: str) -> str:
        while text and chain.width(text + "…") > self.text_width:
            text = text[:-1]
        return text.rstrip() + "…"

    def _color(self, rgb: RGB, phase: str) -> RGB:
        if phase != "dim":
            return rgb
        bg = self.background
        return tuple(round(b + (c - b) * DIM) for c, b in zip(rgb, bg, strict=True))  # type: ignore[return-value]

    # --- writing ----------------------------------------------------------------------
    def _changed_rows(
        self, wanted: list[StripKey | None], strips: dict[StripKey, Strip], qr_on: bool
    ) -> list[tuple[int, int]]:
        """Screen rows (start, end) that differ between what the screen shows and
        ``wanted``: per slot whose key changed, the rows its old and new text cover; the
        QR code's rows when it comes or goes. Everything else is background in both."""
        spans: list[tuple[int, int]] = []
        if qr_on != self._qr_on and self._qr is not None:
            top = self.band_top + self._qr_at[0]
            spans.append((top, top + self._qr.height))
        for slot, (old, new) in enumerate(zip(self._slots, wanted, strict=True)):
            if old == new:
                continue
            before = self._strips[old].rows if old else (0, 0)
            after = strips[new].rows if new else (0, 0)
            covered = [r for r in (before, after) if r[1] > r[0]]
            if covered:
                top = self._slot_top(slot)
                spans.append((top + min(r[0] for r in covered), top + max(r[1] for r in covered)))
        return spans

    def _write_spans(self, spans: list[tuple[int, int]]) -> None:
        """Each run of rows (overlapping runs merged) composed from what the screen now
        shows and written, one pwrite per slot's height. A failed write leaves the screen
        unknown."""
        assert self.fb is not None
        merged: list[list[int]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        try:
            for a, b in merged:
                self._write_rows(self.fb, a, b)
        except OutputUnavailable:
            self._unknown = True
            raise

    def _write_frame(self, fb: Framebuffer) -> None:
        """The whole screen as it should be, a slot's height of rows at a time (no full
        frame is held in memory)."""
        try:
            self._write_rows(fb, 0, self._height)
        except OutputUnavailable:
            self._unknown = True
            raise
        self._unknown = False

    def _write_rows(self, fb: Framebuffer, a: int, b: int) -> None:
        """Screen rows ``a``..``b`` composed and written, one pwrite per scratch's worth."""
        step = self.line_height
        for y in range(a, b, step):
            fb.write_rows(y, self._compose(y, min(b, y + step)))

    def _compose(self, a: int, b: int) -> Packed:
        """Screen rows ``a``..``b`` (at most the scratch's height) as they should be:
        background, each slot's text, then the QR code over them."""
        rb = self._row_bytes
        n = (b - a) * rb
        out = memoryview(self._scratch)[:n]
        out[:] = memoryview(self._bg_rows)[:n]
        for slot, key in enumerate(self._slots):
            if key is not None:
                strip = self._strips[key]
                top = self._slot_top(slot) + strip.top
                self._paste(out, rb, a, b, top, strip.left, strip.pixels)
        if self._qr_on and self._qr is not None:
            top, left = self._qr_at
            self._paste(out, rb, a, b, self.band_top + top, left, self._qr)
        return Packed(out, b - a, rb)  # valid until the next compose

    @staticmethod
    def _paste(
        out: memoryview, row_bytes: int, a: int, b: int, y: int, x: int, pixels: Packed
    ) -> None:
        """Put ``pixels`` at screen row ``y``, byte ``x`` into ``out``, which holds screen
        rows ``a``..``b`` of ``row_bytes`` each; only the rows that fall inside."""
        lo, hi = max(a, y), min(b, y + pixels.height)
        width, data = pixels.row_bytes, memoryview(pixels.data)
        for row in range(lo, hi):
            at = (row - a) * row_bytes + x
            src = (row - y) * width
            out[at : at + width] = data[src : src + width]
