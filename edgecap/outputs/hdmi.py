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

No flicker, little work: each slot is rendered on its own into a strip already packed in
the framebuffer's format, and strips are kept while they stay on screen (a line that
scrolls up is not drawn again). The band is composed from strips, compared row by row
with what the screen shows, and only the rows that differ are written, one ``pwrite``
per run of adjacent rows. Redraws happen at most ``max_fps`` times a second: ``handle``
only records what changed, and the redraw happens in ``handle`` or ``idle`` once
1/max_fps has passed since the last one. Once a minute the whole screen is written again
(identical pixels: no flicker), which repairs anything a console drew over the captions;
while nothing is drawn in between, the rewrites back off (2, 4 … 16 minutes: a full frame
costs a Pi Zero some 25 ms), and none is done while the screen is blanked (black and
powered down) but one at once when it wakes.

Between events the output sleeps until the next thing that changes the screen by itself
(``wake_in``): a held-back frame, the end of a loss notice, "Listening…" coming back, the
dim and blank times, the minute's rewrite. A blanked screen with no captions sleeps until
the next event.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.outputs.base import TEXT, OutputEvent, OutputUnavailable
from edgecap.outputs.fonts import FontChain
from edgecap.outputs.framebuffer import (
    Framebuffer,
    FramebufferInfo,
    pack,
    pack_color,
    read_geometry,
)
from edgecap.outputs.rollup import CaptionLines, Row, choose_translations, layout, wrap
from edgecap.runtime.status import LINK_PROBLEMS, StatusSnapshot

if TYPE_CHECKING:
    from edgecap.config.schema import HdmiConfig

RGB = tuple[int, int, int]

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
        max_fps: int = 15,
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
        self._qr: np.ndarray | None = None  # the join QR code, packed, with its place
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
        self._shown: np.ndarray | None = None  # the packed band as on the screen
        self._strips: dict[tuple[str, str, RGB], np.ndarray] = {}
        self._fonts_key: tuple[tuple[str, ...], int] | None = None
        # counters, for tests and bench/outputs.py
        self.renders = 0
        self.render_ms: deque[float] = deque(maxlen=1000)  # compose + pack + write

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
        (the one full-frame write: whatever was there, a console, goes)."""
        info = read_geometry(self.device, self.sysfs, **self.geometry)
        fb = Framebuffer(info)
        fb.open()
        try:
            self._setup(info)
            fb.set_power(True)
            row = np.tile(pack_color(self.background, info.bpp), info.width)
            fb.write_rows(0, np.broadcast_to(row, (info.height, info.row_bytes)))
        except BaseException:
            fb.close()
            raise
        self.fb, self.info = fb, info
        self._shown = self._bg_band.copy()
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
        self._shown = None
        self._strips.clear()

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
        """Write the whole screen again as it should be. The diff only knows what this
        output wrote: kernel messages on a console bound to the framebuffer, or another
        program, may have drawn over it since. Identical pixels written again do not
        flicker; this costs one full-frame write a minute."""
        assert self.fb is not None and self.info is not None and self._shown is not None
        if self.band_top:
            row = np.tile(pack_color(self.background, self.info.bpp), self.info.width)
            self.fb.write_rows(0, np.broadcast_to(row, (self.band_top, self.info.row_bytes)))
        self.fb.write_rows(self.band_top, self._shown)

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
        bg_row = np.tile(pack_color(self.background, info.bpp), info.width)
        self._bg_band = np.broadcast_to(bg_row, (self.band_height, info.row_bytes)).copy()
        self._strips.clear()
        self._row_bytes = info.row_bytes

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
        self._qr = pack(np.asarray(img), info.bpp)
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

    # --- drawing ----------------------------------------------------------------------
    def _render(self, phase: str, status: str) -> None:
        assert self.fb is not None and self.info is not None and self._shown is not None
        t0 = time.perf_counter()
        band = self._bg_band.copy()
        used: dict[tuple[str, str, RGB], np.ndarray] = {}
        if phase != "blank":
            rows = self._rows()
            first = self.rows - len(rows) if self.layout_mode == "rollup" else 0
            for i, row in enumerate(rows):
                fill = self._color(self._row_color(row), phase)
                y = self.slot_y(first + i)
                band[y : y + self.line_height] = self._strip("caption", row.text, fill, used)
            if status:
                fill = self._color(self.colors["status"], phase)
                y = self.status_y
                band[y : y + self.line_height] = self._strip("status", status, fill, used)
            if self._qr is not None:
                top, left = self._qr_at
                h, w = self._qr.shape
                band[top : top + h, left : left + w] = self._qr
        self._strips = used  # keep only what is on screen now
        if phase != "blank" and self._drawn and self._drawn[0] == "blank":
            self.fb.set_power(True)  # wake before drawing
        self._write_changed(band)
        if phase == "blank" and (self._drawn is None or self._drawn[0] != "blank"):
            self.fb.set_power(False)
        self._drawn = (phase, status)
        self._dirty = False
        self.renders += 1
        self.render_ms.append((time.perf_counter() - t0) * 1000)

    def _rows(self) -> list[Row]:
        """The caption rows to show, oldest first. Only the newest lines are laid out: a
        line with something to show gives at least one row, so no more of them than rows
        can be visible."""
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
        return layout(
            recent,
            self.rows,
            self.text_width,
            self.show,
            self.fonts.width,
            self.offline_mark,
            self.languages,
            limit,
        )

    def _row_color(self, row: Row) -> RGB:
        if row.style == "translation":
            return self.translation_colors[min(row.order, len(self.translation_colors) - 1)]
        return self.colors[row.style]

    def _strip(
        self, kind: str, text: str, fill: RGB, used: dict[tuple[str, str, RGB], np.ndarray]
    ) -> np.ndarray:
        """One slot's pixels, packed: from the cache when it was on screen last time."""
        key = (kind, text, fill)
        strip = used.get(key)
        if strip is None:
            strip = self._strips.get(key)
        if strip is None:
            strip = self._draw_strip(kind, text, fill)
        used[key] = strip
        return strip

    def _draw_strip(self, kind: str, text: str, fill: RGB) -> np.ndarray:
        assert self.info is not None and self.fonts is not None and self.small is not None
        img = Image.new("RGB", (self.info.width, self.line_height), self.background)
        draw = ImageDraw.Draw(img)
        if kind == "status":
            chain, baseline = self.small, self.status_baseline
            rows = wrap(text, self.text_width, chain.width) or [""]
            text = rows[0] if len(rows) == 1 else self._ellipsize(chain, rows[0])
        else:
            chain, baseline = self.fonts, self.baseline
        chain.draw(draw, self.margin, baseline, text, fill, align_width=self.text_width)
        return pack(np.asarray(img), self.info.bpp)

    def _ellipsize(self, chain: FontChain, text: str) -> str:
        while text and chain.width(text + "…") > self.text_width:
            text = text[:-1]
        return text.rstrip() + "…"

    def _color(self, rgb: RGB, phase: str) -> RGB:
        if phase != "dim":
            return rgb
        bg = self.background
        return tuple(round(b + (c - b) * DIM) for c, b in zip(rgb, bg, strict=True))  # type: ignore[return-value]

    def _write_changed(self, band: np.ndarray) -> None:
        """Write the rows of ``band`` that differ from the screen, one pwrite per run of
        adjacent rows."""
        assert self.fb is not None and self._shown is not None
        old, new = self._shown, band
        if self._row_bytes % 8 == 0:  # compare 8 bytes at a time
            old, new = old.view(np.uint64), new.view(np.uint64)
        changed = np.flatnonzero((old != new).any(axis=1))
        if changed.size:
            breaks = np.flatnonzero(np.diff(changed) > 1)
            starts = np.concatenate(([changed[0]], changed[breaks + 1]))
            ends = np.concatenate((changed[breaks], [changed[-1]]))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                try:
                    self.fb.write_rows(self.band_top + a, band[a : b + 1])
                except OutputUnavailable:
                    self._shown = None  # unknown now; open() starts from a clear screen
                    raise
                self._shown[a : b + 1] = band[a : b + 1]
